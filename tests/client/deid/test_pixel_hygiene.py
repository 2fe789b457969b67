"""Pixel hygiene: the size ceiling holds before any decoder runs (a decompression bomb in a process with
300 MB of address space is rejected, not a MemoryError), and bits above High Bit - an overlay hidden in
the pixel data - are gone while the stored values are not touched."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, generate_uid

from client.deid import Deidentifier, DeidOptions, DeidRejected
from client.deid.command import SECRET_ENV
from client.deid.encode import encode_dataset
from client.deid.pixel_hygiene import PixelLimits, pixel_size_reason

ADDRESS_SPACE = 300 << 20


def _rle_bomb(rows: int, cols: int, frames: int = 1) -> Dataset:
    """An RLE Lossless file whose tiny segments declare rows x cols x frames 16-bit pixels."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Bomb^Test"
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    header = (2).to_bytes(4, "little") + (64).to_bytes(4, "little") + (66).to_bytes(4, "little") + bytes(52)
    frame = header + b"\x81\x00\x81\x00"  # two segments, each one run of 128 zero bytes
    ds.PixelData = encapsulate([frame] * frames)
    ds["PixelData"].VR = "OB"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = RLELossless
    ds.file_meta = meta
    return ds


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _deidentify_limited(
    source: Path, out: Path, secret: bytes, option: str
) -> subprocess.CompletedProcess[str]:
    """``python -m client.deid SOURCE OUT --option OPTION --json`` with 300 MB of address space."""
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        SECRET_ENV: secret.hex(),
        "OPENBLAS_NUM_THREADS": "1",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "client.deid",
            str(source),
            str(out),
            "--workers",
            "1",
            "--json",
            "--option",
            option,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[3],
        preexec_fn=_limit_address_space,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("rows", "cols", "option", "reason"),
    [
        (40000, 40000, "burned-in=reject", "too large:"),  # 3.2 GB declared by an 858-byte file
        (40000, 40000, "mask-region=0,0,10,10", "too large:"),  # a policy that decodes
        (10000, 10000, "mask-region=0,0,10,10", "decompression bomb:"),  # 200 MB, under the ceiling
    ],
)
def test_a_decompression_bomb_is_rejected_before_decoding_in_300_mb(
    tmp_path: Path, secret: bytes, rows: int, cols: int, option: str, reason: str
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    bomb = _rle_bomb(rows, cols)
    bomb.save_as(source / "bomb.dcm", enforce_file_format=True)
    assert (source / "bomb.dcm").stat().st_size < 1024
    result = _deidentify_limited(source, tmp_path / "out", secret, option)
    assert "MemoryError" not in result.stderr
    assert result.returncode == 0, result.stderr[-2000:]
    [rejection] = json.loads(result.stdout)["rejections"]
    assert rejection["reason"].startswith(reason), rejection


def test_the_honest_path_under_the_same_limit_still_writes(tmp_path: Path, secret: bytes) -> None:
    source = tmp_path / "in"
    source.mkdir()
    honest = _rle_bomb(256, 256)
    honest.compress(RLELossless, np.zeros((256, 256), dtype=np.uint16), generate_instance_uid=False)
    honest.save_as(source / "small.dcm", enforce_file_format=True)  # blank: compresses 128 KB to 2 KB
    result = _deidentify_limited(source, tmp_path / "out", secret, "mask-region=0,0,8,8")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["files_written"] == 1


def test_ceilings_are_configurable_and_validated() -> None:
    ds = _rle_bomb(1000, 1000)
    assert pixel_size_reason(ds, PixelLimits()) is None
    assert "too large" in str(pixel_size_reason(ds, PixelLimits(max_bytes=1_000_000)))
    assert DeidOptions.from_names(["max-pixel-bytes=5000000"]).pixel_limits.max_bytes == 5_000_000
    with pytest.raises(ValueError, match="number"):
        DeidOptions.from_names(["max-expansion=lots"])
    native = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    native.Rows = 65535  # a native file whose header claims more than the ceiling
    assert "too large" in str(pixel_size_reason(native, PixelLimits(max_bytes=1 << 20)))
    with pytest.raises(DeidRejected, match="too large"):
        Deidentifier(bytes(32), DeidOptions(max_pixel_bytes=1 << 20)).deidentify(native)


def test_an_overlay_in_the_high_bits_is_removed_and_stored_values_kept(secret: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    values = np.clip(ds.pixel_array.astype(np.int32), 0, 4095).astype(np.uint16)
    overlay = np.zeros_like(values, dtype=bool)
    overlay[20:30, 5:60] = True  # where a 1990s console wrote the patient's name
    stored = values | (overlay.astype(np.uint16) << 15) | np.uint16(0x3000)  # overlay plane + junk bits
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.add_new(0x60000010, "US", int(ds.Rows))
    ds.add_new(0x60000011, "US", int(ds.Columns))
    ds.add_new(0x60000100, "US", 16)  # Overlay Bits Allocated: inside the pixel data
    ds.add_new(0x60000102, "US", 15)  # Overlay Bit Position
    ds.add_new(0x60000022, "LO", "Smithwick^Johnathan")  # Overlay Description
    outcome = Deidentifier(secret).deidentify(ds)
    out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(encode_dataset(ds)))
    written = np.frombuffer(out.PixelData, dtype="<u2").reshape(values.shape)
    assert not (written & 0xF000).any()  # nothing above High Bit
    assert np.array_equal(written, values)  # the stored values, bit for bit
    assert np.array_equal(out.pixel_array, values)
    assert not any(0x6000 <= elem.tag.group <= 0x60FF for elem in out)
    assert outcome.actions["PixelData"] == {"high-bits-zeroed": 1}


def test_signed_data_keeps_its_values_when_the_sign_extension_is_cleared(secret: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    values = np.clip(ds.pixel_array.astype(np.int32) - 1024, -2048, 2047).astype(np.int16)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
    ds.PixelData = values.astype("<i2").tobytes()  # negatives sign-extended into bits 12-15
    Deidentifier(secret).deidentify(ds)
    out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(encode_dataset(ds)))
    assert not (np.frombuffer(out.PixelData, dtype="<u2") & 0xF000).any()
    assert np.array_equal(out.pixel_array, values)


def test_big_endian_pixel_data_stays_big_endian(secret: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("emri_small_big_endian.dcm"))  # 12 of 16 bits stored
    values = ds.pixel_array.copy()
    ds.PixelData = (values.astype(">u2") | np.uint16(0x8000)).astype(">u2").tobytes()  # junk in bit 15
    outcome = Deidentifier(secret).deidentify(ds)
    assert outcome.actions["PixelData"] == {"high-bits-zeroed": 1}
    out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(encode_dataset(ds)))
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert np.array_equal(out.pixel_array, values)


def test_clean_pixel_data_is_not_touched(secret: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))  # 16 bits stored of 16: nothing unused
    before = ds.PixelData
    outcome = Deidentifier(secret).deidentify(ds)
    assert ds.PixelData == before and "PixelData" not in outcome.actions
