"""The embedded content store: a folder of IPFS blocks shared by the processes of one machine."""

import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from multiformats import CID

from protocol.cid import (
    DAG_PB,
    RAW,
    FileNode,
    block_matches,
    chunks,
    dag_blocks,
    decode_file_node,
    parse_cid,
)
from protocol.errors import StoreError
from protocol.store.car import car_chunks

_PINS = "pins"


class LocalStore:
    """Blocks of Kubo-identical DAGs, one file per block named by its CID.

    Every file is written to a temporary name and renamed into place, and a
    DAG's root is written after its leaves, so a reader in another process sees
    either nothing or a complete, hash-checked DAG. Because the blocks are the
    real ones, :meth:`export_car` produces an archive any IPFS node imports under
    the same CID.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def put(self, data: bytes) -> str:
        """Store ``data`` and pin it; return its CID."""
        cid = ""
        for cid, block in dag_blocks(chunks(data)):
            self._write_block(cid, block)
        self._mark_pinned(cid)
        return cid

    def get(self, cid: str) -> bytes:
        """Return the bytes under ``cid``, every block checked against its hash."""
        key = self._parse(cid)
        blocks = self._walk(key)
        _, root = next(blocks)
        if key.codec.name == RAW:
            return root
        node = _decode(key, root)
        parts = [node.data]
        for block_cid, block in blocks:
            parts.append(block if block_cid.codec.name == RAW else _decode(block_cid, block).data)
        data = b"".join(parts)
        if len(data) != node.filesize:
            raise StoreError(
                f"DAG {key} in {self.root} holds {len(data)} bytes, its root says {node.filesize}"
            )
        return data

    def has(self, cid: str) -> bool:
        """Tell whether every block of the DAG under ``cid`` is present."""
        key = self._parse(cid)
        pending = [key]
        while pending:
            current = pending.pop()
            if not self._path(current).is_file():
                return False
            if current.codec.name == DAG_PB:
                pending.extend(_links(current, self._read_block(current)))
        return True

    def pin(self, cid: str) -> None:
        """Mark ``cid`` as kept; the DAG must be complete here."""
        key = self._parse(cid)
        if not self.has(str(key)):
            raise StoreError(f"cannot pin {key}: it is not (completely) in {self.root}")
        self._mark_pinned(str(key))

    def pinned(self, cid: str) -> bool:
        """Tell whether ``cid`` was pinned (``put`` pins what it stores)."""
        return self._pin_marker(str(self._parse(cid))).is_file()

    def export_car(self, cid: str) -> bytes:
        """Return a CAR v1 archive holding the verified DAG under ``cid``."""
        return b"".join(car_chunks(str(self._parse(cid)), self._unique_blocks(cid)))

    def write_car(self, cid: str, path: Path) -> None:
        """Write the CAR v1 archive of ``cid`` to ``path`` atomically."""
        key = str(self._parse(cid))
        _atomic_write(Path(path), car_chunks(key, self._unique_blocks(key)))

    def _unique_blocks(self, cid: str) -> Iterator[tuple[str, bytes]]:
        seen: set[str] = set()
        for block_cid, block in self._walk(self._parse(cid)):
            if str(block_cid) not in seen:
                seen.add(str(block_cid))
                yield str(block_cid), block

    def _walk(self, root: CID) -> Iterator[tuple[CID, bytes]]:
        """Yield the DAG's verified blocks depth-first, in file order."""
        pending = [root]
        while pending:
            current = pending.pop()
            block = self._read_block(current)
            yield current, block
            if current.codec.name == DAG_PB:
                pending.extend(reversed(_links(current, block)))

    def _read_block(self, cid: CID) -> bytes:
        path = self._path(cid)
        try:
            block = path.read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"{cid} is not in the local store {self.root}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read block {cid} from {self.root}: {exc}") from exc
        try:
            matches = block_matches(cid, block)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        if not matches:
            raise StoreError(f"block {cid} in {self.root} is corrupted: its bytes do not match it")
        return block

    def _write_block(self, cid: str, block: bytes) -> None:
        path = self.root / cid
        try:
            if path.read_bytes() == block:
                return
        except FileNotFoundError:
            pass
        _atomic_write(path, [block])

    def _parse(self, cid: str) -> CID:
        try:
            key = parse_cid(cid)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        if key.codec.name not in (RAW, DAG_PB):
            raise StoreError(f"{key} is a {key.codec.name} CID; stores hold raw and dag-pb files")
        return key

    def _path(self, cid: CID) -> Path:
        return self.root / str(cid)

    def _pin_marker(self, cid: str) -> Path:
        return self.root / _PINS / cid

    def _mark_pinned(self, cid: str) -> None:
        marker = self._pin_marker(cid)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def _decode(cid: CID, block: bytes) -> FileNode:
    try:
        return decode_file_node(block)
    except ValueError as exc:
        raise StoreError(f"block {cid} is not a UnixFS file node: {exc}") from exc


def _links(cid: CID, block: bytes) -> list[CID]:
    try:
        return [parse_cid(link) for link in _decode(cid, block).links]
    except ValueError as exc:
        raise StoreError(f"block {cid} links to an invalid CID: {exc}") from exc


def _atomic_write(path: Path, pieces: Iterable[bytes]) -> None:
    """Write through a unique temporary file in the same folder, fsync, then rename.

    ``os.replace`` is atomic, so concurrent writers of the same block never leave
    a torn file, and a reader never sees a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as out:
            for piece in pieces:
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
