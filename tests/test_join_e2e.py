"""End to end, with real processes: a participant admitted to a running federation is in
its next round.

Specification: after the initial rounds of three nodes, the owner admits a fourth (staked,
with records no other node holds, its share key registered, its SuperNode connected). The
next round (a forget request's: a running federation runs no other) is the first of the
new roster epoch: every node retrains for it, all four share, the round finalizes with the
newcomer's approval, the request completes, and the audit of the whole history passes.
"""

from pathlib import Path

import pytest

from launcher.federation import FederationSpec, LocalFederation
from node.sisa import SisaNode
from protocol.ledger import Ledger
from protocol.store import LocalStore
from verifier.audit import audit

pytestmark = pytest.mark.slow

SPEC = FederationSpec(
    nodes=3, slices=2, records_per_node=60, test_records=40, federation_id="lethe-join"
)


def test_a_node_admitted_to_a_running_federation_is_in_the_next_round(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", SPEC, report=lambda _line: None)
    fed.up()
    try:
        initial = fed.wait_rounds(SPEC.slices, timeout=600)
        assert all(len(r["responders"]["share"]) == 3 for r in initial)
        newcomer = fed.admit_node()
        with SisaNode.open(fed.nodes[0].config.db) as node:
            record_id = node.store.record_ids()[5]
        fed.forget(record_id, request_id="join-forget-1")
        final = fed.follow("join-forget-1", timeout=300)
        assert final["state"] == "completed", final
        assert fed.db is not None
        info = fed.db.get_round(final["round"])
        assert info["state"] == "finalized"
        everyone = {n.address.lower() for n in fed.nodes}
        assert len(everyone) == 4
        assert {a.lower() for a in info["responders"]["share"]} == everyone
        assert newcomer.address in info["approvals"]
        ledger = Ledger(
            fed.devnet.rpc_url, fed.deployment.address, deployment_block=fed.deployment.block_number
        )
        report = audit(ledger, LocalStore(fed.workdir / "store"))
        assert report.ok, report.verdict()
    finally:
        fed.stop()
