"""Packing a message's content into one wire record, and back, exactly.

The adaptation is common.flower_runtime.message_packing.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import parameters_to_arrayrecord
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from common.flower_runtime import message_packing
from common.flower_runtime.message_packing import (
    PACKED_RECORD,
    is_packed,
    message_packing_mod,
    pack_content,
    unpack_content,
)


def _model_like() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((16, 1, 3, 3)).astype(np.float32),
        rng.standard_normal(16).astype(np.float32),
        np.array(7, dtype=np.int64),  # a scalar buffer (batch norm's counter)
        rng.standard_normal((2, 128)).astype(np.float64),
        np.zeros((0, 3), dtype=np.float32),
    ]


def _content() -> RecordDict:
    return RecordDict(
        {
            "fitins.parameters": parameters_to_arrayrecord(
                ndarrays_to_parameters(_model_like()), keep_input=True
            ),
            "fitins.config": ConfigRecord(
                {"server-round": 3, "digest": b"\x00\xff", "ok": True, "note": "x"}
            ),
            "single": ArrayRecord(numpy_ndarrays=[np.arange(4.0)]),
            "metrics": MetricRecord({"loss": 0.25, "num-examples": 40, "per-class": [0.5, 0.75]}),
        }
    )


def _arrays(record: ArrayRecord) -> list[tuple[str, str, tuple[int, ...], str, bytes]]:
    return [(k, a.dtype, tuple(a.shape), a.stype, a.data) for k, a in record.items()]


def _objects_below_message(content: RecordDict) -> int:
    """Wire objects Flower moves for this content (the record dict and everything under it)."""
    return len(get_all_nested_objects(content))


def test_round_trip_restores_every_record_exactly_in_order() -> None:
    original = _content()
    restored = unpack_content(pack_content(original))
    assert list(restored.keys()) == list(original.keys())
    for name in ("fitins.parameters", "single"):
        assert _arrays(restored[name]) == _arrays(original[name])  # type: ignore[arg-type]
    assert dict(restored["fitins.config"]) == dict(original["fitins.config"])  # type: ignore[arg-type]
    assert dict(restored["metrics"]) == dict(original["metrics"])  # type: ignore[arg-type]
    assert type(restored["metrics"]) is MetricRecord and type(restored["fitins.config"]) is ConfigRecord
    decoded = [a.numpy() for a in restored["fitins.parameters"].values()]  # type: ignore[union-attr]
    for got, want in zip(decoded, _model_like(), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def test_a_packed_message_is_the_fewest_wire_objects_and_the_input_is_left_alone() -> None:
    original = _content()
    before = _arrays(original["fitins.parameters"])  # type: ignore[arg-type]
    packed = pack_content(original)
    assert list(packed.keys()) == [PACKED_RECORD]
    assert _objects_below_message(packed) == 2  # the record dict and one config record
    assert _objects_below_message(original) > 2 * len(_model_like())  # each array and chunk its own
    assert _arrays(original["fitins.parameters"]) == before  # type: ignore[arg-type]


def test_content_larger_than_a_chunk_travels_as_an_array_flower_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(message_packing, "INLINE_LIMIT", 1024)  # as if the model were large
    original = _content()
    packed = pack_content(original)
    assert isinstance(packed[PACKED_RECORD], ArrayRecord)
    restored = unpack_content(packed)
    assert _arrays(restored["fitins.parameters"]) == _arrays(original["fitins.parameters"])  # type: ignore[arg-type]
    big = RecordDict({"model": ArrayRecord(numpy_ndarrays=[np.arange(700_000, dtype=np.float64)])})  # 5.6 MB
    monkeypatch.setattr(message_packing, "INLINE_LIMIT", message_packing.FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE)
    wire = pack_content(big)
    chunks = [o for o in get_all_nested_objects(wire).values() if type(o).__name__ == "ArrayChunk"]
    assert len(chunks) == 2 and all(len(c.data) <= message_packing.INLINE_LIMIT for c in chunks)  # type: ignore[attr-defined]
    assert np.array_equal(unpack_content(wire)["model"].to_numpy_ndarrays()[0], np.arange(700_000.0))  # type: ignore[union-attr]


def test_content_that_is_not_packed_passes_through() -> None:
    content = _content()
    assert unpack_content(content) is content and not is_packed(content)


@pytest.mark.parametrize("damage", ["bytes", "extra record", "wrong field", "wrong record type"])
def test_a_damaged_packed_record_is_refused(damage: str) -> None:
    packed = pack_content(_content())
    blob = packed[PACKED_RECORD]["recorddict"]  # type: ignore[index]
    if damage == "bytes":
        packed[PACKED_RECORD] = ConfigRecord({"recorddict": blob[:-3]})  # type: ignore[index]
    elif damage == "extra record":
        packed["intruder"] = ConfigRecord({"x": 1})
    elif damage == "wrong field":
        packed[PACKED_RECORD] = ConfigRecord({"other": blob})
    else:
        packed[PACKED_RECORD] = MetricRecord({"recorddict": 1.0})
    with pytest.raises(ValueError, match=PACKED_RECORD):
        unpack_content(packed)


def _reply_with(content: RecordDict, request: Message) -> Message:
    return Message(content, reply_to=request)


def test_the_mod_unpacks_requests_and_packs_replies_only_for_packed_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # what a task process sets
        monkeypatch.setattr(TaskIdentity, name, value)
    context = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    seen: list[RecordDict] = []

    def app(msg: Message, _ctx: Context) -> Message:
        seen.append(msg.content)
        return _reply_with(_content(), msg)

    packed_request = Message(pack_content(_content()), dst_node_id=2, message_type="train")
    reply = message_packing_mod(packed_request, context, app)
    assert len(seen[-1]["fitins.parameters"]) == 5  # type: ignore[arg-type]
    assert is_packed(reply.content)
    assert len(unpack_content(reply.content)["fitins.parameters"]) == 5  # type: ignore[arg-type]
    plain_request = Message(_content(), dst_node_id=2, message_type="train")
    reply = message_packing_mod(plain_request, context, app)
    assert not is_packed(reply.content) and len(reply.content["fitins.parameters"]) == 5  # type: ignore[arg-type]
