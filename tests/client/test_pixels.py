"""Tests for client/pixels.py: pure steps on hand-made arrays, then real scanner files.

Real files come from pydicom's test data and pydicom-data (offline); ``pixels_reference.py`` holds the
table of files, of pairs that store one image twice, and of files that must be rejected.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    convert_color_space,
    pixel_array,
)
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import ExplicitVRLittleEndian

from client.pixels import (
    MULTIFRAME_RULES,
    VOI_LUT_FUNCTIONS,
    WINDOW_PRESETS,
    PixelSettings,
    apply_clahe,
    apply_file_voi,
    apply_window,
    denoise,
    invert_monochrome1,
    normalize_percentiles,
    prepare_frames,
    resize_area,
    to_grayscale,
    to_modality_units,
)
from common.errors import ConfigError, InputError


def _load_reference() -> ModuleType:
    # pytest runs with --import-mode=importlib and tests/ has no __init__.py: load the table by path.
    name = "fedscan_tests_pixels_reference"
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("pixels_reference.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's notes on odd headers

DEFAULT = PixelSettings()


@functools.cache
def _read(name: str) -> Dataset:
    """Read a test file once; pixels.py never modifies a dataset, so tests may share it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name), force=True)


def _fresh(name: str) -> Dataset:
    return copy.deepcopy(_read(name))


def _assert_model_input(outputs: list[np.ndarray], count: int, size: int = 64) -> None:
    assert len(outputs) == count
    for image in outputs:
        assert image.dtype == np.float32
        assert image.shape == (size, size)
        assert image.flags.c_contiguous
        assert np.isfinite(image).all()
        assert image.min() >= 0.0 and image.max() <= 1.0


# ---- settings ----------------------------------------------------------------------------------------


def test_settings_defaults_and_toml_list() -> None:
    assert PixelSettings() == PixelSettings(64, "soft-tissue", (0.5, 99.5), "middle", False, False)
    settings = PixelSettings(percentiles=[1, 99])  # type: ignore[arg-type]  # TOML gives lists
    assert settings.percentiles == (1.0, 99.0)
    assert isinstance(settings.percentiles, tuple)
    assert PixelSettings(ct_window="dicom").ct_window == "dicom"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 0),
        ("size", 7),
        ("size", 64.0),
        ("size", True),
        ("ct_window", "abdomen-ish"),
        ("percentiles", (99.5, 0.5)),
        ("percentiles", (-1, 50)),
        ("percentiles", (1, 2, 3)),
        ("percentiles", "0.5,99.5"),
        ("multiframe", "first"),
        ("denoise", "yes"),
        ("clahe", 1),
    ],
)
def test_settings_reject_invalid_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^PixelSettings\.{field} must .*\.$"):
        PixelSettings(**{field: value})  # type: ignore[arg-type]


def test_tables_are_data() -> None:
    assert WINDOW_PRESETS["soft-tissue"] == (40.0, 400.0)
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0)
    assert WINDOW_PRESETS["brain"] == (40.0, 80.0)
    assert WINDOW_PRESETS["bone"] == (400.0, 1800.0)
    assert "mediastinum" in WINDOW_PRESETS
    assert all(width >= 1 for _, width in WINDOW_PRESETS.values())
    assert set(MULTIFRAME_RULES) == {"middle", "split", "max"}
    with pytest.raises(TypeError):
        WINDOW_PRESETS["mine"] = (0.0, 1.0)  # type: ignore[index]


# ---- pure steps on hand-made arrays ------------------------------------------------------------------


def test_linear_window_known_values() -> None:
    # c = 40, w = 400: 0 at or below c - 0.5 - (w - 1) / 2 = -160, 1 above 239.5, 0.5 at c - 0.5
    hu = np.array([-1000, -160, -159, 39.5, 60, 239, 239.5, 240, 3000], dtype=np.float32)
    out = apply_window(hu, 40, 400)
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[1] == 0.0 and out[6] == 1.0 and out[3] == 0.5
    assert out[0] == 0.0 and out[-1] == 1.0


