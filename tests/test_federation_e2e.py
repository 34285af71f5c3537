"""End to end, with real processes on 127.0.0.1: anvil, Flower SuperLink and SuperNodes,
the coordinator API and ServerApp, forget requests over HTTP.

Specifications:
- after a forget, the finalized global model equals, byte for byte, the global model of a
  federation trained from scratch without that record (same seeds);
- a node killed after the share stage does not stop the round while ≥ t nodes remain;
- a node alive but silent after the share stage (its app hung, its SuperNode beating) costs
  the round seconds, not the 30 s stage timeout: the stage stops waiting soon after the
  others answered (docs/rounds.md "Stragglers");
- a foreign app that calls itself ``lethe/lethe``, submitted with ``flwr run``, never runs
  on a node: its ClientApp reads nothing, nodes answer with their own ClientApp;
- the chain holds RoundFinalized, ForgetCertified and ForgetCompleted for the request.
"""

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from launcher.federation import FederationSpec, LocalFederation
from node.sisa import SisaNode
from protocol.certificate import Certificate
from protocol.hashing import keccak256
from protocol.ledger import Ledger
from protocol.messages import AGGREGATE, SHARE
from protocol.store import LocalStore

pytestmark = pytest.mark.slow

SPEC = FederationSpec(
    nodes=3, slices=2, records_per_node=60, test_records=40, federation_id="lethe-e2e"
)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    fed = LocalFederation(tmp_path_factory.mktemp("fed-a"), SPEC, report=lambda _line: None)
    fed.up()
    try:
        fed.wait_rounds(SPEC.slices, timeout=600)
        yield fed
    finally:
        fed.stop()


def _record_of(fed: LocalFederation, node_index: int, position: int) -> str:
    with SisaNode.open(fed.nodes[node_index].config.db) as node:
        return node.store.record_ids()[position]


def _ledger(fed: LocalFederation) -> Ledger:
    return Ledger(
        fed.devnet.rpc_url, fed.deployment.address, deployment_block=fed.deployment.block_number
    )


def test_forget_equals_federation_retrained_without_the_record(
    federation: LocalFederation, tmp_path: Path
) -> None:
    record_id = _record_of(federation, 0, 7)
    accepted = federation.forget(record_id, request_id="e2e-forget-1")
    assert accepted["state"] == "received"
    final = federation.follow("e2e-forget-1", timeout=300)
    assert final["state"] == "completed", final
    forgotten_round = federation.db.get_round(final["round"])  # type: ignore[union-attr]
    assert forgotten_round["state"] == "finalized"

    # The record is gone from the owner's store; the certificate verifies.
    with SisaNode.open(federation.nodes[0].config.db) as node:
        assert record_id not in node.store.record_ids()
    store = LocalStore(federation.workdir / "store")
    certificate = Certificate.from_bytes(store.get(final["certificate_cid"]))
    assert certificate.verify(expected_signer=federation.nodes[0].address)
    assert certificate.model_hash_after == final["new_model_hash"]

    # The chain tells the same story.
    events = _ledger(federation).events()
    request_key = keccak256(b"e2e-forget-1")
    names = {
        e.name for e in events if e.args.get("requestId") in (request_key, "0x" + request_key.hex())
    }
    assert {"ForgetRequested", "ForgetCertified", "ForgetCompleted"} <= names
    assert any(e.name == "RoundFinalized" and e.args["round"] == final["round"] for e in events)

    # A federation that never saw the record, from scratch, same seeds: same model bytes.
    spec_b = FederationSpec(**{**SPEC.__dict__, "exclude_records": (record_id,)})
    scratch = LocalFederation(tmp_path / "fed-b", spec_b, report=lambda _line: None)
    scratch.up()
    try:
        rounds = scratch.wait_rounds(SPEC.slices, timeout=600)
    finally:
        scratch.stop()
    from_scratch = next(r for r in rounds if r["through_slice"] is None)
    assert from_scratch["n_total"] == forgotten_round["n_total"]
    assert from_scratch["global_model_hash"] == forgotten_round["global_model_hash"]

    nodes = requests.get(f"{federation.api_url}/nodes", timeout=10).json()
    assert {n["address"] for n in nodes} == {n.address for n in federation.nodes}

    # Asking again for a forgotten record answers with the request that forgot it.
    again = requests.post(
        f"{federation.api_url}/forget",
        json={"record_id": record_id},
        timeout=10,
        headers={"Authorization": f"Bearer {federation.api_token()}"},
    )
    assert again.status_code == 200 and again.json()["request_id"] == "e2e-forget-1"


