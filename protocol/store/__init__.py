"""Content stores: put bytes, get them back by CID (verified), locally or on any IPFS node."""

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from protocol.store.kubo import KuboStore, is_api_address
from protocol.store.local import LocalStore

STORE_ENV = "LETHE_STORE"
"""The one variable naming the content store: a blockstore folder or a Kubo RPC address."""
DEFAULT_DIR = Path(".lethe") / "blocks"

__all__ = [
    "DEFAULT_DIR",
    "STORE_ENV",
    "ContentStore",
    "KuboStore",
    "LocalStore",
    "open_store",
]


@runtime_checkable
class ContentStore(Protocol):
    """What the rest of Lethe needs from a store; both backends give the same CIDs.

    ``put`` stores and pins, so models and certificates survive a node's garbage
    collection; ``pin`` keeps content someone else added. ``get`` never returns
    bytes that do not match the CID: it raises :class:`~protocol.errors.StoreError`,
    as every method does when the content is absent or the backend unreachable.
    """

    def put(self, data: bytes) -> str: ...

    def get(self, cid: str) -> bytes: ...

    def has(self, cid: str) -> bool: ...

    def pin(self, cid: str) -> None: ...


def open_store(
    spec: str | None = None, *, data_dir: Path | None = None, timeout: float = 30.0
) -> ContentStore:
    """Open the store ``spec`` names, or the one the environment chooses.

    ``spec`` is an IPFS API address (``/ip4/127.0.0.1/tcp/5001`` or
    ``http://host:5001``) for :class:`KuboStore`, or a folder for
    :class:`LocalStore`. Without it, ``LETHE_STORE`` names one the same way, and
    otherwise ``.lethe/blocks`` under ``data_dir``
    (default: the working directory) is used. ``timeout`` bounds every Kubo call.
    """
    if not spec:
        spec = os.environ.get(STORE_ENV) or None
    if spec is None:
        return LocalStore((data_dir or Path.cwd()) / DEFAULT_DIR)
    if is_api_address(spec):
        return KuboStore(spec, timeout=timeout)
    return LocalStore(Path(spec))
