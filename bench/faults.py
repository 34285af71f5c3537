"""Fault benchmark: how long a `lethe up` federation takes to recover from each kill.

``python -m bench.faults`` (``make bench-faults``) starts a local federation of 3 nodes,
waits for its initial rounds, then kills one part at a time with SIGKILL — a node, anvil,
the ServerApp, the SuperLink, the API — and runs the supervisor of `lethe up` until
``GET /health`` answers 200 again. It then sends one forget request and times it to
``completed``, and audits the whole history. Writes ``bench/results/faults.json``:

- ``recovery_s``: per fault, seconds from the kill to a healthy federation; for the
  drills around a forget request (``DRILLS``: the owner killed before and after its
  certification, a non-owner killed mid-round, the API killed right after its 202),
  seconds from the kill to the request's ``completed``;
- ``forget_after_faults_s``: the forget request's time to ``completed``;
- ``audit_passed``; ``loadavg_1min_before``/``_after`` (other load on the machine).

The ServerApp is noticed by its silent heartbeat, so its recovery includes the 15 s
staleness bound by design. The kill helpers are shared with ``tests/test_faults.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests

from launcher.federation import FederationSpec, LocalFederation
from launcher.processes import Child
from launcher.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORKDIR = ROOT / ".lethe" / "bench-faults"
SPEC = FederationSpec(
    nodes=3, slices=2, records_per_node=60, test_records=40, federation_id="lethe-faults"
)


def child(federation: LocalFederation, name: str) -> Child:
    """The started process called ``name`` (a node's name, ``superlink``, ``api``)."""
    return next(c for c in federation.group.children if c.name == name)


def healthy(federation: LocalFederation) -> bool:
    """Whether ``GET /health`` answers 200 (every part up, enough nodes connected)."""
    try:
        return requests.get(f"{federation.api_url}/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def serverapp_pids() -> list[int]:
    """Processes running Flower's ServerApp (``flwr-serverapp``), started by the SuperLink."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"flwr-serverapp" in cmdline:
                pids.append(int(entry.name))
    return pids


def kill_chain(federation: LocalFederation) -> None:
    """SIGKILL anvil and wait until it is gone (a kill lands asynchronously)."""
    devnet = federation.devnet
    os.kill(devnet.pid, signal.SIGKILL)
    while devnet.running():
        time.sleep(0.05)


def kill_serverapp(federation: LocalFederation, supervisor: Supervisor) -> None:
    """SIGKILL every ServerApp process; its start-up grace is long over."""
    pids = serverapp_pids()
    if not pids:
        raise RuntimeError("no ServerApp process found")
    supervisor.serverapp_submitted -= 3600
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def supervise_until(supervisor: Supervisor, done: Callable[[], bool], timeout: float) -> float:
    """Run the supervisor as `lethe up` does until ``done()``; seconds it took."""
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not recovered within {timeout:.0f} s")
        supervisor.check()
        time.sleep(0.5)
    return time.monotonic() - start


def _record_of(federation: LocalFederation, index: int, nth: int) -> str:
    """The ``nth`` record id held by node ``index`` (node indices from 0)."""
    from node.sisa import SisaNode

    with SisaNode.open(federation.nodes[index].config.db) as node:
        return node.store.record_ids()[nth]


def _ledger(federation: LocalFederation) -> Any:
    from protocol.ledger import Ledger

    return Ledger(
        federation.devnet.rpc_url,
        federation.deployment.address,
        deployment_block=federation.deployment.block_number,
    )


def _request(federation: LocalFederation, request_id: str) -> Any:
    """The request in the coordinator's queue (read directly: the API may be down)."""
    if federation.db is None:
        raise RuntimeError("the federation was not prepared")
    return federation.db.get_forget(request_id)


def _state(federation: LocalFederation, request_id: str) -> str:
    return str(_request(federation, request_id).state)


def until_completed(
    federation: LocalFederation, supervisor: Supervisor, request_id: str, timeout: float = 240
) -> float:
    """Supervise until the request is completed; seconds it took (failed is an error)."""
    took = supervise_until(
        supervisor, lambda: _state(federation, request_id) in ("completed", "failed"), timeout
    )
    request = _request(federation, request_id)
    if request.state != "completed":
        raise RuntimeError(f"request {request_id} ended {request.state}: {request.reason}")
    return took


def drill_owner_before_certification(
    federation: LocalFederation, supervisor: Supervisor, request_id: str
) -> float:
    """Kill the owner, send a forget for its record; once the request is on chain (it
    cannot be certified yet), let the supervisor restart the owner. Kill → completed."""
    owner = child(federation, federation.nodes[0].config.name)
    owner.kill()
    start = time.monotonic()
    federation.forget(_record_of(federation, 0, 11), request_id=request_id)
    deadline = start + 60
    while _state(federation, request_id) == "received":  # the supervisor is held off
        if time.monotonic() > deadline:
            raise TimeoutError(f"{request_id} was never put on chain")
        time.sleep(0.1)
    until_completed(federation, supervisor, request_id)
    return time.monotonic() - start


def drill_owner_after_certification(
    federation: LocalFederation, supervisor: Supervisor, request_id: str
) -> float:
    """Send a forget; kill the owner the moment its certification is on chain (before its
    train reply reaches the coordinator). Kill → completed."""
    from protocol.hashing import keccak256
    from protocol.ledger import ForgetState

    ledger = _ledger(federation)
    federation.forget(_record_of(federation, 1, 12), request_id=request_id)
    chain_id = keccak256(request_id.encode())
    deadline = time.monotonic() + 120
    while ledger.forget_state(chain_id).state < ForgetState.CERTIFIED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{request_id} was never certified")
        supervisor.check()
        time.sleep(0.02)
    child(federation, federation.nodes[1].config.name).kill()
    return until_completed(federation, supervisor, request_id)


def drill_non_owner_mid_round(
    federation: LocalFederation, supervisor: Supervisor, request_id: str
) -> float:
    """Send a forget for node 1's record; kill node 3 as soon as the round starts (the
    request is dispatched). Kill → completed."""
    federation.forget(_record_of(federation, 0, 13), request_id=request_id)
    deadline = time.monotonic() + 120
    while _state(federation, request_id) == "received":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{request_id} was never put on chain")
        supervisor.check()
        time.sleep(0.02)
    KILLED_AT[request_id] = time.time()
    child(federation, federation.nodes[2].config.name).kill()
    return until_completed(federation, supervisor, request_id)


KILLED_AT: dict[str, float] = {}
"""Wall-clock time of each drill's kill, by request id (to read the coordinator's log)."""


def node_unavailable_after(federation: LocalFederation, since: float) -> float | None:
    """Seconds from ``since`` to the coordinator's first "Node Unavailable" drop after it
    (the SuperLink counting a killed node offline), None if none was logged."""
    import datetime

    log = federation.coordinator_config_path.with_name("coordinator.log")
    for line in log.read_text(errors="replace").splitlines():
        if "Node Unavailable" not in line:
            continue
        stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        at = stamp.astimezone().timestamp()
        if at >= since:
            return at - since
    return None


def drill_api_after_202(
    federation: LocalFederation, supervisor: Supervisor, request_id: str
) -> float:
    """POST a forget, kill `lethe api` the moment its 202 arrives. Kill → completed (the
    request is in the queue; the ServerApp serves it while the API is restarted)."""
    reply = federation.forget(_record_of(federation, 2, 14), request_id=request_id)
    child(federation, "api").kill()
    if reply.get("state") != "received":
        raise RuntimeError(f"expected a new request, got {reply}")
    took = until_completed(federation, supervisor, request_id)
    return took + supervise_until(supervisor, lambda: healthy(federation), 60)


DRILLS: dict[str, Callable[[LocalFederation, Supervisor, str], float]] = {
    "owner_before_certification": drill_owner_before_certification,
    "owner_after_certification": drill_owner_after_certification,
    "non_owner_mid_round": drill_non_owner_mid_round,
    "api_after_202": drill_api_after_202,
}
"""Faults around a forget request: each ends with the request completed, seconds from the
kill to ``completed`` (the API's also until it answers again)."""


def _handled_and_healthy(
    federation: LocalFederation, lines: list[str], handled: str
) -> Callable[[], bool]:
    """True once a new supervisor line contains ``handled`` and the federation is healthy."""
    seen = sum(handled in line for line in lines)
    return lambda: sum(handled in line for line in lines) > seen and healthy(federation)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="emptied first")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    federation = LocalFederation(args.workdir, SPEC, report=lambda line: print(f"  {line}"))
    load_before = os.getloadavg()[0]
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        print(line)

    supervisor = Supervisor(federation, report=report)
    recovery: dict[str, float] = {}
    try:
        federation.up()
        federation.wait_rounds(SPEC.slices, timeout=900)
        supervise_until(supervisor, lambda: healthy(federation), timeout=120)
        victim = federation.nodes[1].config.name
        # Each fault: how to cause it, and the supervisor's line that shows it was handled.
        faults: dict[str, tuple[Callable[[], None], str]] = {
            "node": (lambda: child(federation, victim).kill(), f"{victim} exited"),
            "chain": (lambda: kill_chain(federation), "anvil died"),
            "serverapp": (
                lambda: kill_serverapp(federation, supervisor),
                "ServerApp submitted again",
            ),
            "superlink": (
                lambda: child(federation, "superlink").kill(),
                "ServerApp submitted again",
            ),
            "api": (lambda: child(federation, "api").kill(), "api exited"),
        }
        for name, (kill, handled) in faults.items():
            recovered = _handled_and_healthy(federation, lines, handled)
            kill()
            recovery[name] = round(supervise_until(supervisor, recovered, 300), 2)
            print(f"{name}: recovered in {recovery[name]:.1f} s")
        for name, drill in DRILLS.items():
            recovery[name] = round(drill(federation, supervisor, f"bench-{name}"), 2)
            print(f"{name}: request completed {recovery[name]:.1f} s after the kill")
        from node.sisa import SisaNode

        with SisaNode.open(federation.nodes[0].config.db) as node:
            record_id = node.store.record_ids()[5]
        federation.forget(record_id, request_id="bench-faults-1")
        final: dict[str, object] = {}

        def done() -> bool:
            final.update(
                requests.get(f"{federation.api_url}/forget/bench-faults-1", timeout=10).json()
            )
            return final["state"] in ("completed", "failed")

        forget_s = supervise_until(supervisor, done, 300)
        from protocol.ledger import Ledger
        from protocol.store import LocalStore
        from verifier.audit import audit

        ledger = Ledger(
            federation.devnet.rpc_url,
            federation.deployment.address,
            deployment_block=federation.deployment.block_number,
        )
        verdict = audit(ledger, LocalStore(federation.workdir / "store"))
        completed_once = len([f for f in verdict.forgets if f.completed is not None]) == 1 + len(
            DRILLS
        )
    finally:
        federation.stop()
    results = {
        "recovery_s": recovery,
        "forget_after_faults_s": round(forget_s, 2),
        "forget_state": final["state"],
        "audit_passed": verdict.ok,
        "every_request_completed_once": completed_once,
        "supervisor_lines": lines,
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if verdict.ok and completed_once and final["state"] == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
