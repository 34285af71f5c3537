"""A restarted `lethe up` stays auditable: every no-flag command works after a second `up`.

As a new user would: `lethe up`, Ctrl-C, `lethe up` again in the same folder (anvil comes
back on another port), then `lethe forget`, `lethe status`, `lethe rounds` and
`lethe audit` with no flags at all. They find the federation through its work directory,
whose `federation.json` is the one record of where things run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from infra.workdir import WORKDIR_ENV, WorkDir

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
UP = [str(BIN / "lethe"), "up", "--nodes", "3", "--records-per-node", "40", "--slices", "1"]
UP_TIMEOUT_S = 600


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


class Up:
    """One `lethe up` process in ``folder``, its output in a log file."""

    def __init__(self, folder: Path, log: Path, **env: str) -> None:
        self.log = log
        self.out = log.open("w")
        self.popen = subprocess.Popen(
            [*UP, "--api-port", "0"],
            cwd=folder,
            env=_env(**env),
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + UP_TIMEOUT_S
        while "API token:" not in log.read_text():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"lethe up did not come up:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; returns its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.out.close()
        return self.popen.returncode


def lethe(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lethe"), *args],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder where `lethe up` ran, was stopped with Ctrl-C, and runs again (logging
    JSON); the first run's RPC URL."""
    folder = tmp_path_factory.mktemp("restarted-up")
    assert WORKDIR_ENV not in _env()
    first = Up(folder, folder / "up-1.log")
    first_rpc = WorkDir.resolve(folder / ".lethe" / "federation").read_summary()["rpc_url"]
    deadline = time.monotonic() + UP_TIMEOUT_S  # a history to audit after the restart
    while "finalized" not in lethe(folder, "rounds").stdout and time.monotonic() < deadline:
        time.sleep(2)
    assert first.stop() == 0
    second = Up(folder, folder / "up-2.log", LETHE_LOG_FORMAT="json")
    try:
        yield folder, first_rpc
    finally:
        second.stop()


def test_the_second_up_records_where_everything_runs_now(restarted: tuple[Path, str]) -> None:
    folder, first_rpc = restarted
    place = WorkDir(folder / ".lethe" / "federation")
    now = place.read_summary()
    deployment = json.loads(place.deployment.read_text())
    assert now["rpc_url"] != first_rpc, "anvil came back on the same port: nothing tested"
    assert deployment["address"] == now["contract"]
    assert place.rpc_url() == now["rpc_url"]


def test_every_no_flag_command_works_after_a_restart(restarted: tuple[Path, str]) -> None:
    folder, _ = restarted
    place = WorkDir(folder / ".lethe" / "federation")
    record = subprocess.run(
        [str(BIN / "lethe-node"), "records", "--db", str(place.node_db(1)), "--sample", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    forget = lethe(folder, "forget", record)
    assert forget.returncode == 0, forget.stderr
    request_id = forget.stdout.split()[1]

    deadline = time.monotonic() + 300
    while True:
        status = lethe(folder, "status", request_id)
        assert status.returncode == 0, status.stderr
        if "completed" in status.stdout.splitlines()[1] or time.monotonic() > deadline:
            break
        assert "failed" not in status.stdout, status.stdout
        time.sleep(1)
    assert "certificate" in status.stdout.splitlines()[1], status.stdout

    overview = lethe(folder, "status")
    assert overview.returncode == 0, overview.stderr
    assert request_id in overview.stdout and "chain      up" in overview.stdout

    rounds = lethe(folder, "rounds")
    assert rounds.returncode == 0, rounds.stderr
    assert "finalized" in rounds.stdout

    audit = lethe(folder, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "cannot reach" not in audit.stderr

    # one forget followed across processes by its id in the JSON logs
    for log in ("logs/api.log", "coordinator/coordinator.log", "logs/node-1.log"):
        lines = (place.root / log).read_text().splitlines()
        named = [line for line in lines if request_id in _json_ids(line)]
        assert named, f"{log} never names {request_id}"
    node = requests.get(place.read_summary()["nodes"][0]["metrics"], timeout=30).text
    owner = {s.name: s.value for f in text_string_to_metric_families(node) for s in f.samples}
    assert owner["lethe_node_forgets_total"] == 1
    assert owner["lethe_node_retrain_seconds_count"] == 1
    assert owner["lethe_node_rounds_answered_total"] >= 1
    assert owner["lethe_node_stake_wei"] == 10**18


def _json_ids(line: str) -> list[str]:
    """The request ids a JSON log line names ([] for any other line)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return []
    return list(entry.get("request_ids") or []) if isinstance(entry, dict) else []


def test_metrics_of_the_running_federation(restarted: tuple[Path, str]) -> None:
    """`curl /metrics` on `lethe up`: text prometheus-client's parser reads, values sane."""
    folder, _ = restarted
    api = WorkDir(folder / ".lethe" / "federation").api_url()
    text = requests.get(f"{api}/metrics", timeout=30).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    finalized = samples[("lethe_rounds_total", (("outcome", "finalized"),))]
    assert finalized >= 1
    assert samples[("lethe_last_finalized_round", ())] >= 1
    assert samples[("lethe_round_stage_seconds_count", (("stage", "train"),))] >= finalized
    assert samples[("lethe_connected_nodes", ())] == 3
    for part in ("serverapp", "superlink", "chain", "store"):
        assert samples[("lethe_up", (("part", part),))] == 1, part
