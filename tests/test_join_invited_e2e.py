"""End to end, with real processes: a fourth organisation joins a running federation with
exactly three commands, and is in the next finalized round.

1. the owner: ``lethe invite``;
2. the newcomer: ``lethe-node join --invite FILE --csv FILE`` (keys, ingest, stake,
   admission request, then it waits and becomes the node);
3. the owner: ``lethe admit REQUEST``.

The measured time runs from the newcomer's command to the finalization of the first
round it answered (a forget request's round: a running federation runs no other); it is
printed, not asserted (targets live in benchmarks).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import main as lethe
from launcher.devnet import dev_accounts
from launcher.federation import FederationSpec, LocalFederation, _env
from node.sisa import SisaNode
from node.store import load_default
from protocol.hashing import keccak256

pytestmark = pytest.mark.slow

SPEC = FederationSpec(
    nodes=3, slices=1, records_per_node=40, test_records=40, federation_id="lethe-invited"
)
BIN = Path(sys.executable).parent


def newcomer_csv(path: Path) -> None:
    """Records of the default dataset no other node holds (as ``admit_node`` picks them)."""
    held = {
        r.id
        for i in range(1, SPEC.nodes + 1)
        for r in load_default((i, SPEC.nodes), limit=SPEC.records_per_node).train
    }
    pool = [r for r in load_default().train if r.id not in held]
    pool.sort(key=lambda r: keccak256(b"lethe.newcomer.v1\x00" + r.id.encode()))
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text", "label"])
        writer.writerows([r.id, r.text, r.label] for r in pool[: SPEC.records_per_node])


def test_a_newcomer_joins_with_three_commands_and_is_in_the_next_round(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", SPEC, report=lambda _line: None)
    fed.up()
    try:
        fed.wait_rounds(SPEC.slices, timeout=600)
        workdir = str(fed.workdir)
        records = tmp_path / "records.csv"
        newcomer_csv(records)
        key_file = tmp_path / "newcomer.key"  # a funded account: its stake is paid from it
        key_file.write_text(dev_accounts(SPEC.nodes + 3)[SPEC.nodes + 2].private_key)
        home = tmp_path / "newcomer"

        invited = CliRunner().invoke(
            lethe, ["invite", "--workdir", workdir, "--out", str(tmp_path / "invitation.json")]
        )
        assert invited.exit_code == 0, invited.output

        started = time.monotonic()
        command = [str(BIN / "lethe-node"), "join", "--invite", str(tmp_path / "invitation.json"),
                   "--csv", str(records), "--home", str(home), "--name", "node-4",
                   "--eth-key-file", str(key_file)]  # fmt: skip
        join = fed.group.start(
            "newcomer",
            command,
            env=_env(
                FLWR_HOME=str(home / "flwr"),
                LETHE_SUPERNODE_HEARTBEAT_S="3",
                LETHE_SUPERNODE_POLL_S="0.1",
            ),
        )
        request = home / "admission-request.json"
        deadline = time.monotonic() + 300
        while not request.exists():
            assert join.alive(), join.log.read_text()[-3000:]
            assert time.monotonic() < deadline, join.log.read_text()[-3000:]
            time.sleep(0.5)
        address = json.loads(request.read_text())["address"]

        admitted = CliRunner().invoke(lethe, ["admit", str(request), "--workdir", workdir])
        assert admitted.exit_code == 0, admitted.output
        assert "record key sealed" in admitted.output
        again = CliRunner().invoke(lethe, ["admit", str(request), "--workdir", workdir])
        assert again.exit_code == 0, again.output  # the same request again: idempotent

        # The forget goes out once the newcomer's share key is on chain: a forget certified
        # under the old roster epoch, whose owner then retrains for the new one, never
        # completes (the certified model is gone; see the README's known limits).
        from protocol.ledger import Ledger

        chain = Ledger.from_deployment(fed.deployment)
        while address.lower() not in {e.address.lower() for e in chain.roster() if e.key}:
            assert join.alive(), join.log.read_text()[-3000:]
            assert time.monotonic() < deadline + 300, "the newcomer never registered its key"
            time.sleep(0.5)
        with SisaNode.open(fed.nodes[0].config.db) as node:
            record_id = node.store.record_ids()[3]
        fed.forget(record_id, request_id="invited-forget-1")
        final = fed.follow("invited-forget-1", timeout=600)
        assert final["state"] == "completed", final
        assert fed.db is not None
        first = next(
            r
            for r in fed.db.list_rounds()
            if r["state"] == "finalized"
            and address.lower() in {a.lower() for a in r["responders"]["share"]}
        )
        took = time.monotonic() - started
        assert (home / "record.key").read_bytes() == (
            fed.workdir / "coordinator" / "record.key"
        ).read_bytes()
        print(f"\nnewcomer's first command to its first finalized round (round "
              f"{first['round']}): {took:.1f} s")  # fmt: skip
    finally:
        fed.stop()
