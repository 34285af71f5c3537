"""`lethe audit`: exit 0 only when everything holds, 1 at an inconsistency, 3 when the chain
cannot be read; readable lines or JSON; never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from tests.audit_history import copy_store
from verifier.cli import main

if TYPE_CHECKING:
    from tests.audit_fixtures import AuditedHistory

pytest_plugins = ["tests.chain_fixtures", "tests.audit_fixtures"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the caller's LETHE_* settings and working directory out of the tests."""
    for name in (
        "LETHE_RPC_URL",
        "LETHE_CONTRACT",
        "LETHE_DEPLOYMENT",
        "LETHE_STORE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def lethe_audit(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["audit", *map(str, args)], env=env)


def target(history: AuditedHistory) -> list[str]:
    deployment = history.fed.deployment
    return ["--rpc", deployment.rpc_url, "--contract", deployment.address]


def test_consistent_history_exits_0_with_a_line_per_round_and_forget(
    audited_history: AuditedHistory,
) -> None:
    result = lethe_audit(*target(audited_history), "--store", audited_history.store_dir)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines if "round" in line.split(":")[0]] == [
        "✓ round 1",
        "✓ round 2",
        "✓ round 3",
        "… round 4",
    ]
    assert any(line.startswith('✓ forget "forget-001"') for line in lines)
    assert lines[-1].startswith("AUDIT PASSED")


def test_json_report(audited_history: AuditedHistory) -> None:
    result = lethe_audit(*target(audited_history), "--store", audited_history.store_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["failure"] is None
    assert report["contract"] == audited_history.fed.deployment.address
    assert report["from_block"] == audited_history.fed.deployment.block_number
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3, 4]
    assert report["forgets"][0]["completed_round"] == 3


def test_defaults_come_from_the_deployment_file_and_environment(
    audited_history: AuditedHistory, tmp_path: Path
) -> None:
    deployment = tmp_path / "deployment.json"
    audited_history.fed.deployment.save(deployment)
    env = {"LETHE_DEPLOYMENT": str(deployment), "LETHE_STORE": str(audited_history.store_dir)}
    result = lethe_audit(env=env)
    assert result.exit_code == 0, result.output
    assert "AUDIT PASSED" in result.output


def test_from_block_starts_the_replay_there(audited_history: AuditedHistory) -> None:
    store = ["--store", str(audited_history.store_dir)]
    start = audited_history.fed.deployment.block_number
    same = lethe_audit(*target(audited_history), *store, "--from-block", str(start), "--json")
    assert same.exit_code == 0 and json.loads(same.output)["from_block"] == start
    # From the middle, the registry before it is unknown, so the audit cannot vouch for it.
    (proposal,) = [
        e for e in audited_history.ledger.events(["RoundProposed"]) if e.args["round"] == 3
    ]
    late = lethe_audit(*target(audited_history), *store, "--from-block", str(proposal.block_number))
    assert late.exit_code == 1
    assert late.output.startswith(f"note: replay starts at block {proposal.block_number}")
    assert "not by the coordinator None" in late.output


def test_inconsistency_exits_1_naming_what_and_where(
    audited_history: AuditedHistory, tmp_path: Path
) -> None:
    store = copy_store(audited_history.store_dir, tmp_path / "blocks")
    _, cid = audited_history.history.certificates["forget-001"]
    (store.root / cid).write_bytes(b"{}")

    result = lethe_audit(*target(audited_history), "--store", store.root)
    assert result.exit_code == 1, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("AUDIT FAILED: forget request 0x") and cid in last
    assert "✓ round 2" in result.output

    as_json = lethe_audit(*target(audited_history), "--store", store.root, "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert report["ok"] is False and report["failure"]["cid"] == cid


def test_missing_store_content_is_an_inconsistency(
    audited_history: AuditedHistory, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    result = lethe_audit(*target(audited_history), "--store", tmp_path / "empty")
    assert result.exit_code == 1
    first = audited_history.history.rounds[0].model_cid
    assert f"global model {first} cannot be fetched intact" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rpc", "http://127.0.0.1:9", "--contract", "0x" + "11" * 20], "cannot reach"),
        (["--contract", "0x" + "00" * 19 + "01"], "no contract at"),
    ],
)
def test_unreadable_chain_exits_3_without_traceback(
    audited_history: AuditedHistory, args: list[str], words: str
) -> None:
    if "--rpc" not in args:
        args = ["--rpc", audited_history.fed.deployment.rpc_url, *args]
    result = lethe_audit(*args)
    assert result.exit_code == 3, result.output
    assert words in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_deployment_file_is_a_usage_error() -> None:
    result = lethe_audit()
    assert result.exit_code == 2
    assert "no deployment file at .lethe/federation/chain/deployment.json" in result.output
    assert "lethe up" in result.output and "lethe deploy" in result.output


def test_a_missing_store_folder_is_a_usage_error_not_a_verdict(
    audited_history: AuditedHistory, tmp_path: Path
) -> None:
    result = lethe_audit(*target(audited_history), "--store", tmp_path / "nowhere")
    assert result.exit_code == 2, result.output
    assert "no content store folder" in result.output and "AUDIT" not in result.output


def test_no_flags_audit_the_federation_lethe_up_made(audited_history: AuditedHistory) -> None:
    workdir = Path(".lethe/federation")  # relative to the test's working directory
    audited_history.fed.deployment.save(workdir / "chain" / "deployment.json")
    copy_store(audited_history.store_dir, workdir / "store")
    result = lethe_audit()
    assert result.exit_code == 0, result.output
    assert "AUDIT PASSED" in result.output
    elsewhere = Path("elsewhere")
    workdir.rename(elsewhere)
    assert lethe_audit("--workdir", elsewhere).exit_code == 0
    only_deployment = lethe_audit("--deployment", elsewhere / "chain" / "deployment.json")
    assert only_deployment.exit_code == 0, only_deployment.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--contract", "0x" + "11" * 20], "--contract needs --rpc"),
        (["--rpc", "http://127.0.0.1:9", "--contract", "nope"], "not an Ethereum address"),
    ],
)
def test_usage_errors_exit_2(args: list[str], words: str) -> None:
    result = lethe_audit(*args)
    assert result.exit_code == 2 and words in result.output, result.output


def test_a_work_directory_audits_the_chain_where_its_federation_runs_now(
    audited_history: AuditedHistory,
) -> None:
    """After a second `lethe up` anvil may serve on another port: federation.json says
    where; a deployment file naming the first run's port must not send the audit there."""
    from dataclasses import replace

    workdir = Path(".lethe/federation")
    stale = replace(audited_history.fed.deployment, rpc_url="http://127.0.0.1:9")
    deployment_file = workdir / "chain" / "deployment.json"
    stale.save(deployment_file)
    copy_store(audited_history.store_dir, workdir / "store")
    summary = {"rpc_url": audited_history.fed.deployment.rpc_url, "api": "http://127.0.0.1:9"}
    (workdir / "federation.json").write_text(json.dumps(summary))
    for args in ([], ["--workdir", str(workdir)], ["--deployment", str(deployment_file)]):
        result = lethe_audit(*args)
        assert result.exit_code == 0, result.output
        assert "AUDIT PASSED" in result.output
    (workdir / "federation.json").unlink()  # no record of where it runs: the file's URL
    assert lethe_audit().exit_code == 3
