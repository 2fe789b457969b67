"""A message's whole content as one record: three wire objects per message, the fewest Flower allows.

Flower 1.42 moves a message as a tree of objects, each fetched or stored with its own request: the
message, its record dict, each record, and for an array record every array and every 5 MB chunk of
it. In the deployment engine each of those requests crosses every hop (ServerApp -> SuperLink ->
SuperNode -> ClientApp and back), and each is an authenticated HTTPS request answered by a Python web
service; the SuperLink, which serves them one at a time, is what a deployed round waits for
(``docs/performance.md``). A legacy fit or evaluate message (model, config, metrics) made 6 to 8
objects even with each array record packed into one array; a record dict of a single record makes 3
(the message, the record dict, the record), the least a message can be.

:func:`pack_content` serialises the whole record dict with Flower's own protobuf encoding
(``flwr.common.serde``) into the single record ``fedscan.packed``: a config record holding the bytes
when they fit in one of Flower's array chunks (:data:`INLINE_LIMIT`), otherwise one ``uint8`` array
that Flower chunks as usual, so no wire object is larger than Flower's own. :func:`unpack_content`
restores the record dict exactly: the same records in the same order, arrays byte for byte (dtype,
shape, serialisation type, data), config and metric values as sent. Nothing is converted, so what the
sender's mods and Flower's SecAgg+ see and what the receiver's see are identical; only the transport
between them changes. Both ends are fedscan's: :func:`message_packing_mod` on the ClientApp (outermost,
and it packs a reply only if the request came packed, so a ServerApp that does not pack gets plain
replies) and :class:`PackingGrid` around the ServerApp's grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
from flwr.serverapp import Grid
from google.protobuf.message import DecodeError

__all__ = [
    "INLINE_LIMIT",
    "PACKED_RECORD",
    "PackingGrid",
    "is_packed",
    "message_packing_mod",
    "pack_content",
    "recorddict_from_bytes",
    "recorddict_to_bytes",
    "unpack_content",
]

#: The one record of a packed record dict.
PACKED_RECORD: Final = "fedscan.packed"
#: Packed contents up to this size travel as one config record; larger ones as an array Flower chunks.
INLINE_LIMIT: Final = FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
_FIELD: Final = "recorddict"
_STYPE: Final = "fedscan.recorddict-protobuf"


def recorddict_to_bytes(content: RecordDict) -> bytes:
    """``content`` serialised with Flower's own wire format (so a stored reply replays byte-exact)."""
    return recorddict_to_proto(content).SerializeToString()


def recorddict_from_bytes(blob: bytes) -> RecordDict:
    """The record dict serialised in ``blob``; ``ValueError`` if it is damaged."""
    proto = RecordDictProto()
    try:
        proto.ParseFromString(blob)
        return recorddict_from_proto(proto)
    except (DecodeError, ValueError, TypeError) as error:
        raise ValueError(f"A serialised record dict is damaged ({error}).") from None


def pack_content(content: RecordDict) -> RecordDict:
    """``content`` as one record (``fedscan.packed``) holding its serialised form.

    The input is not changed (a workflow may send one record dict to many sites).
    """
    blob = recorddict_to_bytes(content)
    if len(blob) <= INLINE_LIMIT:
        return RecordDict({PACKED_RECORD: ConfigRecord({_FIELD: blob})})
    array = Array(dtype="uint8", shape=(len(blob),), stype=_STYPE, data=blob)
    return RecordDict({PACKED_RECORD: ArrayRecord(array_dict={_FIELD: array}, keep_input=False)})


def is_packed(content: RecordDict) -> bool:
    """Whether ``content`` is a packed record dict (holds :data:`PACKED_RECORD`)."""
    return PACKED_RECORD in content


def unpack_content(content: RecordDict) -> RecordDict:
    """The record dict packed in ``content``; ``content`` itself if it is not packed.

    Raises ``ValueError`` naming what is wrong if the packed record is malformed.
    """
    if not is_packed(content):
        return content
    if len(content) != 1:
        others = ", ".join(sorted(name for name in content if name != PACKED_RECORD))
        raise ValueError(f"A packed message holds other records beside {PACKED_RECORD!r}: {others}.")
    record = content[PACKED_RECORD]
    blob: object = None
    if isinstance(record, ConfigRecord) and list(record.keys()) == [_FIELD]:
        blob = record[_FIELD]
    elif isinstance(record, ArrayRecord) and list(record.keys()) == [_FIELD]:
        array = record[_FIELD]
        blob = array.data if array.stype == _STYPE and array.dtype == "uint8" else None
    if not isinstance(blob, bytes):
        raise ValueError(f"Packed record {PACKED_RECORD!r} does not hold one serialised record dict.")
    try:
        return recorddict_from_bytes(blob)
    except ValueError as error:
        raise ValueError(f"Packed record {PACKED_RECORD!r}: {error}") from None


def message_packing_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """ClientApp mod (outermost): unpack the request, and pack the reply if the request came packed."""
    came_packed = msg.has_content() and is_packed(msg.content)
    if came_packed:
        msg.content = unpack_content(msg.content)
    reply: Message = call_next(msg, context)
    if came_packed and reply.has_content():
        reply.content = pack_content(reply.content)
    return reply


class PackingGrid(Grid):
    """The ServerApp's grid, packing what it sends and unpacking what it receives (everything else as is)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._grid.run

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        self._grid.set_run(run)

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages([_packed(m) for m in messages])

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [_unpacked(m) for m in self._grid.pull_messages(message_ids)]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = self._grid.send_and_receive([_packed(m) for m in messages], timeout=timeout)
        return [_unpacked(m) for m in replies]

    def __getattr__(self, name: str) -> Any:  # anything else the wrapped grid offers (get_nodes, ...)
        return getattr(self._grid, name)


def _packed(message: Message) -> Message:
    if message.has_content():
        message.content = pack_content(message.content)
    return message


def _unpacked(message: Message) -> Message:
    if message.has_content():
        message.content = unpack_content(message.content)
    return message
