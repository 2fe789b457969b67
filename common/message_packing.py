"""One wire object per model instead of one per array: packing of a message's array records.

Flower 1.42 moves a message as a tree of objects, each fetched or stored with its own request: the
message, its record dict, each record, and for an array record every array and every chunk of it. In
the deployment engine each of those requests crosses every hop (ServerApp -> SuperLink -> SuperNode
-> ClientApp and back) and each is authenticated and answered by a Python web service; the small CNN's
8 arrays made about 20 objects per message, and moving them took most of a deployed round's latency
(``benchmarks/bench_deployment.py``).

:func:`pack_content` replaces every array record of two or more arrays by a record holding one array
of their bytes, one after the other, and a config record ``fedscan.packed.<name>`` with each array's
key, dtype, shape, serialisation type and size; :func:`unpack_content` restores the record exactly
(the same ``Array`` objects byte for byte, in the same order). Nothing is converted, so what the
sender's mods and Flower's SecAgg+ see and what the receiver's see are identical; only the transport
between them is changed. Both ends are fedscan's: :func:`message_packing_mod` on the ClientApp
(outermost, and it packs a reply only if the request came packed) and :class:`PackingGrid` around the
ServerApp's grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid

__all__ = ["PACKED_PREFIX", "PackingGrid", "message_packing_mod", "pack_content", "unpack_content"]

#: Config records named ``PACKED_PREFIX + <record name>`` describe a packed array record.
PACKED_PREFIX = "fedscan.packed."
_PACKED_ARRAY = "packed"
_PACKED_STYPE = "fedscan.packed-arrays"


def pack_content(content: RecordDict) -> RecordDict:
    """A copy of ``content`` with each array record of two or more arrays packed into one array.

    The input is not changed (a workflow may send one record dict to many sites).
    """
    packed = RecordDict()
    for name, record in content.items():
        if not isinstance(record, ArrayRecord) or len(record) < 2:
            packed[name] = record
            continue
        arrays = list(record.items())
        packed[name] = ArrayRecord(
            array_dict={
                _PACKED_ARRAY: Array(
                    dtype="uint8",
                    shape=(sum(len(a.data) for _, a in arrays),),
                    stype=_PACKED_STYPE,
                    data=b"".join(a.data for _, a in arrays),
                )
            },
            keep_input=False,
        )
        packed[PACKED_PREFIX + name] = ConfigRecord(
            {
                "keys": [key for key, _ in arrays],
                "dtypes": [a.dtype for _, a in arrays],
                "shapes": [",".join(str(d) for d in a.shape) for _, a in arrays],
                "stypes": [a.stype for _, a in arrays],
                "sizes": [len(a.data) for _, a in arrays],
            }
        )
    return packed


def unpack_content(content: RecordDict) -> RecordDict:
    """``content`` with every packed array record restored (a record dict without any is returned as is).

    Raises ``ValueError`` if a packed record does not match its description (sizes, missing record).
    """
    described = [name for name in content if name.startswith(PACKED_PREFIX)]
    if not described:
        return content
    unpacked = RecordDict()
    layouts = {name[len(PACKED_PREFIX) :]: content[name] for name in described}
    for name, record in content.items():
        if name.startswith(PACKED_PREFIX):
            continue
        layout = layouts.pop(name, None)
        unpacked[name] = record if layout is None else _unpack_record(name, record, layout)
    if layouts:
        raise ValueError(f"Packed message describes records it does not hold: {', '.join(sorted(layouts))}.")
    return unpacked


def _unpack_record(name: str, record: Any, layout: Any) -> ArrayRecord:
    if not isinstance(record, ArrayRecord) or list(record.keys()) != [_PACKED_ARRAY]:
        raise ValueError(f"Packed record {name!r} is not a single packed array.")
    if not isinstance(layout, ConfigRecord):
        raise ValueError(f"Description of packed record {name!r} is not a config record.")
    blob = record[_PACKED_ARRAY].data
    fields = ("keys", "dtypes", "shapes", "stypes", "sizes")
    try:
        keys, dtypes, shapes, stypes, sizes = ([str(v) for v in cast(list, layout[f])] for f in fields)
        lengths = [int(s) for s in sizes]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"Description of packed record {name!r} is incomplete ({error}).") from None
    if any(n < 0 for n in lengths) or sum(lengths) != len(blob):
        raise ValueError(f"Packed record {name!r} holds {len(blob)} bytes; its description {sum(lengths)}.")
    arrays: dict[str, Array] = {}
    offset = 0
    for key, dtype, shape, stype, size in zip(keys, dtypes, shapes, stypes, lengths, strict=True):
        dims = tuple(int(d) for d in shape.split(",") if d)
        arrays[key] = Array(dtype=dtype, shape=dims, stype=stype, data=blob[offset : offset + size])
        offset += size
    return ArrayRecord(array_dict=arrays, keep_input=False)


def message_packing_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """ClientApp mod (outermost): unpack the request, and pack the reply if the request came packed."""
    came_packed = msg.has_content() and any(name.startswith(PACKED_PREFIX) for name in msg.content)
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