def test_window_width_one_is_a_threshold_and_bad_widths_raise() -> None:
    out = apply_window(np.array([9.0, 9.5, 9.6, 11.0]), 10, 1)
    np.testing.assert_array_equal(out, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="Window Width"):
        apply_window(np.zeros(3), 0, 0.5)
    with pytest.raises(ValueError, match="Window Width"):
        apply_window(np.zeros(3), 0, 0, "SIGMOID")
    with pytest.raises(ValueError, match="VOI LUT Function"):
        apply_window(np.zeros(3), 0, 10, "GAMMA")


def test_linear_exact_and_sigmoid_known_values() -> None:
    x = np.array([-100.0, -50.0, 0.0, 50.0, 100.0])
    np.testing.assert_allclose(apply_window(x, 0, 100, "LINEAR_EXACT"), [0, 0, 0.5, 1, 1], atol=1e-6)
    sig = apply_window(x, 0, 100, "sigmoid")  # defined terms are matched case-insensitively
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-4 * x / 100)), atol=1e-6)
    assert sig[2] == pytest.approx(0.5)


@pytest.mark.parametrize("function", sorted(VOI_LUT_FUNCTIONS))
def test_window_matches_pydicom_windowing(function: str) -> None:
    """Our [0, 1] output times 65535 is pydicom's apply_windowing on unsigned 16-bit stored values."""
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 16, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 30000, 20000, function
    stored = np.linspace(0, 65535, 2001).astype(np.uint16)
    expected = apply_windowing(stored, ds) / 65535
    np.testing.assert_allclose(apply_window(stored, 30000, 20000, function), expected, atol=2e-6)


# No subnormal inputs: torch (imported by other tests in the same process) sets flush-to-zero, under
# which hypothesis cannot generate them; pixel values are never subnormal anyway.
@hypothesis_settings(max_examples=60, deadline=None)
@given(
    values=arrays(
        np.float32, st.integers(1, 64), elements=st.floats(-4000, 4000, width=32, allow_subnormal=False)
    ),
    center=st.floats(-1000, 1000, allow_subnormal=False),
    width=st.floats(1, 4000, allow_subnormal=False),
    function=st.sampled_from(sorted(VOI_LUT_FUNCTIONS)),
)
def test_window_is_monotonic_into_unit_range(
    values: np.ndarray, center: float, width: float, function: str
) -> None:
    ordered = np.sort(values)
    out = apply_window(ordered, center, width, function)
    assert out.dtype == np.float32 and out.shape == ordered.shape
    assert (out >= 0).all() and (out <= 1).all()
    assert (np.diff(out) >= 0).all()


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    image=arrays(
        np.float32,
        st.tuples(st.integers(1, 80), st.integers(1, 80)),
        elements=st.floats(0, 1, width=32, allow_subnormal=False),
    ),
    size=st.integers(8, 96),
)
def test_resize_stays_within_the_input_range(image: np.ndarray, size: int) -> None:
    out = resize_area(image, size, pad_value=float(image.min()))
    assert out.shape == (size, size) and out.dtype == np.float32 and out.flags.c_contiguous
    assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6


def test_percentiles_clip_and_scale() -> None:
    arr = np.arange(1001, dtype=np.int32)  # percentile p is the value 10 * p
    out = normalize_percentiles(arr, 1, 99)
    assert out.dtype == np.float32
    assert out[:11].max() == 0.0 and out[990:].min() == 1.0
    assert out[500] == pytest.approx(0.5)
    assert out[10 + 49] == pytest.approx(49 / 980, abs=1e-6)


def test_percentiles_degenerate_images() -> None:
    np.testing.assert_array_equal(normalize_percentiles(np.full((8, 8), 7.0), 0.5, 99.5), 0)
    sparse = np.zeros((100, 100), dtype=np.uint8)
    sparse[:3, :3] = 1  # 0.09%: both percentiles are 0, so min and max are used
    np.testing.assert_array_equal(normalize_percentiles(sparse, 0.5, 99.5), sparse)
    with pytest.raises(ValueError):
        normalize_percentiles(sparse, 50, 50)


def test_invert_monochrome1() -> None:
    out = invert_monochrome1(np.array([0.0, 0.25, 1.0], dtype=np.float64))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.0, 0.75, 0.0])


PURE_COLOURS = {  # RGB -> BT.601 luma
    (255, 0, 0): 76.245,
    (0, 255, 0): 149.685,
    (0, 0, 255): 29.07,
    (255, 255, 255): 255.0,
    (128, 128, 128): 128.0,
}


