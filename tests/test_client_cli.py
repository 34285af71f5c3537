"""`lethe forget`, `lethe status`, `lethe rounds` against the API as `lethe api` serves it,
and `lethe-node records` on a node's file: what a user types, what they read, exit codes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from coordinator.cli import main
from coordinator.queue import CoordinatorDB
from node.cli import main as node_main
from tests.api_server import TOKEN
from tests.node_fixtures import build_node, make_records

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture
def workdir(tmp_path: Path, api: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `lethe up` work directory pointing at the test API, as the working directory."""
    for name in ("LETHE_API_URL", "LETHE_API_TOKEN", "LETHE_API_TOKEN_FILE", "LETHE_WORKDIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    place = Path(".lethe/federation")
    (place / "coordinator").mkdir(parents=True)
    (place / "coordinator" / "api.token").write_text(TOKEN + "\n")
    (place / "federation.json").write_text(json.dumps({"api": api}))
    return place


def lethe(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def finish_later(db: CoordinatorDB, request_id: str, *, fail: bool = False) -> threading.Thread:
    """Walk a request through the states as the ServerApp would, a little later."""

    def walk() -> None:
        while True:
            try:
                db.get_forget(request_id)
                break
            except KeyError:
                time.sleep(0.05)
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("received", "dispatched", {"request_tx": "0x" + "aa" * 32})
        ]
        if fail:
            steps.append(("dispatched", "failed", {"reason": "the owner did not answer"}))
        else:
            steps += [
                ("dispatched", "certified", {"certificate_cid": "bafkreicert"}),
                ("certified", "completed", {"complete_tx": "0x" + "cc" * 32, "round": 5}),
            ]
        for old, new, fields in steps:
            time.sleep(0.6)  # the client polls every 0.2 s: it sees every state
            db.advance_forget(request_id, old, new, **fields)

    thread = threading.Thread(target=walk, daemon=True)
    thread.start()
    return thread


def test_forget_wait_follows_the_request_to_its_certificate(
    workdir: Path, db: CoordinatorDB
) -> None:
    walker = finish_later(db, "dsr-1")
    result = lethe("forget", "rec-1", "--request-id", "dsr-1", "--wait", "--timeout", "30")
    walker.join()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "request dsr-1 (new request) for record 'rec-1'"
    states = [line.split()[0] for line in lines[1:-1]]
    assert states == ["received", "dispatched", "certified", "completed"]
    assert lines[-1] == "certificate bafkreicert"


def test_a_failed_request_exits_1_with_its_reason(workdir: Path, db: CoordinatorDB) -> None:
    walker = finish_later(db, "dsr-2", fail=True)
    result = lethe("forget", "rec-2", "--request-id", "dsr-2", "--wait", "--timeout", "30")
    walker.join()
    assert result.exit_code == 1
    assert "failed: the owner did not answer" in result.output


def test_forget_twice_says_already_known(workdir: Path) -> None:
    assert lethe("forget", "rec-1").exit_code == 0
    again = lethe("forget", "rec-1")
    assert again.exit_code == 0 and "(already known)" in again.output


def test_status_and_rounds(workdir: Path, db: CoordinatorDB) -> None:
    assert lethe("status").output.endswith("\nno forget requests yet\n")
    assert lethe("rounds").output == "no rounds yet\n"
    lethe("forget", "rec-1", "--request-id", "dsr-3")
    one = lethe("status", "dsr-3")
    assert one.exit_code == 0 and "request dsr-3 for record 'rec-1'" in one.output
    assert "received   at 20" in one.output
    assert any(line.startswith("dsr-3 ") for line in lethe("status").output.splitlines())
    listing = json.loads(lethe("status", "--json").output)
    assert listing["health"]["status"] == "ok"
    assert [r["request_id"] for r in listing["requests"]] == ["dsr-3"]
    assert json.loads(lethe("status", "dsr-3", "--json").output)["state"] == "received"
    db.save_round(
        1,
        "finalized",
        {
            "through_slice": 0,
            "accuracy": 0.5,
            "quorum": 2,
            "approvals": {"0xa": "0x1", "0xb": "0x2"},
            "responders": {"aggregate": ["n1", "n2", "n3"]},
            "global_model_cid": "bafkmodel",
        },
    )
    line = lethe("rounds").output.splitlines()[0]
    assert line.split() == [
        "round",
        "1",
        "finalized",
        "slices",
        "0..0",
        "accuracy",
        "0.500",
        "|",
        "3",
        "nodes",
        "answered",
        "|",
        "approvals",
        "2/2",
        "|",
        "model",
        "bafkmodel",
    ]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["forget", "nobody-has-this"], 1, "404: unknown record id"),
        (["status", "bad id"], 1, "400: request_id must be"),
        (["status", "unknown-1"], 1, "404: unknown request id"),
        (["status", "--api", "http://127.0.0.1:9"], 3, "cannot reach the coordinator API"),
        (["forget", "rec-1", "--token-file", "missing.token"], 2, "cannot read"),
    ],
)
def test_errors_say_what_is_wrong_with_an_exit_code(
    workdir: Path, args: list[str], code: int, words: str
) -> None:
    result = lethe(*args)
    assert result.exit_code == code, result.output
    assert words in result.output and "Traceback" not in result.output


def test_forget_without_a_token_says_where_to_put_it(workdir: Path) -> None:
    (workdir / "coordinator" / "api.token").unlink()
    result = lethe("forget", "rec-1")
    assert result.exit_code == 2 and "needs the API token" in result.output


def test_records_lists_or_samples_a_nodes_record_ids(tmp_path: Path) -> None:
    db = tmp_path / "node.sqlite"
    build_node(db, make_records(40)).close()
    runner = CliRunner()
    every = runner.invoke(node_main, ["records", "--db", str(db)])
    assert every.exit_code == 0, every.output
    ids = every.output.split()
    assert len(ids) == 40 and ids == sorted(ids)
    sample = runner.invoke(node_main, ["records", "--db", str(db), "--sample", "4"]).output.split()
    assert len(sample) == 4 and set(sample) <= set(ids)
    assert (
        sample
        == runner.invoke(node_main, ["records", "--db", str(db), "--sample", "4"]).output.split()
    )
    missing = runner.invoke(node_main, ["records", "--db", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
