"""A `lethe up` federation survives kills under its supervisor (real processes, SIGKILL).

One federation, one fault after another: a node, anvil, the ServerApp and the SuperLink
are each killed as a crash would kill them; the supervisor brings each back within its
bound. Then forgets under fire: the owner killed before and right after its
certification, a non-owner killed mid-round, the API killed right after its 202; each
request completes by itself. Afterwards one more forget completes, every request
completed exactly once, and the audit of the whole history passes. A part that
crash-loops is left down after its restart budget.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from bench.faults import (
    DRILLS,
    KILLED_AT,
    child,
    healthy,
    kill_chain,
    kill_serverapp,
    node_unavailable_after,
    supervise_until,
)
from coordinator.health import STALE_AFTER_S
from launcher.federation import FederationSpec, LocalFederation
from launcher.supervisor import Supervisor
from node.sisa import SisaNode
from protocol.ledger import Ledger
from protocol.store import LocalStore
from verifier.audit import audit

pytestmark = pytest.mark.slow

SPEC = FederationSpec(
    nodes=3, slices=2, records_per_node=60, test_records=40, federation_id="lethe-faults"
)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    fed = LocalFederation(tmp_path_factory.mktemp("fed-faults"), SPEC, report=lambda _line: None)
    fed.up()
    try:
        fed.wait_rounds(SPEC.slices, timeout=600)
        yield fed
    finally:
        fed.stop()


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return []


@pytest.fixture(scope="module")
def durations() -> dict[str, float]:
    return {}


DEAD_NODE_SLACK_S = 3
"""Polling and a loaded machine on top of the SuperLink's 6 s (2 × the 3 s heartbeat)."""

# Generous: a forget round takes ~3 s on a quiet machine but 12–20 s under a load of 10.
BOUNDS_S = {
    # The owner is back within a second (after ≤ 20 s of a futile try); then one round.
    "owner_before_certification": 120,
    # The coordinator waits for the dead owner's train reply until the SuperLink counts it
    # offline (≤ 6 s, 2 × the 3 s heartbeat); the restarted owner re-sends what the
    # chain holds; then one round.
    "owner_after_certification": 120,
    # The same wait for the non-owner, then one round.
    "non_owner_mid_round": 120,
    "api_after_202": 90,
}


@pytest.fixture(scope="module")
def supervisor(federation: LocalFederation, lines: list[str]) -> Supervisor:
    return Supervisor(federation, report=lines.append)


def test_a_killed_node_is_restarted_and_rejoins(
    federation: LocalFederation, supervisor: Supervisor, lines: list[str]
) -> None:
    victim = child(federation, federation.nodes[1].config.name)
    victim.kill()
    supervise_until(supervisor, lambda: victim.alive() and healthy(federation), timeout=90)
    assert any(f"{victim.name} exited (code -9); restarted (restart 1 of 5" in x for x in lines)


def test_a_killed_chain_comes_back_with_its_history(
    federation: LocalFederation, supervisor: Supervisor, lines: list[str]
) -> None:
    devnet = federation.devnet
    url = devnet.rpc_url
    before = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=5
    ).json()["result"]
    time.sleep(0.5)  # the watcher has snapshotted the head
    kill_chain(federation)
    supervise_until(supervisor, lambda: devnet.running() and healthy(federation), timeout=60)
    assert devnet.rpc_url == url
    after = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=5
    ).json()["result"]
    assert int(after, 16) >= int(before, 16)
    assert any("anvil died; restarted from its snapshot" in x for x in lines)


def test_a_killed_serverapp_is_submitted_again(
    federation: LocalFederation, supervisor: Supervisor, lines: list[str]
) -> None:
    kill_serverapp(federation, supervisor)
    took = supervise_until(
        supervisor,
        lambda: any("ServerApp submitted again" in x for x in lines) and healthy(federation),
        timeout=STALE_AFTER_S + 90,
    )
    assert took >= STALE_AFTER_S - 3, "noticed by its silent heartbeat, not before"


def test_a_killed_superlink_is_restarted_and_nodes_and_serverapp_return(
    federation: LocalFederation, supervisor: Supervisor, lines: list[str]
) -> None:
    superlink = child(federation, "superlink")
    superlink.kill()  # its process group: the ServerApp it runs dies with it
    took = supervise_until(
        supervisor,
        lambda: (
            superlink.alive()
            and any("ServerApp submitted again (restart 2" in x for x in lines)
            and healthy(federation)
        ),
        timeout=180,
    )
    assert any("superlink exited (code -9); restarted (restart 1 of 5" in x for x in lines)
    nodes = [child(federation, n.config.name) for n in federation.nodes]
    assert all(n.alive() for n in nodes), "nodes outlive their SuperLink"
    assert took < 180


@pytest.mark.parametrize("drill", list(DRILLS))
def test_a_forget_survives_a_kill(
    federation: LocalFederation, supervisor: Supervisor, drill: str, durations: dict[str, float]
) -> None:
    """Owner killed before/after certifying, a non-owner mid-round, the API after its 202:
    the request completes by itself (no hand edit), within the bound of each."""
    durations[drill] = DRILLS[drill](federation, supervisor, f"drill-{drill}")
    assert durations[drill] < BOUNDS_S[drill], durations
    if drill == "non_owner_mid_round":
        # What the dead node cost the round: the wait until the SuperLink counted it
        # offline, at most 6 s (2 × the 3 s heartbeat of a local federation's nodes;
        # docs/rounds.md "Stragglers"). With Flower's 10 s minimum it was up to 20 s.
        waited = node_unavailable_after(federation, KILLED_AT[f"drill-{drill}"])
        assert waited is not None and waited <= 6 + DEAD_NODE_SLACK_S, waited


def test_a_forget_after_the_kills_completes_once_and_the_audit_passes(
    federation: LocalFederation, supervisor: Supervisor
) -> None:
    with SisaNode.open(federation.nodes[0].config.db) as node:
        record_id = node.store.record_ids()[5]
    federation.forget(record_id, request_id="faults-1")
    start = time.monotonic()
    while True:
        state = requests.get(f"{federation.api_url}/forget/faults-1", timeout=10).json()
        if state["state"] in ("completed", "failed"):
            break
        assert time.monotonic() - start < 300
        supervisor.check()
        time.sleep(0.5)
    assert state["state"] == "completed", state
    again = federation.forget(record_id)
    assert again["request_id"] == "faults-1", "one request per record, not a second forget"
    ledger = Ledger(
        federation.devnet.rpc_url,
        federation.deployment.address,
        deployment_block=federation.deployment.block_number,
    )
    report = audit(ledger, LocalStore(federation.workdir / "store"))
    assert report.ok, report.verdict()
    completed = [f for f in report.forgets if f.completed is not None]
    assert len(completed) == len(report.forgets) == 1 + len(DRILLS), report.verdict()


def test_a_crash_loop_is_left_down_after_its_budget(
    federation: LocalFederation, lines: list[str]
) -> None:
    clock = [0.0]
    strict = Supervisor(
        federation, max_restarts=2, window_s=60, report=lines.append, clock=lambda: clock[0]
    )
    api = child(federation, "api")
    for _ in range(3):
        api.kill()
        strict.check()
        clock[0] += 1
    assert not api.alive()
    assert "supervisor: api crashed 2 times in 60 s; leaving it down (see its log)" in lines
    clock[0] += 120  # the budget renews with the window
    strict.gave_up.clear()
    strict.check()
    assert api.alive()