@pytest.mark.parametrize(("rgb", "luma"), PURE_COLOURS.items())
def test_grayscale_of_pure_colours(rgb: tuple[int, int, int], luma: float) -> None:
    image = np.empty((4, 6, 3), dtype=np.uint8)
    image[...] = rgb
    gray = to_grayscale(image, "RGB")
    assert gray.shape == (4, 6) and gray.dtype == np.float32
    np.testing.assert_allclose(gray, luma, atol=1e-3)
    ybr = convert_color_space(image, "RGB", "YBR_FULL")
    for photometric in ("YBR_FULL", "YBR_FULL_422", "YBR_ICT"):
        np.testing.assert_allclose(to_grayscale(ybr, photometric), luma, atol=0.5)  # Y rounded to 8 bits


def test_grayscale_rejects_what_it_cannot_convert() -> None:
    with pytest.raises(ValueError, match="Photometric Interpretation 'HSV'"):
        to_grayscale(np.zeros((2, 2, 3)), "HSV")
    with pytest.raises(ValueError, match="shape"):
        to_grayscale(np.zeros((2, 2)), "RGB")
    with pytest.raises(ValueError, match="palette"):
        to_grayscale(np.zeros((2, 2), dtype=np.uint8), "PALETTE COLOR")
    mono = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(to_grayscale(mono, "MONOCHROME2"), mono)


@pytest.mark.parametrize(
    ("shape", "size"), [((100, 100), 64), ((512, 512), 224), ((16, 16), 64), ((3, 3), 8)]
)
def test_resize_of_a_constant_image_stays_constant(shape: tuple[int, int], size: int) -> None:
    out = resize_area(np.full(shape, 0.37, dtype=np.float32), size)
    assert out.shape == (size, size) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_resize_averages_areas() -> None:
    checker = (np.indices((128, 128)).sum(axis=0) % 2).astype(np.float32)
    np.testing.assert_allclose(resize_area(checker, 64), 0.5, atol=1e-6)  # nearest would give 0 or 1


def test_resize_keeps_aspect_ratio_and_centres() -> None:
    out = resize_area(np.ones((100, 50)), 64)
    columns = out.max(axis=0)
    assert columns[:16].max() == 0 and columns[48:].max() == 0  # 32 content columns, 16 padding each side
    np.testing.assert_allclose(out[:, 16:48], 1.0, atol=1e-6)
    wide = resize_area(np.ones((10, 1000)), 64, pad_value=0.25)  # 10 * 64 / 1000 rounds to one row
    assert wide.shape == (64, 64)
    np.testing.assert_allclose(wide[31], 1.0, atol=1e-6)  # row (64 - 1) // 2
    assert (np.delete(wide, 31, axis=0) == 0.25).all()


