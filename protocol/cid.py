"""Content identifiers exactly as Kubo makes them with ``ipfs add --cid-version=1``.

The profile is Kubo's default for CIDv1: the bytes are cut into 262,144-byte
chunks stored as raw leaves (codec ``raw``), hashed with sha2-256, and linked by
a balanced tree of dag-pb nodes carrying UnixFS ``File`` metadata, at most 174
links per node. A file of one chunk is its own raw leaf (``bafk…``); anything
larger has a dag-pb root (``bafy…``). Matching that profile byte for byte is what
lets a model written by the embedded store resolve under the same CID on any
IPFS node. multiformats encodes the CIDs, multihashes and multibase strings;
only the two small protobuf messages (dag-pb ``PBNode`` and UnixFS ``Data``)
are written here.
"""

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from typing import BinaryIO

from multiformats import CID, multihash

CHUNK_SIZE = 262_144
MAX_LINKS = 174
RAW = "raw"
DAG_PB = "dag-pb"

_UNIXFS_RAW = 0
_UNIXFS_FILE = 2
_VARINT = 0
_LEN = 2


@dataclass(frozen=True)
class FileNode:
    """The parts of a dag-pb UnixFS file node a reader needs.

    ``data`` is the node's own bytes (empty in Kubo's raw-leaves DAGs, present in
    CIDv0-style leaves); the file is ``data`` followed by the links' contents.
    """

    links: tuple[str, ...]
    data: bytes
    filesize: int


@dataclass(frozen=True)
class _Child:
    cid: bytes
    tsize: int
    filesize: int


def cid_of(data: bytes) -> str:
    """Return the CID Kubo gives ``data`` with ``ipfs add --cid-version=1``."""
    return _root(dag_blocks(chunks(data)))


def cid_of_stream(stream: BinaryIO) -> str:
    """Return the CID of everything ``stream`` yields, reading one chunk at a time."""
    return _root(dag_blocks(read_chunks(stream)))


def build_dag(data: bytes) -> tuple[str, dict[str, bytes]]:
    """Return the root CID of ``data`` and every block of its DAG, keyed by CID."""
    blocks: dict[str, bytes] = {}
    root = ""
    for root, block in dag_blocks(chunks(data)):
        blocks[root] = block
    return root, blocks


def chunks(data: bytes) -> Iterator[bytes]:
    """Cut ``data`` into fixed-size chunks; empty input is one empty chunk, as in Kubo."""
    view = memoryview(data)
    for start in range(0, max(len(data), 1), CHUNK_SIZE):
        yield bytes(view[start : start + CHUNK_SIZE])


def read_chunks(stream: BinaryIO) -> Iterator[bytes]:
    """Read ``stream`` in full fixed-size chunks (short reads from pipes are joined)."""
    emitted = False
    while True:
        chunk = stream.read(CHUNK_SIZE)
        while chunk and len(chunk) < CHUNK_SIZE:
            more = stream.read(CHUNK_SIZE - len(chunk))
            if not more:
                break
            chunk += more
        if not chunk:
            if not emitted:
                yield b""
            return
        emitted = True
        yield chunk


