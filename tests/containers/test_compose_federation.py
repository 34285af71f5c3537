"""The compose federation, run for real: one container per role and per participant.

``make test-containers`` builds the base and the image offline, then runs this module:
the compose project comes up with podman; a forget sent to the coordinator's API from
the host completes; ``lethe audit`` on the host passes against the containers' chain and
store; a node killed mid-round does not stop the round; a node cut from the network and
reconnected answers again; a fourth organisation joins the running federation from its
own container and is part of the next round. The tests run in file order against one
project and tear it down at the end, volumes included.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from web3 import Web3

from node.store import load_default
from protocol.ledger import Ledger
from tests.containers.compose import REPO_ROOT, ComposeProject

pytestmark = pytest.mark.containers

NODES = ("node-1", "node-2", "node-3")
SLICES = 4  # LETHE_SLICES in docker-compose.yml: the initial rounds
LETHE = Path(sys.executable).parent / "lethe"


@pytest.fixture(scope="module")
def project() -> Iterator[ComposeProject]:
    running = os.environ.get("LETHE_CONTAINERS_PROJECT")  # reuse one that is up
    project = (
        ComposeProject.attach(running) if running else ComposeProject(f"lethe-test-{os.getpid()}")
    )
    try:
        if not running:
            project.up()
        yield project
    finally:
        try:
            project.remove_joined()
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
            "record-key": "/record-key",
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


CHAIN_PROBE = """
import json, sys, urllib.request
for url, method in zip(sys.argv[1::2], sys.argv[2::2]):
    params = [] if method == "eth_chainId" else ["0x" + "11" * 20, "0x56bc75e2d63100000"]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        reply = json.load(urllib.request.urlopen(request, timeout=5))
        print("error" if "error" in reply else "ok")
    except OSError:
        print("unreachable")
