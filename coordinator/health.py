"""What ``GET /health`` and ``lethe status`` report: can the federation make progress now?

The API runs in its own process, so it cannot see the ServerApp, the SuperLink or the
nodes directly. The ServerApp therefore writes a heartbeat into the coordinator database
(:class:`Heartbeat`: every ``HEARTBEAT_S``, from a thread, so a long stage does not look
like a dead loop): when it last ran, what it is doing and since when, and which nodes the
SuperLink lists as connected — or the error the SuperLink gave. The API reads that and
probes the chain and the content store itself (:func:`probe`).

The federation can make progress when the ServerApp's heartbeat is fresh, the SuperLink
answers, at least ``min_nodes`` nodes are connected, the chain answers and the store
answers; otherwise the report says ``down`` and names what is missing (HTTP 503). Forget
requests held back by an offline owner are listed under ``forgets_waiting`` (with the
ServerApp's step saying how long its forget rounds back off); they are not a 503.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from coordinator.queue import OPEN_STATES, CoordinatorDB
from protocol.cid import cid_of
from protocol.errors import LetheError
from protocol.store import ContentStore

HEARTBEAT_KEY = "heartbeat"
HEARTBEAT_S = 2.0
STALE_AFTER_S = 15.0
"""A heartbeat older than this means the ServerApp is gone (or stuck outside Python)."""
_PROBE_CID = cid_of(b"lethe health probe")


@dataclass
class HeartbeatState:
    """What the ServerApp loop last said about itself and the SuperLink."""

    at: float
    step: str
    step_since: float
    nodes: list[int] = field(default_factory=list)
    superlink_error: str | None = None


class Heartbeat:
    """The ServerApp's side: write :class:`HeartbeatState` every ``interval_s`` until stopped.

    ``node_ids`` asks the SuperLink which nodes are connected (``Grid.get_node_ids``); the
    loop calls :meth:`step` as it moves between initial rounds, forget rounds and idling.
    """

    def __init__(
        self,
        db: CoordinatorDB,
        node_ids: Callable[[], Iterable[int]],
        *,
        interval_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.node_ids = node_ids
        self.interval_s = interval_s
        self.clock = clock
        now = clock()
        self._state = HeartbeatState(at=now, step="starting", step_since=now)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lethe-heartbeat", daemon=True)

    def step(self, name: str) -> None:
        """Record what the loop does now (shown with how long it has been doing it)."""
        with self._lock:
            if name != self._state.step:
                self._state.step, self._state.step_since = name, self.clock()

    def beat(self) -> None:
        """Ask the SuperLink for its nodes and write one heartbeat."""
        try:
            nodes, error = sorted(self.node_ids()), None
        except Exception as exc:  # gRPC/HTTP errors from the SuperLink, untyped
            nodes, error = [], f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._state.at = self.clock()
            self._state.nodes, self._state.superlink_error = nodes, error
            data = json.dumps(asdict(self._state), sort_keys=True)
        self.db.set_control(HEARTBEAT_KEY, data)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            # A locked database must not end the heartbeat for good.
            with contextlib.suppress(Exception):
                self.beat()

    def start(self) -> Heartbeat:
        """Beat once now (``/health`` sees the ServerApp at once), then every interval."""
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.step("stopped")
        self.beat()


def read_heartbeat(db: CoordinatorDB) -> HeartbeatState | None:
    """The ServerApp's last heartbeat, or None if it never wrote one."""
    raw = db.get_control(HEARTBEAT_KEY)
    if raw is None:
        return None
    try:
        return HeartbeatState(**json.loads(raw))
    except (ValueError, TypeError):
        return None


def _chain_head(rpc_url: str, timeout: float) -> tuple[int | None, str | None]:
    try:
        reply = requests.post(
            rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            timeout=timeout,
        )
        return int(reply.json()["result"], 16), None
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _store_error(store: ContentStore) -> str | None:
    try:
        store.has(_PROBE_CID)
    except LetheError as exc:
        return str(exc)
    return None


def probe(
    db: CoordinatorDB,
    *,
    rpc_url: str,
    store: ContentStore,
    min_nodes: int,
    now: float | None = None,
    timeout: float = 2.0,
) -> dict[str, Any]:
    """The federation's health, part by part; ``status`` is ``ok`` or ``down`` with reasons."""
    now = time.time() if now is None else now
    problems: list[str] = []
    beat = read_heartbeat(db)
    if beat is None:
        serverapp: dict[str, Any] = {"ok": False, "error": "no heartbeat: the ServerApp never ran"}
    else:
        age = now - beat.at
        serverapp = {
            "ok": age <= STALE_AFTER_S and beat.step != "stopped",
            "last_heartbeat_s_ago": round(age, 1),
            "step": beat.step,
            "step_for_s": round(now - beat.step_since, 1),
        }
        if beat.step == "stopped":
            serverapp["error"] = "the ServerApp stopped"
        elif age > STALE_AFTER_S:
            serverapp["error"] = f"no heartbeat for {age:.0f} s: the ServerApp is down"
    if not serverapp["ok"]:
        problems.append(f"serverapp: {serverapp['error']}")
    fresh = beat is not None and serverapp["ok"]
    connected = set(beat.nodes) if fresh and beat is not None else set()
    superlink: dict[str, Any] = {"ok": fresh and beat is not None and not beat.superlink_error}
    if beat is not None and beat.superlink_error:
        superlink["error"] = beat.superlink_error
    if fresh and not superlink["ok"]:
        problems.append(f"superlink: {superlink.get('error')}")
    nodes = [
        {
            "address": node["address"],
            "flower_node_id": node.get("flower_node_id"),
            "connected": node.get("flower_node_id") in connected,
            "last_round": node.get("last_round"),
        }
        for node in db.list_nodes()
    ]
    if fresh and superlink["ok"] and len(connected) < min_nodes:
        problems.append(f"nodes: {len(connected)} connected, a round needs {min_nodes}")
    head, chain_error = _chain_head(rpc_url, timeout)
    chain: dict[str, Any] = {"ok": chain_error is None, "head": head}
    if chain_error:
        chain["error"] = chain_error
        problems.append(f"chain: {chain_error}")
    store_error = _store_error(store)
    content_store: dict[str, Any] = {"ok": store_error is None}
    if store_error:
        content_store["error"] = store_error
        problems.append(f"store: {store_error}")
    # Not a fault of the federation, but why these requests do not move (shown, not 503).
    waiting = [
        {"request_id": r.request_id, "state": r.state, "reason": r.reason}
        for r in db.list_forgets(OPEN_STATES)
        if r.reason and r.reason.startswith("waiting:")
    ]
    return {
        "status": "down" if problems else "ok",
        "problems": problems,
        "duplicate_records": db.duplicate_records(),
        "serverapp": serverapp,
        "superlink": superlink,
        "connected_nodes": len(connected),
        "min_nodes": min_nodes,
        "nodes": nodes,
        "chain": chain,
        "store": content_store,
        "forgets_waiting": waiting,
    }


def public_view(report: dict[str, Any]) -> dict[str, Any]:
    """What ``/health`` tells a caller without the token: counts, never which node (its
    address or Flower id) is connected nor which records several nodes hold."""
    shown = dict(report)
    nodes = shown.pop("nodes", None)
    if isinstance(nodes, list):
        shown["known_nodes"] = len(nodes)
    duplicates = shown.get("duplicate_records")
    if isinstance(duplicates, list):
        shown["duplicate_records"] = len(duplicates)
    return shown