def dag_blocks(chunk_source: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(cid, block)`` for every block of the file's DAG, the root last.

    Leaves come first, so a store that writes blocks in this order never holds a
    root whose children are missing. Identical chunks yield the same block again.
    """
    level: list[_Child] = []
    for chunk in chunk_source:
        cid = _make_cid(RAW, chunk)
        yield str(cid), chunk
        level.append(_Child(bytes(cid), len(chunk), len(chunk)))
    if not level:
        raise ValueError("chunk_source yielded nothing; pass at least one (possibly empty) chunk")
    while len(level) > 1:
        parents: list[_Child] = []
        for start in range(0, len(level), MAX_LINKS):
            group = level[start : start + MAX_LINKS]
            block = _file_node(group)
            cid = _make_cid(DAG_PB, block)
            yield str(cid), block
            parents.append(
                _Child(bytes(cid), len(block) + sum(c.tsize for c in group), _filesize(group))
            )
        level = parents


def normalize_cid(text: str) -> str:
    """Return ``text`` as Lethe spells CIDs (CIDv1 in base32; CIDv0 unchanged).

    Raises ``ValueError`` with the offending text if it is not a CID.
    """
    return str(parse_cid(text))


def parse_cid(value: str | bytes) -> CID:
    """Decode a CID string or binary CID, raising ``ValueError`` that names it if it is not one."""
    try:
        cid = CID.decode(value.strip() if isinstance(value, str) else value)
    except (ValueError, LookupError) as exc:
        raise ValueError(f"not a CID: {value!r} ({exc})") from exc
    return cid.set(base="base32") if cid.version == 1 else cid


def block_matches(cid: str | CID, block: bytes) -> bool:
    """Tell whether ``block`` hashes to the digest inside ``cid``.

    Raises ``ValueError`` if the CID's hash function is not one we can compute.
    """
    parsed = parse_cid(cid) if isinstance(cid, str) else cid
    if not multihash.is_implemented(parsed.hashfun.name):
        raise ValueError(f"cannot verify {parsed}: hash function {parsed.hashfun.name} unsupported")
    return bool(multihash.digest(block, parsed.hashfun) == parsed.digest)


def decode_file_node(block: bytes) -> FileNode:
    """Decode a dag-pb UnixFS file node; ``ValueError`` if it is malformed or not a file."""
    links: list[str] = []
    unixfs: bytes | None = None
    for field, value in _fields(block):
        if field == 2 and isinstance(value, bytes):
            links.append(_link_target(value))
        elif field == 1 and isinstance(value, bytes):
            unixfs = value
        else:
            raise ValueError(f"unexpected dag-pb field {field}")
    if unixfs is None:
        raise ValueError("dag-pb node has no UnixFS data")
    kind: int | None = None
    data = b""
    filesize: int | None = None
    for field, value in _fields(unixfs):
        if field == 1 and isinstance(value, int):
            kind = value
        elif field == 2 and isinstance(value, bytes):
            data = value
        elif field == 3 and isinstance(value, int):
            filesize = value
    if kind not in (_UNIXFS_RAW, _UNIXFS_FILE):
        raise ValueError(f"UnixFS node of type {kind} is not a file")
    return FileNode(tuple(links), data, len(data) if filesize is None else filesize)


def _root(blocks: Iterator[tuple[str, bytes]]) -> str:
    """Drain ``blocks`` keeping only the last (root) CID, so no chunk outlives its hashing."""
    return deque(blocks, maxlen=1)[0][0]


def _make_cid(codec: str, block: bytes) -> CID:
    return CID("base32", 1, codec, multihash.wrap(sha256(block).digest(), "sha2-256"))


def _filesize(children: list[_Child]) -> int:
    return sum(c.filesize for c in children)


def _file_node(children: list[_Child]) -> bytes:
    """Encode a dag-pb node exactly as Kubo and the JS importer do: links first, then Data."""
    unixfs = _key(1, _VARINT) + _varint(_UNIXFS_FILE)
    unixfs += _key(3, _VARINT) + _varint(_filesize(children))
    for child in children:
        unixfs += _key(4, _VARINT) + _varint(child.filesize)
    node = b""
    for child in children:
        # Name is present and empty, as both reference encoders write it.
        link = _bytes_field(1, child.cid) + _bytes_field(2, b"")
        link += _key(3, _VARINT) + _varint(child.tsize)
        node += _bytes_field(2, link)
    return node + _bytes_field(1, unixfs)


def _link_target(link: bytes) -> str:
    for field, value in _fields(link):
        if field == 1 and isinstance(value, bytes):
            return str(parse_cid(value))
    raise ValueError("dag-pb link without a Hash")


# Protobuf wire format. Its varints run to 10 bytes for a uint64, whereas the
# multiformats unsigned varint stops at 9, so protobuf keeps its own helpers.


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(value)) + value


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise ValueError("protobuf varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
            yield field, value
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated protobuf field")
            yield field, buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
