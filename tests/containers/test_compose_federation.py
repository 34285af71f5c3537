"""The compose federation, run for real: one container per role and per participant.

``make test-containers`` builds the base and the image offline, then runs this module:
the compose project comes up with podman; a forget sent to the coordinator's API from
the host completes; ``lethe audit`` on the host passes against the containers' chain and
store; a node killed mid-round does not stop the round; a node cut from the network and
reconnected answers again. The tests run in file order against one project and tear it
down at the end, volumes included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.containers.compose import REPO_ROOT, ComposeProject

pytestmark = pytest.mark.containers

NODES = ("node-1", "node-2", "node-3")
SLICES = 4  # LETHE_SLICES in docker-compose.yml: the initial rounds
LETHE = Path(sys.executable).parent / "lethe"


@pytest.fixture(scope="module")
def project() -> Iterator[ComposeProject]:
    project = ComposeProject(f"lethe-test-{os.getpid()}")
    try:
        project.up()
        yield project
    finally:
        try:
            project.down()
        finally:
            leftovers = project.podman(
                "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project.name}"
            )
            assert not leftovers.strip(), f"containers left after down: {leftovers}"


@pytest.fixture(scope="module")
def initial_rounds(project: ComposeProject) -> list[dict[str, Any]]:
    """The one round per SISA slice the federation runs first, all finalized on chain."""
    return list(
        project.wait_for(
            f"{SLICES} initial rounds finalized",
            lambda: len(project.finalized()) >= SLICES and project.finalized(),
            timeout=900,
            every=2,
        )
    )


def _mounts(project: ComposeProject, service: str) -> dict[str, str]:
    """Volume name → mount point, for one service's container."""
    return {
        m["Name"].removeprefix(f"{project.name}_"): m["Destination"]
        for m in project.inspect(service)["Mounts"]
        if m.get("Type") == "volume"
    }


def test_each_service_mounts_only_its_own_secrets(project: ComposeProject) -> None:
    for index, node in enumerate(NODES, start=1):
        assert _mounts(project, node) == {
            f"node-{index}": "/data",
            f"node-{index}-outbox": "/outbox",
            "public": "/public",
        }
    coordinator = _mounts(project, "coordinator")
    assert not any(name in coordinator for name in (*NODES, "owner")), coordinator
    assert coordinator["coordinator"] == "/state"
    # The keys were made where they are used: a node's are in its own volume only.
    project.wait_for(
        "node-1 keys", lambda: "auth.key" in project.exec("node-1", "ls", "/data"), 300
    )
    keys = set(project.exec("node-1", "ls", "/data").split())
    assert {"eth.key", "auth.key"} <= keys
    assert project.exec("node-1", "stat", "-c", "%a", "/data/eth.key").strip() == "600"
    for path in ("/tls/superlink.key", "/state", "/owner"):
        assert project.exec("node-1", "test", "-e", path, check=False) == ""
        missing = subprocess.run(
            ["podman", "exec", project.container("node-1"), "test", "-e", path],
            env=project.env,
            check=False,
        )
        assert missing.returncode == 1, f"node-1 can see {path}"


def test_host_ports_are_published_on_loopback_only(project: ComposeProject) -> None:
    for service, port in (("coordinator", "8080/tcp"), ("chain", "8545/tcp"), ("ipfs", "5001/tcp")):
        bindings = project.inspect(service)["NetworkSettings"]["Ports"][port]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), (service, bindings)
    for service in ("node-1", "owner"):
        assert not any(project.inspect(service)["NetworkSettings"]["Ports"].values())


NODE_PROBE = """
import sys, requests
ca = "/public/ca.pem"
def status(url):
    try:
        return str(requests.post(url, data=b"", verify=ca, timeout=5).status_code)
    except requests.ConnectionError:
        return "refused"
print(" ".join(status(u) for u in sys.argv[1:]))
"""


def test_control_and_runtime_apis_are_unreachable_from_a_node(
    project: ComposeProject, initial_rounds: list[dict[str, Any]]
) -> None:
    gate = "https://superlink:9092"
    control, runtime, fleet = project.exec(
        "node-1",
        "python",
        "-c",
        NODE_PROBE,
        f"{gate}/v1/control/list-runs",
        f"{gate}/v1/runtime/acquire-task",
        f"{gate}/v1/fleet/get-run",
    ).split()
    assert control == runtime == "403"  # the gate refuses everything but the Fleet API
    assert fleet not in ("403", "refused")  # the Fleet API answers (this empty body: an error)
    direct = project.exec(
        "node-1", "python", "-c", NODE_PROBE, "https://superlink:9091/v1/control/list-runs"
    )
    assert direct.strip() == "refused"  # the SuperLink itself listens on loopback only


