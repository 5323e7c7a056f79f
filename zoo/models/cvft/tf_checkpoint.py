"""Read TensorFlow (1.x/2.x) checkpoints -- the "tensor bundle" V2 format -- with numpy only.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus ``PREFIX.data-0000i-of-0000N`` shards.

* The index is a LevelDB-style SSTable: data blocks of prefix-compressed ``(key, value)`` entries
  followed by restart offsets, a 5-byte block trailer (compression type + masked crc32c), an
  index block whose values are block handles, and a 48-byte footer (metaindex handle, index
  handle, padding, magic ``0xdb4775248b80fb57``). TensorFlow writes it uncompressed.
* Key ``""`` holds a ``BundleHeaderProto`` (num_shards = 1, endianness = 2); every other key is a
  variable name whose value is a ``BundleEntryProto``: dtype (1), shape (2), shard_id (3),
  offset (4), size (5), crc32c (6), slices (7).
* A tensor is ``size`` raw little-endian bytes at ``offset`` of its shard, C order.

Only the few protobuf fields above are decoded. Checksums are not verified (a truncated or
shifted file still fails: every read is bounds- and size-checked). TensorFlow is not needed.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5

#: TensorFlow DataType enum -> numpy dtype (the numeric types a checkpoint of weights holds)
TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
TF_DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource", 21: "variant"}


# --------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """``(field number, value)`` of a protobuf message: ints for varint/fixed, bytes for length-delimited."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lies: dtype enum, shape, shard, byte offset and size."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    sliced: bool


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in _fields(buf):
        if number == 2:  # TensorShapeProto.dim
            size = next((v for n, v in _fields(value) if n == 1), 0)
            dims.append(size - (1 << 64) if size >= 1 << 63 else size)  # int64 two's complement
        elif number == 3 and value:
            raise ValueError("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(buf: bytes) -> BundleEntry:
    values: dict[int, int | bytes] = {}
    sliced = False
    for number, value in _fields(buf):
        if number == 7:
            sliced = True
        else:
            values[number] = value
    shape = _parse_shape(values[2]) if 2 in values else ()
    return BundleEntry(int(values.get(1, 0)), shape, int(values.get(3, 0)), int(values.get(4, 0)),
                       int(values.get(5, 0)), sliced)


# --------------------------------------------------------------------------- SSTable


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data):
        raise ValueError(f"block at {offset} (+{size}) runs past the end of the file")
    if data[offset + size] != 0:
        raise ValueError(f"compressed table block (type {data[offset + size]}); TensorFlow writes them uncompressed")
    return data[offset:offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError("table block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise ValueError("corrupt restart array")
    entries, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise ValueError("corrupt block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def read_index(path: str | Path) -> tuple[dict[str, int], dict[str, BundleEntry]]:
    """Parse ``PREFIX.index``: ``(header fields, {variable name: BundleEntry})``."""
    data = Path(path).read_bytes()
    if len(data) < FOOTER_SIZE:
        raise ValueError("file shorter than an SSTable footer")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise ValueError("bad SSTable magic number (not a TensorFlow V2 checkpoint index)")
    _, _, pos = _block_handle(footer, 0)  # metaindex: unused by tensor bundles
    index_offset, index_size, _ = _block_handle(footer, pos)
    header: dict[str, int] = {}
    entries: dict[str, BundleEntry] = {}
    for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
        offset, size, _ = _block_handle(handle, 0)
        for key, value in _block_entries(_read_block(data, offset, size)):
            if key == b"":
                fields = dict(_fields(value))
                header = {"num_shards": int(fields.get(1, 1)), "endianness": int(fields.get(2, 0))}
            else:
                entries[key.decode("utf-8")] = _parse_entry(value)
    return header, entries


# --------------------------------------------------------------------------- public reader


def checkpoint_prefix(path: str | Path) -> Path:
    """Accept ``PREFIX``, ``PREFIX.index`` or ``PREFIX.data-0000i-of-0000N``; return ``PREFIX``."""
    path = Path(path)
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[:-len(".index")])
    match = re.match(r"(.*)\.data-\d+-of-\d+$", name)
    return path.with_name(match.group(1)) if match else path


class TFCheckpointReader:
    """Numpy view of a TensorFlow V2 checkpoint (``tf.train.load_checkpoint`` without TensorFlow).

    >>> reader = TFCheckpointReader("model.ckpt")          # doctest: +SKIP
    >>> reader.shapes()["VGG_grd/conv1_1/weights"]          # doctest: +SKIP
    (3, 3, 3, 64)
    """

    def __init__(self, path: str | Path) -> None:
        self.prefix = checkpoint_prefix(path)
        index = Path(f"{self.prefix}.index")
        if not index.is_file():
            raise CheckpointError(
                f"{index}: no such file; pass the checkpoint prefix (e.g. Model/.../model.ckpt, the path "
                "without .index / .data-00000-of-00001)")
        try:
            header, self.entries = read_index(index)
        except (ValueError, KeyError, UnicodeDecodeError, struct.error) as err:
            raise CheckpointError(f"{index}: not a readable TensorFlow checkpoint index ({err})") from err
        self.num_shards = header.get("num_shards", 1)
        if header.get("endianness", 0) != 0:  # 0 = little endian (every platform TF runs on)
            raise CheckpointError(f"{index}: big-endian checkpoints are not supported")

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: entry.shape for name, entry in self.entries.items()}

    def dtypes(self) -> dict[str, str]:
        return {name: (str(TF_DTYPES[e.dtype]) if e.dtype in TF_DTYPES else TF_DTYPE_NAMES.get(e.dtype, f"dtype {e.dtype}"))
                for name, e in self.entries.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries)

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array of its own dtype and shape."""
        if name not in self.entries:
            raise CheckpointError(f"{self.prefix}: no variable {name!r}")
        entry = self.entries[name]
        if entry.sliced:
            raise CheckpointError(f"{self.prefix}: variable {name!r} is saved in slices (partitioned); not supported")
        if entry.dtype not in TF_DTYPES:
            kind = TF_DTYPE_NAMES.get(entry.dtype, f"enum {entry.dtype}")
            raise CheckpointError(f"{self.prefix}: variable {name!r} has dtype {kind}, which this reader does not decode")
        dtype = TF_DTYPES[entry.dtype]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise CheckpointError(f"{self.prefix}: variable {name!r} of shape {entry.shape} needs "
                                  f"{count * dtype.itemsize} bytes but the index records {entry.size}")
        shard = self.shard_path(entry.shard_id)
        if not shard.is_file():
            raise CheckpointError(f"{shard}: data shard missing (needed for {name!r})")
        with open(shard, "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise CheckpointError(f"{shard}: truncated; {name!r} needs bytes {entry.offset}..{entry.offset + entry.size}")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()
