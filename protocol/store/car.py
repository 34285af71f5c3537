"""CAR v1 archives: the file format every IPFS node imports with ``ipfs dag import``."""

from collections.abc import Iterable, Iterator

from multiformats import varint

from protocol.cid import parse_cid

_CBOR_UINT = 0
_CBOR_BYTES = 2
_CBOR_TEXT = 3
_CBOR_ARRAY = 4
_CBOR_MAP = 5
_CBOR_TAG = 6
_CID_TAG = 42


def car_chunks(root: str, blocks: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """Yield a CAR v1 archive piece by piece: the header naming ``root``, then each block.

    The header is the dag-cbor map ``{"roots": [root], "version": 1}``; each section
    is a varint length, then the binary CID and the block, as the CAR spec says.
    """
    header = _car_header(bytes(parse_cid(root)))
    yield varint.encode(len(header)) + header
    for cid, block in blocks:
        raw_cid = bytes(parse_cid(cid))
        yield varint.encode(len(raw_cid) + len(block)) + raw_cid
        yield block


def _car_header(root: bytes) -> bytes:
    """Encode the header by hand: dag-cbor orders map keys by length, so "roots" first."""
    # A CID in dag-cbor is tag 42 over its binary form prefixed by the 0x00 multibase byte.
    cid_item = _cbor_head(_CBOR_TAG, _CID_TAG) + _cbor_head(_CBOR_BYTES, len(root) + 1) + b"\0"
    return (
        _cbor_head(_CBOR_MAP, 2)
        + _cbor_text("roots")
        + _cbor_head(_CBOR_ARRAY, 1)
        + cid_item
        + root
        + _cbor_text("version")
        + _cbor_head(_CBOR_UINT, 1)
    )


def _cbor_text(text: str) -> bytes:
    encoded = text.encode()
    return _cbor_head(_CBOR_TEXT, len(encoded)) + encoded


def _cbor_head(major: int, value: int) -> bytes:
    """Shortest CBOR head, as dag-cbor requires."""
    if value < 24:
        return bytes([major << 5 | value])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | extra]) + value.to_bytes(size, "big")
    raise ValueError(f"CBOR value {value} too large")
