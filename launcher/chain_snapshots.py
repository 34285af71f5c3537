"""Crash-safe snapshots of the dev chain, taken over JSON-RPC and written atomically.

anvil's own ``--state`` file is rewritten in place: a kill that lands during the write
leaves it empty or cut short, and anvil then refuses to start — the whole dev chain is
gone. So Lethe never lets anvil write its state. A watcher thread asks anvil for its state
(``anvil_dumpState``: every block, transaction, receipt and account) each time the chain
head moves, and writes it with :func:`protocol.files.write_atomic`, keeping the snapshot before
it. A restart loads the newest snapshot that parses (``--load-state``). A kill of anvil
loses at most the blocks mined since the last snapshot (one poll interval); the
coordinator reconciles its database with the chain it finds. Production uses a real
chain, which has its own durability; none of this applies there.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from pathlib import Path

import requests

from protocol.files import previous_path, write_atomic

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("accounts", "blocks", "best_block_number")


class SnapshotError(Exception):
    """No snapshot of the dev chain could be read."""


def _rpc(rpc_url: str, method: str, timeout: float) -> object:
    reply = requests.post(
        rpc_url,
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": []},
        timeout=timeout,
    )
    reply.raise_for_status()
    body = reply.json()
    if "result" not in body:
        raise ValueError(f"{method}: {body.get('error')}")
    return body["result"]


def parse_snapshot(data: bytes) -> dict[str, object]:
    """The state a snapshot holds; ``ValueError`` when it is cut short or not anvil's."""
    state = json.loads(data)
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise ValueError("not an anvil state snapshot")
    return state


def dump(rpc_url: str, timeout: float = 10.0) -> bytes:
    """anvil's whole state as the JSON that ``--load-state`` reads."""
    result = _rpc(rpc_url, "anvil_dumpState", timeout)
    if not isinstance(result, str) or not result.startswith("0x"):
        raise ValueError("anvil_dumpState returned no bytes")
    raw = bytes.fromhex(result[2:])
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    parse_snapshot(data)
    return data


def save(rpc_url: str, path: Path) -> int:
    """Snapshot the chain at ``rpc_url`` into ``path`` (atomically); its block height."""
    data = dump(rpc_url)
    write_atomic(path, data, mode=0o644, keep_previous=True)
    height = parse_snapshot(data)["best_block_number"]
    return int(str(height), 0) if isinstance(height, str) else int(str(height))


def usable(path: Path) -> Path | None:
    """The newest readable snapshot: ``path``, else the one it replaced; None if neither exists.

    Raises :class:`SnapshotError` when snapshots exist but none parses: starting an empty
    chain then would silently drop every round and forget on record.
    """
    broken = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            parse_snapshot(candidate.read_bytes())
        except (OSError, ValueError) as exc:
            logger.warning(
                "chain snapshot %s is unreadable (%s); trying the one before", candidate, exc
            )
            broken.append(f"{candidate}: {exc}")
            continue
        return candidate
    if broken:
        raise SnapshotError("no readable chain snapshot: " + "; ".join(broken))
    return None


class SnapshotWatcher:
    """Snapshot the chain whenever its head moves, from a daemon thread, until stopped."""

    def __init__(self, rpc_url: str, path: Path, *, poll_s: float = 0.2) -> None:
        self.rpc_url = rpc_url
        self.path = path
        self.poll_s = poll_s
        self.saved_height = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chain-snapshots", daemon=True)

    def start(self) -> SnapshotWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                head = int(str(_rpc(self.rpc_url, "eth_blockNumber", 2.0)), 16)
                if head != self.saved_height:
                    self.saved_height = save(self.rpc_url, self.path)
            except (requests.RequestException, ValueError, OSError) as exc:
                # anvil stopping or killed: the last snapshot stands.
                logger.debug("chain snapshot skipped: %s", exc)

    def stop(self, *, final: bool) -> None:
        """Stop watching; with ``final`` take one last snapshot (anvil must still answer)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        if final:
            try:
                self.saved_height = save(self.rpc_url, self.path)
            except (requests.RequestException, ValueError, OSError) as exc:
                logger.warning("final chain snapshot failed (the previous one stands): %s", exc)