def test_supernodes_authenticate_and_an_unregistered_key_is_refused(
    project: ComposeProject, initial_rounds: list[dict[str, Any]]
) -> None:
    logs = project.podman("logs", project.container("coordinator"))
    for node in NODES:
        assert f"SuperNode key of {node} registered" in logs
    # A SuperNode with a key the SuperLink never registered cannot join.
    project.exec("node-1", "python", "/app/docker/keys.py", "auth", "/tmp/stranger")
    stranger = subprocess.run(
        [
            "podman",
            "exec",
            project.container("node-1"),
            "timeout",
            "60",
            "python",
            "-m",
            "node.supernode",
            "--superlink",
            "superlink:9092",
            "--root-certificates",
            "/public/ca.pem",
            "--auth-supernode-private-key",
            "/tmp/stranger/auth.key",
            "--isolation",
            "process",
            "--port",
            "9199",
            "--max-retries",
            "0",
        ],
        env=project.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = stranger.stdout + stranger.stderr
    assert stranger.returncode != 0, output
    assert "Connection successful" not in output, output


def test_initial_rounds_are_finalized(
    project: ComposeProject, initial_rounds: list[dict[str, Any]]
) -> None:
    addresses = {project.address_of(node) for node in NODES}
    for round_ in initial_rounds[:SLICES]:
        answered = {a.lower() for a in round_["responders"]["aggregate"]}
        assert len(answered) >= 2 and answered <= addresses, round_


def _joined(project: ComposeProject, node: str) -> bool:
    """Its SuperNode is connected: Flower logs the first successful connection."""
    return "Connection successful" in project.podman("logs", project.container(node))


def test_forget_from_the_host_completes(project: ComposeProject, initial_rounds: Any) -> None:
    for node in NODES:
        project.wait_for(f"{node} connected", lambda n=node: _joined(project, n), timeout=600)
    record = project.record_of("node-1")
    accepted = project.forget(record, "ct-forget-1")
    assert accepted["state"] in ("received", "dispatched")
    final = project.wait_for(
        "ct-forget-1 completed",
        lambda: (r := project.request("ct-forget-1"))["state"] in ("completed", "failed") and r,
        timeout=600,
    )
    assert final["state"] == "completed", final
    round_ = project.get(f"/rounds/{final['round']}")
    answered = {a.lower() for a in round_["responders"]["aggregate"]}
    assert answered == {project.address_of(node) for node in NODES}
    gone = project.exec("node-1", "lethe-node", "records", "--db", "/data/node.sqlite")
    assert record not in gone.split()


def test_audit_from_the_host_passes_against_the_containers(
    project: ComposeProject, initial_rounds: Any
) -> None:
    contract = project.exec(
        "coordinator",
        "python",
        "-c",
        ("import json; print(json.load(open('/public/deployment.json'))['address'])"),
    ).strip()
    audit = subprocess.run(
        [
            str(LETHE),
            "audit",
            "--rpc",
            project.rpc,
            "--contract",
            contract,
            "--store",
            project.store,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO_ROOT,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "ct-forget-1" in audit.stdout or '"completed"' in audit.stdout


def _forget_and_wait(
    project: ComposeProject, request_id: str, before: Any = None
) -> dict[str, Any]:
    project.forget(project.record_of("node-1"), request_id)
    if before is not None:
        project.wait_for(
            f"{request_id} dispatched",
            lambda: project.request(request_id)["state"] != "received",
            timeout=300,
            every=0.1,
        )
        before()
    final = project.wait_for(
        f"{request_id} done",
        lambda: (r := project.request(request_id))["state"] in ("completed", "failed") and r,
        timeout=600,
    )
    assert final["state"] == "completed", final
    return dict(project.get(f"/rounds/{final['round']}"))


def test_a_node_killed_mid_round_does_not_stop_the_round(
    project: ComposeProject, initial_rounds: Any
) -> None:
    victim = project.address_of("node-3")
    survived = _forget_and_wait(
        project,
        "ct-forget-kill",
        before=lambda: project.podman("kill", project.container("node-3")),
    )
    assert survived["state"] == "finalized"
    answered = {a.lower() for a in survived["responders"]["aggregate"]}
    assert victim not in answered
    assert len(answered) >= survived["threshold"]
    assert project.inspect("node-3")["State"]["Running"] is False

    # Started again, it keeps its identity and data and answers the next round.
    project.podman("start", project.container("node-3"))
    project.wait_for(
        "node-3 back",
        lambda: (
            "Connection successful"
            in project.podman("logs", "--since", "5m", project.container("node-3"))
        ),
        timeout=300,
    )
    back = _forget_and_wait(project, "ct-forget-back")
    assert victim in {a.lower() for a in back["responders"]["aggregate"]}


def test_a_node_disconnected_and_reconnected_rejoins(
    project: ComposeProject, initial_rounds: Any
) -> None:
    cut = project.address_of("node-2")
    container = project.container("node-2")
    project.podman("network", "disconnect", project.network(), container)
    try:
        without = _forget_and_wait(project, "ct-forget-cut")
        assert cut not in {a.lower() for a in without["responders"]["aggregate"]}
    finally:
        project.podman("network", "connect", project.network(), container)
    rejoined = project.wait_for(
        "node-2 in a round again",
        lambda: (
            cut
            in {
                a.lower()
                for a in _forget_and_wait(project, f"ct-forget-rejoin-{os.urandom(3).hex()}")[
                    "responders"
                ]["aggregate"]
            }
        ),
        timeout=600,
        every=0.1,
    )
    assert rejoined


def test_the_api_answers_on_the_host_loopback(project: ComposeProject) -> None:
    health = requests.get(f"{project.api}/health", timeout=10)
    assert health.status_code == 200