"""


def test_a_participant_cannot_call_chain_admin_methods(
    project: ComposeProject, initial_rounds: list[dict[str, Any]]
) -> None:
    gate, chain = "http://chain-gate:8545", "http://chain:8545"
    balance, through_gate_read, direct = project.exec(
        "node-1", "python", "-c", CHAIN_PROBE,
        gate, "anvil_setBalance", gate, "eth_chainId", chain, "anvil_setBalance",
    ).split()  # fmt: skip
    assert balance == "error"  # the gate refuses the admin method
    assert through_gate_read == "ok"  # and forwards reads
    assert direct == "unreachable"  # the chain itself is on the owner's network only
    owner_key = project.exec("node-1", "ls", "/owner", check=False)
    assert "eth.key" not in owner_key


def test_supernodes_authenticate_and_an_unregistered_key_is_refused(
    project: ComposeProject, initial_rounds: list[dict[str, Any]]
) -> None:
    logs = project.log(project.container("coordinator"))
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
    return "Connection successful" in project.log(project.container(node))


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


def _forget_and_wait(project: ComposeProject, request_id: str) -> dict[str, Any]:
    project.forget(project.record_of("node-1"), request_id)
    final = project.wait_for(
        f"{request_id} done",
        lambda: (r := project.request(request_id))["state"] in ("completed", "failed") and r,
        timeout=600,
    )
    assert final["state"] == "completed", final
    return dict(project.get(f"/rounds/{final['round']}"))


def _kill_once_shared(project: ComposeProject, service: str) -> None:
    """Kill ``service`` the moment the coordinator logs that every node shared: the round
    is then past ``train`` and ``train.share``, in ``train.aggregate`` or later."""
    follow = subprocess.Popen(
        ["podman", "exec", project.container("coordinator"),
         "tail", "-n", "0", "-F", "/state/coordinator.log"],
        env=project.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        for line in follow.stdout:
            if "nodes shared" in line:
                project.podman("kill", project.container(service))
                return
    finally:
        follow.kill()
        follow.wait()


def test_a_node_killed_mid_round_does_not_stop_the_round(
    project: ComposeProject, initial_rounds: Any
) -> None:
    victim = project.address_of("node-3")
    killer = threading.Thread(target=_kill_once_shared, args=(project, "node-3"))
    killer.start()
    time.sleep(2)  # the log is followed before the request arrives
    survived = _forget_and_wait(project, "ct-forget-kill")
    killer.join(timeout=60)
    assert survived["state"] == "finalized"
    assert victim in {a.lower() for a in survived["responders"]["share"]}  # alive mid-round
    assert project.inspect("node-3")["State"]["Running"] is False
    finished = {a.lower() for a in survived["responders"]["aggregate"]}
    assert len(finished) >= survived["threshold"]

    # Started again, it keeps its identity and data and answers the next round.
    restarted = str(int(time.time()))
    project.podman("start", project.container("node-3"))
    project.wait_for(
        "node-3 back",
        lambda: (
            "Connection successful"
            in project.log(project.container("node-3"), "--since", restarted)
        ),
        timeout=300,
    )
    back = _forget_and_wait(project, "ct-forget-back")
    assert victim in {a.lower() for a in back["responders"]["aggregate"]}


def test_a_node_disconnected_and_reconnected_rejoins(
    project: ComposeProject, initial_rounds: Any
) -> None:
    # Three nodes: a round needs all three to commit (docs/rounds.md), so a forget sent
    # while one is cut off waits for it, and completes with it once it is back.
    cut = project.address_of("node-2")
    container = project.container("node-2")
    project.podman("network", "disconnect", project.network(), container)
    try:
        project.forget(project.record_of("node-1"), "ct-forget-cut")
        time.sleep(30)  # cut off for longer than the SuperLink's 20 s heartbeat allowance
        assert project.request("ct-forget-cut")["state"] != "completed"
    finally:
        project.podman("network", "connect", project.network(), container)
    final = project.wait_for(
        "ct-forget-cut completed after the reconnect",
        lambda: (r := project.request("ct-forget-cut"))["state"] in ("completed", "failed") and r,
        timeout=600,
    )
    assert final["state"] == "completed", final
    rejoined = project.get(f"/rounds/{final['round']}")
    assert cut in {a.lower() for a in rejoined["responders"]["aggregate"]}


def test_a_fourth_participant_joins_the_running_federation(
    project: ComposeProject, initial_rounds: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Its own records, as a CSV on its own machine (ids no other participant uses).
    csv_path = tmp_path_factory.mktemp("node-4") / "records.csv"
    with csv_path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text", "label"])
        for n, row in enumerate(load_default((4, 4), limit=120).train, start=1):
            writer.writerow([f"org4-{n:04d}", row.text, row.label])
    container = project.join("node-4", csv_path)
    address = project.admit_and_register("node-4")
    # Keys made in its own container: the secrets never left its volume.
    keys = set(project.podman("exec", container, "ls", "/data").split())
    assert {"eth.key", "auth.key"} <= keys
    project.wait_for(
        "node-4 connected",
        lambda: "Connection successful" in project.log(container),
        timeout=600,
    )
    ingested = project.podman(
        "exec", container, "lethe-node", "records", "--db", "/data/node.sqlite", "--sample", "1"
    )
    assert ingested.startswith("org4-")
    # Its admission started a new roster epoch (docs/trust.md rule 5): every node retrains
    # for it, so the next round sums all four, the newcomer's reveal included.
    round_ = _forget_and_wait(project, "ct-forget-node-4")
    assert address.lower() in {a.lower() for a in round_["responders"]["aggregate"]}
    contract = project.exec(
        "coordinator",
        "python",
        "-c",
        "import json; print(json.load(open('/public/deployment.json'))['address'])",
    ).strip()
    # Admitted on chain, read from the host (web3 takes checksummed addresses only).
    assert Ledger(project.rpc, contract).is_node(Web3.to_checksum_address(address))


def test_the_api_answers_on_the_host_loopback(project: ComposeProject) -> None:
    health = requests.get(f"{project.api}/health", timeout=10)
    assert health.status_code == 200
