"""Packing a message's array records into one wire object, and back, exactly (common.message_packing)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import parameters_to_arrayrecord
from flwr.supercore.task_identity import TaskIdentity

from common.message_packing import PACKED_PREFIX, message_packing_mod, pack_content, unpack_content


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
            "fitins.config": ConfigRecord({"server-round": 3}),
            "single": ArrayRecord(numpy_ndarrays=[np.arange(4.0)]),
        }
    )


def _arrays(record: ArrayRecord) -> list[tuple[str, str, tuple[int, ...], str, bytes]]:
    return [(k, a.dtype, tuple(a.shape), a.stype, a.data) for k, a in record.items()]


def test_round_trip_restores_every_array_byte_for_byte_in_order() -> None:
    original = _content()
    restored = unpack_content(pack_content(original))
    assert list(restored.keys()) == list(original.keys())
    for name in ("fitins.parameters", "single"):
        assert _arrays(restored[name]) == _arrays(original[name])  # type: ignore[arg-type]
    assert dict(restored["fitins.config"]) == {"server-round": 3}  # type: ignore[arg-type]
    decoded = [a.numpy() for a in restored["fitins.parameters"].values()]  # type: ignore[union-attr]
    for got, want in zip(decoded, _model_like(), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def test_packing_sends_one_array_and_leaves_the_input_alone() -> None:
    original = _content()
    before = _arrays(original["fitins.parameters"])  # type: ignore[arg-type]
    packed = pack_content(original)
    assert len(packed["fitins.parameters"]) == 1  # type: ignore[arg-type]
    assert PACKED_PREFIX + "fitins.parameters" in packed
    assert PACKED_PREFIX + "single" not in packed  # one array: nothing to gain
    assert _arrays(original["fitins.parameters"]) == before  # type: ignore[arg-type]
    # Fewer objects on the wire: Flower moves each array (and its chunks) as objects of their own.
    assert len(packed.deflate()) and len(packed.children or {}) == len(original.children or {}) + 1
    assert len(packed["fitins.parameters"].children or {}) == 1  # type: ignore[union-attr]


def test_content_without_packed_records_passes_through() -> None:
    content = _content()
    assert unpack_content(content) is content


@pytest.mark.parametrize("damage", ["bytes", "layout", "missing"])
def test_a_damaged_packed_record_is_refused(damage: str) -> None:
    packed = pack_content(_content())
    if damage == "bytes":
        blob = packed["fitins.parameters"]["packed"]  # type: ignore[index]
        packed["fitins.parameters"] = ArrayRecord(
            array_dict={"packed": Array(dtype="uint8", shape=(1,), stype=blob.stype, data=blob.data[:-1])}
        )
    elif damage == "layout":
        packed[PACKED_PREFIX + "fitins.parameters"] = ArrayRecord(numpy_ndarrays=[np.zeros(1)])
    else:
        del packed["fitins.parameters"]
    with pytest.raises(ValueError, match="fitins.parameters"):
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
    assert len(reply.content["fitins.parameters"]) == 1  # type: ignore[arg-type]
    plain_request = Message(_content(), dst_node_id=2, message_type="train")
    reply = message_packing_mod(plain_request, context, app)
    assert len(reply.content["fitins.parameters"]) == 5  # type: ignore[arg-type]
