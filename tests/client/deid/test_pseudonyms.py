"""Keyed pseudonyms: deterministic, valid, one-way without the secret, and fixed points."""

from __future__ import annotations

import re

import pytest

from client.deid import patient_pseudonym, pseudonymize_uid
from client.deid.pseudonyms import MAX_SHIFT_DAYS, KeyedPseudonyms
from common.errors import KeyMaterialError

UID_FORMAT = re.compile(r"2\.25\.[1-9][0-9]*")
UIDS = [
    "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
    "1.3.6.1.4.1.5962.1.1.0.0.0.1168612284.20369.0.3",
    "2.25.100000000000000000000000000000000000001",
    "1.2.3",
]


def test_uids_are_deterministic_valid_and_distinct(secret: bytes) -> None:
    outputs = [pseudonymize_uid(secret, uid) for uid in UIDS]
    assert outputs == [pseudonymize_uid(secret, uid) for uid in UIDS]
    assert len(set(outputs)) == len(UIDS)
    for uid, out in zip(UIDS, outputs, strict=True):
        assert out != uid
        assert UID_FORMAT.fullmatch(out) and len(out) <= 64


def test_padding_does_not_change_the_pseudonym(secret: bytes) -> None:
    assert pseudonymize_uid(secret, "1.2.3\x00") == pseudonymize_uid(secret, " 1.2.3 ")
    assert pseudonymize_uid(secret, "") == ""


def test_outputs_are_fixed_points(secret: bytes) -> None:
    for uid in UIDS:
        once = pseudonymize_uid(secret, uid)
        assert pseudonymize_uid(secret, once) == once
    pid = patient_pseudonym(secret, "MRN 123")
    assert patient_pseudonym(secret, pid) == pid


def test_another_secret_gives_other_pseudonyms_and_does_not_recognise_ours(secret: bytes) -> None:
    other = bytes(32)
    keys, other_keys = KeyedPseudonyms(secret), KeyedPseudonyms(other)
    for uid in UIDS:
        assert keys.uid(uid) != other_keys.uid(uid)
        assert not other_keys.is_own_uid(keys.uid(uid))
    assert not other_keys.is_own_patient(keys.patient("MRN 123"))


def test_the_uid_is_a_version_8_uuid(secret: bytes) -> None:
    value = int(pseudonymize_uid(secret, UIDS[0])[len("2.25.") :])
    raw = value.to_bytes(16, "big")
    assert raw[6] >> 4 == 8 and raw[8] >> 6 == 0b10


def test_patient_pseudonyms_are_valid_lo_values(secret: bytes) -> None:
    pid = patient_pseudonym(secret, "Smithwick-99812345")
    assert re.fullmatch(r"FS[A-Z2-7]{24}", pid)
    assert patient_pseudonym(secret, "Smithwick-99812345 ") == pid
    assert patient_pseudonym(secret, "") != pid


def test_temporal_shift_is_keyed_bounded_and_never_zero(secret: bytes) -> None:
    keys = KeyedPseudonyms(secret)
    shifts = [keys.temporal_shift(f"P{i}") for i in range(300)]
    assert all(-MAX_SHIFT_DAYS <= s.days <= -1 and 0 <= s.seconds < 86_400 for s in shifts)
    assert all(s.total_seconds < 0 for s in shifts)
    assert len({s.days for s in shifts}) > 250 and len({s.seconds for s in shifts}) > 290
    assert keys.temporal_shift("P1") == KeyedPseudonyms(secret).temporal_shift("P1")
    assert KeyedPseudonyms(bytes(32)).temporal_shift("P1") != keys.temporal_shift("P1")


@pytest.mark.parametrize("bad", [b"", b"short", "not bytes"])
def test_weak_secrets_are_refused(bad: object) -> None:
    with pytest.raises(KeyMaterialError):
        KeyedPseudonyms(bad)  # type: ignore[arg-type]


def test_repr_hides_the_secret(secret: bytes) -> None:
    assert secret.hex() not in repr(KeyedPseudonyms(secret))
