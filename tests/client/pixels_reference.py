"""Reference table of real DICOM files for tests/client/test_pixels.py (data only, reviewed like data).

The files come from pydicom's own test data and the ``pydicom-data`` package, found by name with
``pydicom.data.get_testdata_file``. Each entry records what the file header says, so that a test fails
loudly if a file is not what this table claims; the pairs record images stored twice, in two transfer
syntaxes or photometric interpretations, whose model inputs must agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = ["PAIRS", "REFERENCES", "REJECTED", "PixelPair", "PixelReference"]


@dataclass(frozen=True)
class PixelReference:
    """One real file: what its header says and why it is in the table."""

    name: str
    transfer_syntax: str  # (0002,0010), "" when the file has no file meta information
    modality: str  # (0008,0060), "" when absent
    photometric: str  # (0028,0004) in the header
    frames: int  # (0028,0008), 1 when absent
    shape: tuple[int, int]  # (0028,0010) Rows, (0028,0011) Columns
    bits_allocated: int  # (0028,0100)
    signed: bool  # (0028,0103) Pixel Representation == 1
    why: str


# One row per file reads as a table: keep the formatter out.
# fmt: off
REFERENCES: tuple[PixelReference, ...] = (
    # ---- monochrome, one frame, every transfer syntax family ----
    PixelReference("CT_small.dcm", ExplicitVRLittleEndian, "CT", "MONOCHROME2", 1, (128, 128), 16, True,
                   "CT in HU through Rescale Intercept -1024, soft-tissue window"),
    PixelReference("MR_small.dcm", ExplicitVRLittleEndian, "MR", "MONOCHROME2", 1, (64, 64), 16, True,
                   "MR percentile normalisation at the native size"),
    PixelReference("MR_small_bigendian.dcm", ExplicitVRBigEndian, "MR", "MONOCHROME2", 1, (64, 64), 16, True,
                   "big endian signed 16-bit"),
    PixelReference("MR_small_implicit.dcm", ImplicitVRLittleEndian, "MR", "MONOCHROME2", 1, (64, 64), 16,
                   True, "implicit VR"),
    PixelReference("MR_small_RLE.dcm", RLELossless, "MR", "MONOCHROME2", 1, (64, 64), 16, True, "RLE"),
    PixelReference("MR_small_jp2klossless.dcm", JPEG2000Lossless, "MR", "MONOCHROME2", 1, (64, 64), 16, True,
                   "JPEG 2000 lossless, signed"),
    PixelReference("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless, "MR", "MONOCHROME2", 1, (64, 64), 16,
                   True, "JPEG-LS lossless, signed"),
    PixelReference("JPEG2000.dcm", JPEG2000, "NM", "MONOCHROME2", 1, (1024, 256), 16, True,
                   "JPEG 2000 lossy, 4:1 matrix padded to square"),
    PixelReference("JPEG-LL.dcm", JPEGLosslessSV1, "NM", "MONOCHROME2", 1, (1024, 256), 16, True,
                   "JPEG lossless SV1"),
    PixelReference("JPGExtended.dcm", JPEGExtended12Bit, "NM", "MONOCHROME2", 1, (1024, 256), 16, False,
                   "JPEG extended (process 2 and 4)"),
    PixelReference("JPGLosslessP14SV1_1s_1f_8b.dcm", JPEGLosslessSV1, "US", "MONOCHROME2", 1, (768, 1024), 8,
                   False, "8-bit JPEG lossless, landscape matrix"),
    PixelReference("JPEGLSNearLossless_08.dcm", JPEGLSNearLossless, "", "MONOCHROME2", 1, (45, 10), 8, False,
                   "JPEG-LS near-lossless, no Modality, a 4.5:1 matrix"),
    PixelReference("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless, "", "MONOCHROME2", 1, (50, 10), 16,
                   False, "JPEG-LS near-lossless 16-bit"),
    PixelReference("693_J2KR.dcm", JPEG2000Lossless, "CT", "MONOCHROME2", 1, (512, 512), 16, True,
                   "512x512 CT, JPEG 2000 lossless, Window Center/Width in the file"),
    PixelReference("693_J2KI.dcm", JPEG2000, "CT", "MONOCHROME2", 1, (512, 512), 16, True,
                   "512x512 CT, JPEG 2000 lossy"),
    PixelReference("MR2_J2KI.dcm", JPEG2000, "MR", "MONOCHROME2", 1, (1024, 1024), 16, False,
                   "1024x1024 MR, JPEG 2000 lossy"),
    PixelReference("RG1_UNCR.dcm", ExplicitVRLittleEndian, "CR", "MONOCHROME1", 1, (1955, 1841), 16, False,
                   "MONOCHROME1 radiograph, inverted"),
    PixelReference("RG1_J2KR.dcm", JPEG2000Lossless, "CR", "MONOCHROME1", 1, (1955, 1841), 16, False,
                   "MONOCHROME1 radiograph, JPEG 2000 lossless"),
    PixelReference("image_dfl.dcm", DeflatedExplicitVRLittleEndian, "OT", "MONOCHROME2", 1, (512, 512), 8,
                   False, "deflated transfer syntax"),
    PixelReference("mlut_18.dcm", ExplicitVRLittleEndian, "OT", "MONOCHROME2", 1, (512, 512), 16, True,
                   "Modality LUT Sequence instead of rescale"),
    PixelReference("vlut_04.dcm", ExplicitVRLittleEndian, "OT", "MONOCHROME2", 1, (512, 512), 8, False,
                   "VOI LUT Sequence"),
    # ---- colour ----
    PixelReference("US1_J2KR.dcm", JPEG2000Lossless, "US", "YBR_RCT", 1, (480, 640), 8, False,
                   "ultrasound, reversible colour transform undone by the J2K decoder"),
    PixelReference("US1_J2KI.dcm", JPEG2000, "US", "YBR_ICT", 1, (480, 640), 8, False,
                   "ultrasound, irreversible colour transform"),
    PixelReference("SC_rgb.dcm", ExplicitVRLittleEndian, "OT", "RGB", 1, (100, 100), 8, False,
                   "bands of pure colours with known luma"),
    PixelReference("SC_rgb_expb_16bit.dcm", ExplicitVRBigEndian, "OT", "RGB", 1, (100, 100), 16, False,
                   "16-bit big endian RGB"),
    PixelReference("SC_rgb_32bit_2frame.dcm", ExplicitVRLittleEndian, "OT", "RGB", 2, (100, 100), 32, False,
                   "32-bit RGB, two frames"),
    PixelReference("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit, "OT", "YBR_FULL", 1, (100, 100), 8, False,
                   "JPEG baseline YBR_FULL"),
    PixelReference("SC_rgb_dcmtk_+eb+cy+np.dcm", JPEGBaseline8Bit, "OT", "YBR_FULL_422", 1, (100, 100), 8,
                   False, "JPEG baseline YBR_FULL_422"),
    PixelReference("SC_ybr_full_422_uncompressed.dcm", ExplicitVRLittleEndian, "OT", "YBR_FULL_422", 1,
                   (100, 100), 8, False, "native YBR_FULL_422 (subsampled chroma)"),
    PixelReference("SC_rgb_small_odd_jpeg.dcm", JPEGBaseline8Bit, "OT", "YBR_FULL", 1, (3, 3), 8, False,
                   "3x3 image, upscaled"),
    PixelReference("ExplVR_BigEnd.dcm", ExplicitVRBigEndian, "US", "RGB", 1, (60, 80), 8, False,
                   "big endian RGB ultrasound"),
    PixelReference("OBXXXX1A.dcm", ExplicitVRLittleEndian, "US", "PALETTE COLOR", 1, (600, 800), 8, False,
                   "8-bit palette"),
    PixelReference("gdcm-US-ALOKA-16_big.dcm", ExplicitVRBigEndian, "US", "PALETTE COLOR", 1, (480, 640), 16,
                   False, "16-bit segmented palette, big endian"),
    PixelReference("OT-PAL-8-face.dcm", "", "OT", "PALETTE COLOR", 1, (480, 640), 8, False,
                   "no file meta: transfer syntax inferred from the encoding it was read in"),
    # ---- multi-frame ----
    PixelReference("emri_small.dcm", ExplicitVRLittleEndian, "MR", "MONOCHROME2", 10, (64, 64), 16, False,
                   "10-frame MR"),
    PixelReference("emri_small_jpeg_2k_lossless.dcm", JPEG2000Lossless, "MR", "MONOCHROME2", 10, (64, 64),
                   16, False, "10-frame MR, JPEG 2000 frame by frame"),
    PixelReference("examples_ybr_color.dcm", JPEGBaseline8Bit, "US", "YBR_FULL_422", 30, (240, 320), 8,
                   False, "30-frame colour cine loop"),
    PixelReference("eCT_Supplemental.dcm", ExplicitVRLittleEndian, "CT", "MONOCHROME2", 2, (512, 512), 16,
                   False, "enhanced CT: rescale and window only in the functional groups"),
    PixelReference("liver.dcm", ExplicitVRLittleEndian, "SEG", "MONOCHROME2", 3, (512, 512), 1, False,
                   "1-bit segmentation, three segments"),
    PixelReference("rtdose.dcm", ImplicitVRLittleEndian, "RTDOSE", "MONOCHROME2", 15, (10, 10), 32, False,
                   "32-bit dose grid, 15 frames, upscaled"),
)
# fmt: on


@dataclass(frozen=True)
class PixelPair:
    """Two files holding the same image; max and mean absolute difference allowed between outputs."""

    first: str
    second: str
    max_abs: float
    mean_abs: float
    why: str


_EXACT = 1e-6
PAIRS: tuple[PixelPair, ...] = (
    *(
        PixelPair("MR_small.dcm", other, _EXACT, _EXACT, "one MR slice in eight encodings")
        for other in (
            "MR_small_RLE.dcm",
            "MR_small_bigendian.dcm",
            "MR_small_expb.dcm",
            "MR_small_implicit.dcm",
            "MR_small_jp2klossless.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_padded.dcm",
        )
    ),
    *(
        PixelPair("emri_small.dcm", other, _EXACT, _EXACT, "10-frame MR in five encodings")
        for other in (
            "emri_small_RLE.dcm",
            "emri_small_big_endian.dcm",
            "emri_small_jpeg_2k_lossless.dcm",
            "emri_small_jpeg_ls_lossless.dcm",
        )
    ),
    PixelPair("693_UNCR.dcm", "693_J2KR.dcm", _EXACT, _EXACT, "CT, JPEG 2000 lossless"),
    PixelPair("693_UNCI.dcm", "693_J2KI.dcm", _EXACT, _EXACT, "CT, JPEG 2000 lossy vs its decompression"),
    PixelPair("693_UNCR.dcm", "693_J2KI.dcm", 0.5, 0.03, "CT, lossy vs original in a 400 HU window"),
    PixelPair("MR2_UNCR.dcm", "MR2_J2KR.dcm", _EXACT, _EXACT, "MR 1024x1024, JPEG 2000 lossless"),
    PixelPair("RG1_UNCR.dcm", "RG1_J2KR.dcm", _EXACT, _EXACT, "MONOCHROME1 CR, JPEG 2000 lossless"),
    PixelPair("US1_UNCR.dcm", "US1_J2KR.dcm", _EXACT, _EXACT, "RGB vs YBR_RCT"),
    PixelPair("US1_UNCI.dcm", "US1_J2KI.dcm", _EXACT, _EXACT, "RGB vs YBR_ICT decompressed"),
    PixelPair("US1_UNCR.dcm", "US1_J2KI.dcm", 0.02, 0.002, "RGB vs YBR_ICT lossy"),
    PixelPair("JPEG2000_UNC.dcm", "JPEG2000.dcm", _EXACT, _EXACT, "NM, JPEG 2000"),
    PixelPair("JPEG2000_UNC.dcm", "JPGExtended.dcm", 0.3, 0.03, "NM, JPEG extended lossy"),
    PixelPair("SC_rgb.dcm", "SC_rgb_rle.dcm", _EXACT, _EXACT, "RGB, RLE"),
    PixelPair("SC_rgb.dcm", "SC_rgb_expb.dcm", _EXACT, _EXACT, "RGB, big endian"),
    PixelPair("SC_rgb.dcm", "SC_rgb_gdcm_KY.dcm", _EXACT, _EXACT, "RGB, JPEG 2000"),
    PixelPair("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm", _EXACT, _EXACT, "RGB, JPEG lossless"),
    PixelPair("SC_rgb.dcm", "SC_rgb_16bit.dcm", _EXACT, _EXACT, "RGB 8 vs 16 bits"),
    PixelPair("SC_rgb.dcm", "SC_rgb_32bit.dcm", _EXACT, _EXACT, "RGB 8 vs 32 bits"),
    PixelPair("SC_rgb.dcm", "SC_ybr_full_uncompressed.dcm", 0.01, 0.002, "RGB vs native YBR_FULL"),
    PixelPair("SC_rgb.dcm", "SC_ybr_full_422_uncompressed.dcm", 0.01, 0.002, "RGB vs native YBR_FULL_422"),
    PixelPair("SC_rgb.dcm", "SC_rgb_jpeg_dcmtk.dcm", 0.01, 0.002, "RGB vs JPEG YBR_FULL"),
    PixelPair("SC_rgb.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", 0.01, 0.002, "RGB vs JPEG YBR_FULL_422"),
    PixelPair("SC_rgb.dcm", "SC_rgb_dcmtk_+eb+cr.dcm", 0.01, 0.002, "RGB vs JPEG baseline RGB"),
    PixelPair("SC_rgb_2frame.dcm", "SC_rgb_rle_2frame.dcm", _EXACT, _EXACT, "2-frame RGB, RLE"),
    PixelPair("SC_rgb_2frame.dcm", "SC_rgb_expb_16bit_2frame.dcm", _EXACT, _EXACT, "2-frame RGB, 16-bit BE"),
    PixelPair("SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm", 0.01, 0.005, "3x3 RGB vs JPEG YBR"),
    PixelPair("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm", _EXACT, _EXACT, "palette, RLE"),
    PixelPair("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm", _EXACT, _EXACT, "2-frame palette, BE"),
    PixelPair("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm", _EXACT, _EXACT, "16-bit palette, BE"),
    PixelPair("rtdose.dcm", "rtdose_rle.dcm", _EXACT, _EXACT, "32-bit dose grid, RLE"),
    PixelPair("rtdose.dcm", "rtdose_expb.dcm", _EXACT, _EXACT, "32-bit dose grid, big endian"),
    PixelPair("liver.dcm", "liver_expb.dcm", _EXACT, _EXACT, "1-bit segmentation, big endian"),
)

#: Files with pixel data that cannot be decoded here, and a phrase the InputError must contain.
REJECTED: dict[str, str] = {
    "JPEG-lossy.dcm": "12-bit precision",  # 12-bit JPEG extended: neither libjpeg nor Pillow decodes it
    "JPEG2000-embedded-sequence-delimiter.dcm": "J2K",  # the codestream is cut by a sequence delimiter
    "MR_truncated.dcm": "less than expected",  # pixel data shorter than Rows x Columns
    "badVR.dcm": "'1A'",  # (0028,0008) Number of Frames is not a number
    "meta_missing_tsyntax.dcm": "Bits Allocated",  # pixel data without an Image Pixel module
    "nested_priv_SQ.dcm": "Bits Allocated",
}
