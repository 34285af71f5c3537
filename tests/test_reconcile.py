"""After a crash or a lost block the queue follows the chain, never the other way round.

Real anvil: ``evm_snapshot``/``evm_revert`` drop the newest blocks exactly as a dev chain
restarted from an older snapshot does; the queue is real SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from coordinator.queue import CoordinatorDB
from coordinator.reconcile import reconcile
from protocol.hashing import keccak256
from tests.records_proofs import finalize_next_round, request_committed

if TYPE_CHECKING:
    from launcher.devnet import Devnet
    from tests.chain_fixtures import Federation

pytest_plugins = ["tests.chain_fixtures"]

COMMITMENT = "0x" + "ab" * 32


def rpc(chain: Devnet, method: str, params: list[Any] | None = None) -> Any:
    body = requests.post(
        chain.rpc_url,
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []},
        timeout=5,
    ).json()
    return body["result"]


def open_request(db: CoordinatorDB, federation: Federation, request_id: str) -> None:
    """Queue a request and open it on chain naming node 0, as the coordinator does."""
    db.submit_forget("rec-1", COMMITMENT, request_id)
    if not federation.owner.last_round():
        finalize_next_round(federation)
    request_committed(
        federation,
        keccak256(request_id.encode()),
        bytes.fromhex(COMMITMENT[2:]),
        federation.nodes[0],
        federation.node_keys[0],
    )
    assert db.advance_forget(request_id, "received", "dispatched")


def test_a_request_lost_with_its_block_goes_back_to_received(
    tmp_path: Path, devnet: Devnet, federation: Federation
) -> None:
    db = CoordinatorDB(tmp_path / "q.sqlite")
    snapshot = rpc(devnet, "evm_snapshot")
    open_request(db, federation, "dsr-lost")
    assert rpc(devnet, "evm_revert", [snapshot]) is True
    moves = reconcile(db, federation.coordinator, report=lambda _line: None)
    assert moves == [("dsr-lost", "dispatched", "received")]
    request = db.get_forget("dsr-lost")
    assert request.state == "received"
    assert request.reason == "reconciled with the chain: it holds this request as none"


def test_a_certification_lost_with_its_block_goes_back_to_dispatched(
    tmp_path: Path, devnet: Devnet, federation: Federation
) -> None:
    db = CoordinatorDB(tmp_path / "q.sqlite")
    open_request(db, federation, "dsr-cert")
    snapshot = rpc(devnet, "evm_snapshot")
    federation.nodes[0].certify_forget(keccak256(b"dsr-cert"), "bafkcert", b"\x01" * 32)
    db.advance_forget(
        "dsr-cert", "dispatched", "certified", certificate_cid="bafkcert", new_model_hash="0x01"
    )
    assert rpc(devnet, "evm_revert", [snapshot]) is True
    assert reconcile(db, federation.coordinator, report=lambda _line: None) == [
        ("dsr-cert", "certified", "dispatched")
    ]
    assert db.get_forget("dsr-cert").state == "dispatched"


def test_a_queue_that_agrees_with_the_chain_is_left_alone(
    tmp_path: Path, federation: Federation
) -> None:
    db = CoordinatorDB(tmp_path / "q.sqlite")
    open_request(db, federation, "dsr-ok")
    federation.nodes[0].certify_forget(keccak256(b"dsr-ok"), "bafkcert", b"\x01" * 32)
    db.advance_forget("dsr-ok", "dispatched", "certified", certificate_cid="bafkcert")
    assert reconcile(db, federation.coordinator, report=lambda _line: None) == []
    assert db.get_forget("dsr-ok").state == "certified"