def test_denoise_keeps_shape_and_range_and_removes_noise() -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + rng.normal(0, 0.02, size=(96, 96)), 0, 1).astype(np.float32)  # 5 gray levels
    out = denoise(noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out.std() < noisy.std() / 2


def test_clahe_expands_local_contrast_within_range() -> None:
    rng = np.random.default_rng(1)
    flat = (0.45 + 0.1 * rng.random((128, 128))).astype(np.float32)
    out = apply_clahe(flat)
    assert out.shape == flat.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out.std() > 2 * flat.std()
    constant = apply_clahe(np.full((64, 64), 0.3))
    assert np.ptp(constant) == 0  # no structure is invented


# ---- DICOM steps on real files ---------------------------------------------------------------------------


def test_ct_hounsfield_units_and_soft_tissue_window() -> None:
    ds = _read("CT_small.dcm")
    raw = pixel_array(ds)
    hu = to_modality_units(raw, ds)
    assert hu.dtype == np.float32
    np.testing.assert_array_equal(hu, raw.astype(np.float32) * 1 - 1024)  # slope 1, intercept -1024
    assert raw[50, 50] == 1084 and hu[50, 50] == 60.0
    (native,) = prepare_frames(ds, PixelSettings(size=128))  # native size: no resampling
    np.testing.assert_allclose(native, apply_window(hu, 40, 400), atol=1e-6)
    assert native[50, 50] == pytest.approx((60 - 39.5) / 399 + 0.5, abs=1e-6)  # 0.5514
    lung = prepare_frames(ds, PixelSettings(size=128, ct_window="lung"))[0]
    assert lung[50, 50] == pytest.approx((60 + 600.5) / 1499 + 0.5, abs=1e-6)


def test_ct_file_window_and_absence_of_one() -> None:
    assert apply_file_voi(np.zeros((2, 2)), _read("CT_small.dcm")) is None
    ds = _read("693_UNCR.dcm")
    hu = to_modality_units(pixel_array(ds), ds)
    np.testing.assert_allclose(apply_file_voi(hu, ds), apply_window(hu, 40, 100), atol=1e-6)  # type: ignore[arg-type]
    (native,) = prepare_frames(ds, PixelSettings(size=512, ct_window="dicom"))
    np.testing.assert_allclose(native, apply_window(hu, 40, 100), atol=1e-6)
    # CT_small has no VOI: "dicom" falls back to percentile normalisation
    small = _read("CT_small.dcm")
    (fallback,) = prepare_frames(small, PixelSettings(size=128, ct_window="dicom"))
    expected = normalize_percentiles(to_modality_units(pixel_array(small), small), 0.5, 99.5)
    np.testing.assert_allclose(fallback, expected, atol=1e-6)


def test_modality_lut_sequence_and_voi_lut_sequence() -> None:
    mlut = _read("mlut_18.dcm")
    raw = pixel_array(mlut)
    np.testing.assert_array_equal(to_modality_units(raw, mlut), apply_modality_lut(raw, mlut))
    vlut = _read("vlut_04.dcm")
    raw = pixel_array(vlut)
    out = apply_file_voi(raw.astype(np.float32), vlut)
    assert out is not None and out.dtype == np.float32
    np.testing.assert_allclose(out, apply_voi(raw, vlut) / 65535, atol=1e-6)  # LUT Descriptor [256, 0, 16]


def test_enhanced_ct_reads_functional_groups() -> None:
    ds = _read("eCT_Supplemental.dcm")
    raw = pixel_array(ds, index=1)
    assert "RescaleIntercept" not in ds  # only in (0028,9145) of the Shared Functional Groups
    np.testing.assert_array_equal(apply_modality_lut(raw, ds), raw)  # pydicom alone leaves stored values
    hu = to_modality_units(raw, ds, frame=1)
    np.testing.assert_array_equal(hu, raw.astype(np.float32) - 1024)
    np.testing.assert_allclose(apply_file_voi(hu, ds, frame=1), apply_window(hu, 49, 102), atol=1e-6)  # type: ignore[arg-type]
    (middle,) = prepare_frames(ds, PixelSettings(size=512, ct_window="dicom"))  # frame 2 // 2 = 1
    np.testing.assert_allclose(middle, apply_window(hu, 49, 102), atol=1e-6)


def test_monochrome1_is_inverted() -> None:
    ds = _fresh("RG1_UNCR.dcm")
    (mono1,) = prepare_frames(ds, DEFAULT)
    ds.PhotometricInterpretation = "MONOCHROME2"
    (mono2,) = prepare_frames(ds, DEFAULT)
    # 1955 x 1841 -> 64 x 60 content columns, 2 padding columns each side, black in both
    np.testing.assert_allclose(mono1[:, 2:62] + mono2[:, 2:62], 1.0, atol=1e-6)
    assert mono1[:, :2].max() == 0 and mono1[:, 62:].max() == 0
    assert mono1[32, 32] > 0.5  # the centre of a chest radiograph is dense: bright after inversion


def test_mr_percentiles_at_native_size() -> None:
    ds = _read("MR_small.dcm")
    (out,) = prepare_frames(ds, DEFAULT)  # 64x64 file, 64x64 output
    np.testing.assert_allclose(out, normalize_percentiles(pixel_array(ds), 0.5, 99.5), atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0


def test_known_luma_of_a_real_rgb_file_and_its_ybr_twin() -> None:
    rgb = to_grayscale(pixel_array(_read("SC_rgb.dcm")), "RGB")
    ybr = to_grayscale(pixel_array(_read("SC_ybr_full_uncompressed.dcm"), raw=True), "YBR_FULL")
    for row, luma in [(5, 76.245), (25, 149.685), (45, 29.07), (75, 64.0), (95, 255.0)]:
        assert rgb[row, 50] == pytest.approx(luma, abs=1e-3)
        assert ybr[row, 50] == pytest.approx(luma, abs=1.0)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "US1_J2KR.dcm",
        "US1_J2KI.dcm",
        "examples_ybr_color.dcm",
    ],
)
def test_ybr_is_converted_exactly_once(name: str) -> None:
    """Reference: pydicom's default decode (YCbCr -> RGB) then BT.601 luma; ours takes Y directly."""
    ds = _read(name)
    frames = int(ds.get("NumberOfFrames") or 1)
    rgb = pixel_array(ds, index=frames // 2)
    expected = resize_area(normalize_percentiles(to_grayscale(rgb, "RGB"), 0.5, 99.5), 64)
    (out,) = prepare_frames(ds, DEFAULT)
    assert np.abs(out - expected).mean() < 0.01
    assert np.abs(out - expected).max() < 0.06  # out-of-gamut colours clip in RGB, not in Y


def test_palette_colour_uses_the_lut() -> None:
    ds = _read("OBXXXX1A.dcm")
    indices = pixel_array(ds)
    expected = apply_color_lut(indices, ds).astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    np.testing.assert_allclose(to_grayscale(indices, "PALETTE COLOR", ds), expected, rtol=1e-6)


def test_aspect_ratio_of_a_real_narrow_image() -> None:
    (out,) = prepare_frames(_read("JPEGLSNearLossless_08.dcm"), DEFAULT)  # 45 x 10 -> 64 x 14, centred
    columns = out.max(axis=0)
    assert columns[:25].max() == 0 and columns[39:].max() == 0
    assert columns[25:39].min() > 0


# ---- multi-frame ---------------------------------------------------------------------------------------


def test_multiframe_rules() -> None:
    ds = _read("emri_small.dcm")
    split = prepare_frames(ds, PixelSettings(multiframe="split"))
    _assert_model_input(split, 10)
    (middle,) = prepare_frames(ds, DEFAULT)
    np.testing.assert_array_equal(middle, split[5])  # index Number of Frames // 2
    (projection,) = prepare_frames(ds, PixelSettings(multiframe="max"))
    mip = pixel_array(ds).max(axis=0)
    np.testing.assert_allclose(projection, normalize_percentiles(mip, 0.5, 99.5), atol=1e-6)


def test_max_projection_of_monochrome1_takes_the_brightest_displayed_value() -> None:
    ds = _fresh("emri_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    (projection,) = prepare_frames(ds, PixelSettings(multiframe="max"))
    darkest_stored = pixel_array(ds).min(axis=0)  # MONOCHROME1: low stored value = bright
    expected = 1 - normalize_percentiles(darkest_stored, 0.5, 99.5)
    np.testing.assert_allclose(projection, expected, atol=1e-6)


# ---- errors ------------------------------------------------------------------------------------------------


def test_no_pixel_data_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"^cannot decode pixels: the dataset has no \(7FE0,0010\) Pixel"):
        prepare_frames(_read("rtplan.dcm"), DEFAULT)


def test_unsupported_transfer_syntax_is_an_input_error() -> None:
    ds = _fresh("SC_rgb.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    with pytest.raises(InputError, match=r"syntax 1\.2\.840\.10008\.1\.2\.4\.100 \(MPEG2 .*not supported"):
        prepare_frames(ds, DEFAULT)


def test_missing_decoder_plugin_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(
        InputError,
        match=r"^cannot decode pixels: transfer syntax 1\.2\.840\.10008\.1\.2\.4\.90 "
        r"\(JPEG 2000 Image Compression \(Lossless Only\)\) needs a decoder that is not installed",
    ):
        prepare_frames(_read("MR_small_jp2klossless.dcm"), DEFAULT)


def test_unsupported_photometric_is_an_input_error() -> None:
    ds = _fresh("SC_rgb.dcm")
    ds.PhotometricInterpretation = "HSV"
    with pytest.raises(InputError, match=r"Photometric Interpretation 'HSV' is not supported"):
        prepare_frames(ds, DEFAULT)


def test_float_pixel_data_with_non_finite_values() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.PhotometricInterpretation = "MR", "MONOCHROME2"
    ds.SamplesPerPixel, ds.Rows, ds.Columns, ds.BitsAllocated = 1, 4, 4, 32
    values = np.arange(16, dtype=np.float32).reshape(4, 4)
    values[0, 0], values[1, 1] = np.nan, np.inf
    ds.FloatPixelData = values.tobytes()
    _assert_model_input(prepare_frames(ds, PixelSettings(size=8)), 1, size=8)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("eCT_Supplemental.dcm", PixelSettings(ct_window="dicom", multiframe="split")),
        ("vlut_04.dcm", DEFAULT),
        ("OBXXXX1A.dcm", PixelSettings(clahe=True)),
        ("OT-PAL-8-face.dcm", DEFAULT),
    ],
)
def test_dataset_is_not_modified(name: str, settings: PixelSettings) -> None:
    ds = _fresh(name)
    before = copy.deepcopy(ds)
    prepare_frames(ds, settings)
    assert ds == before
    assert ds.file_meta == before.file_meta


# ---- the reference table ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ref.REFERENCES, ids=lambda entry: entry.name)
def test_reference_file(entry: ref.PixelReference) -> None:
    ds = _read(entry.name)
    assert str(ds.file_meta.get("TransferSyntaxUID", "")) == entry.transfer_syntax
    assert ds.get("Modality", "") == entry.modality
    assert ds.PhotometricInterpretation == entry.photometric
    assert int(ds.get("NumberOfFrames") or 1) == entry.frames
    assert (ds.Rows, ds.Columns) == entry.shape
    assert ds.BitsAllocated == entry.bits_allocated and ds.PixelRepresentation == int(entry.signed)

    _assert_model_input(prepare_frames(ds, DEFAULT), 1)
    split = prepare_frames(ds, PixelSettings(multiframe="split", size=32))
    _assert_model_input(split, entry.frames, size=32)
    assert any(image.max() > image.min() for image in split)  # an image, not a blank
    _assert_model_input(prepare_frames(ds, PixelSettings(multiframe="max", clahe=True, size=32)), 1, 32)


@pytest.mark.parametrize("pair", ref.PAIRS, ids=lambda pair: f"{pair.first}~{pair.second}")
def test_same_image_in_two_encodings(pair: ref.PixelPair) -> None:
    settings = PixelSettings(multiframe="split")
    first = np.stack(prepare_frames(_read(pair.first), settings))
    second = np.stack(prepare_frames(_read(pair.second), settings))
    assert first.shape == second.shape
    difference = np.abs(first - second)
    assert difference.max() <= pair.max_abs
    assert difference.mean() <= pair.mean_abs


def test_denoise_on_a_real_slice() -> None:
    (plain,) = prepare_frames(_read("CT_small.dcm"), DEFAULT)
    (smooth,) = prepare_frames(_read("CT_small.dcm"), PixelSettings(denoise=True))
    _assert_model_input([smooth], 1)
    assert np.abs(plain - smooth).mean() < 0.05  # mild: the anatomy is unchanged


# ---- every file pydicom ships ----------------------------------------------------------------------------


def test_every_test_file_decodes_or_is_rejected_with_a_reason() -> None:
    decoded, no_pixels, rejected = [], [], {}
    for path in sorted(get_testdata_files()):
        if not os.path.isfile(path):  # the listing includes DICOMDIR folders
            continue
        name = os.path.basename(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:  # reading is ingest's job; none of pydicom's files fails today
                continue
            try:
                outputs = prepare_frames(ds, DEFAULT)
            except InputError as exc:  # any other exception type fails the test
                message = str(exc)
                assert message.startswith("cannot ")
                if "has no (7FE0,0010) Pixel Data" in message:
                    no_pixels.append(name)
                else:
                    rejected[name] = message
                continue
        _assert_model_input(outputs, 1)
        decoded.append(name)

    print(f"\n{len(decoded)} decoded, {len(no_pixels)} without pixel data, {len(rejected)} rejected:")
    for name, message in sorted(rejected.items()):
        print(f"  {name}: {message}")
    assert set(rejected) == set(ref.REJECTED)
    for name, phrase in ref.REJECTED.items():
        assert phrase in rejected[name], rejected[name]
    assert len(decoded) >= 150
    assert {entry.name for entry in ref.REFERENCES} <= set(decoded)