FOREIGN_CLIENT = """
import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def steal(msg: Message, context: Context) -> Message:
    loot = {k: str(v) for k, v in context.node_config.items()}
    Path(LOOT, str(context.node_id)).write_text(json.dumps(loot))
    return Message(RecordDict({"loot": ConfigRecord(loot)}), reply_to=msg)
"""

FOREIGN_SERVER = """
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    nodes: list[int] = []
    deadline = time.monotonic() + 60
    while len(nodes) < 3 and time.monotonic() < deadline:
        nodes = list(grid.get_node_ids())
        time.sleep(0.5)
    asks = [
        Message(RecordDict({"x": ConfigRecord({"a": 1})}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    replies = list(grid.send_and_receive(asks, timeout=90))
    out = [{"error": r.has_error(), "content": sorted(r.content.keys()) if r.has_content() else []}
           for r in replies]
    Path(RESULT).write_text(json.dumps(out))
"""


def test_a_foreign_app_named_lethe_never_runs_on_a_node(
    federation: LocalFederation, tmp_path: Path
) -> None:
    import json
    import os
    import subprocess

    app, loot, result = tmp_path / "foreign", tmp_path / "loot", tmp_path / "result.json"
    (app / "foreign_app").mkdir(parents=True)
    loot.mkdir()
    (app / "foreign_app" / "__init__.py").write_text("")
    (app / "foreign_app" / "client.py").write_text(f"LOOT = {str(loot)!r}\n{FOREIGN_CLIENT}")
    (app / "foreign_app" / "server.py").write_text(f"RESULT = {str(result)!r}\n{FOREIGN_SERVER}")
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "lethe"\nversion = "6.6.6"\ndependencies = ["flwr==1.42.0"]\n'
        '[tool.flwr.app]\npublisher = "lethe"\nfab-include = ["foreign_app/**/*.py"]\n'
        "[tool.flwr.app.components]\n"
        'serverapp = "foreign_app.server:app"\nclientapp = "foreign_app.client:app"\n'
        "[tool.flwr.app.config]\nunused = 0\n"
    )
    env = dict(os.environ, FLWR_HOME=str(federation.flwr_home))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    submitted = subprocess.run(
        [str(Path(sys.executable).parent / "flwr"), "run", str(app), "lethe", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + 240
    while not result.exists():
        assert time.monotonic() < deadline, "the foreign ServerApp never finished"
        time.sleep(1)
    replies = json.loads(result.read_text())
    assert list(loot.iterdir()) == [], "a node ran the foreign ClientApp"
    assert replies and all(r["error"] and not r["content"] for r in replies), replies


def _restart(federation: LocalFederation, index: int, *command: str) -> None:
    """Stop node ``index`` and start it again (with ``command``), until it has rejoined."""
    node = federation.nodes[index]
    assert node.child is not None
    joined = node.child.log.read_text().count("SuperNode ID")
    node.child.stop()
    if command:
        federation.start_node(node, command=command)
    else:
        federation.start_node(node)
    deadline = time.monotonic() + 60
    while node.child.log.read_text().count("SuperNode ID") == joined:
        assert time.monotonic() < deadline, "the restarted node never joined"
        time.sleep(0.2)


def test_round_survives_a_node_killed_after_sharing(federation: LocalFederation) -> None:
    victim = federation.nodes[2]
    _restart(federation, 2, sys.executable, "-m", "tests.faulty_node", SHARE)
    assert victim.child is not None
    record_id = _record_of(federation, 1, 3)
    federation.forget(record_id, request_id="e2e-forget-2")
    final = federation.follow("e2e-forget-2", timeout=300)
    assert final["state"] == "completed", final
    survived = federation.db.get_round(final["round"])  # type: ignore[union-attr]
    assert survived["state"] == "finalized"
    assert survived["dropped"] == [victim.address]
    assert victim.address in survived["responders"]["share"]
    assert len(survived["responders"]["aggregate"]) == 2 >= survived["threshold"]
    assert not victim.child.alive()
    # Back as itself: later rounds need all three senders again (never a sum of two).
    _restart(federation, 2)


def test_a_node_silent_after_sharing_costs_seconds_not_the_stage_timeout(
    federation: LocalFederation,
) -> None:
    victim = federation.nodes[2]
    _restart(federation, 2, sys.executable, "-m", "tests.faulty_node", AGGREGATE, "hang")
    federation.forget(_record_of(federation, 1, 4), request_id="e2e-forget-3")
    final = federation.follow("e2e-forget-3", timeout=300)
    assert final["state"] == "completed", final
    survived = federation.db.get_round(final["round"])  # type: ignore[union-attr]
    assert survived["state"] == "finalized"
    assert victim.address in survived["responders"]["aggregate"]  # answered, then hung
    assert victim.address not in survived["approvals"]
    assert victim.child is not None and victim.child.alive()  # never noticed as dead
    # approve waited ~1.5 s after the others, not stage_timeout_s (30 s); slack for load
    assert survived["seconds"] < 20, survived["seconds"]
    victim.child.kill()  # its worker sleeps through SIGTERM
    _restart(federation, 2)


def test_real_history_passes_the_audit_and_shows_in_the_explorer(
    federation: LocalFederation, chromium: str
) -> None:
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS
    from tests.conftest import REPO_ROOT
    from verifier.audit import audit

    report = audit(_ledger(federation), LocalStore(federation.workdir / "store"))
    assert report.ok, report.verdict()
    completed = [f for f in report.forgets if f.completed is not None]
    assert len(completed) >= 1
    assert all(r.status in ("verified", "pending") for r in report.rounds)

    screenshot = REPO_ROOT / "bench" / "results" / "explorer.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            response = page.goto(f"{federation.api_url}/explorer", wait_until="load")
            assert response is not None and response.status == 200
            assert "AUDIT PASSED" in page.inner_text(".verdict.ok")
            assert page.locator("tr.round").count() == len(report.rounds)
            assert page.locator("tr.node").count() == SPEC.nodes
            timeline = page.locator("section.forget").first.inner_text()
            assert "e2e-forget-1" in timeline or "e2e-forget-2" in timeline
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


def _readme_api_block() -> str:
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    after = readme.split("<!-- api-example:", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_api_block_runs_verbatim(federation: LocalFederation, tmp_path: Path) -> None:
    """Run last: it forgets a record, which the model comparison above must not see."""
    import os
    import subprocess
    import sys

    (tmp_path / ".lethe").mkdir()
    (tmp_path / ".lethe" / "federation").symlink_to(federation.workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LETHE_API_URL"] = federation.api_url  # tests pick a free port, not 8080
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _readme_api_block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "request dsr-2026-0001 (new request)" in out
    assert "\ncertificate bafk" in out
    assert '"request_id":"dsr-2026-0001","record_id"' in out.replace(" ", "")
    assert '"state":"completed"' in out.replace(" ", "")
    assert '"status":"ok"' in out.replace(" ", "")
    assert (tmp_path / "explorer.html").read_text().count("AUDIT PASSED") == 1
    assert out.rstrip().splitlines()[-1].startswith("AUDIT PASSED")
