"""What the compose files and the image promise about secrets, ports and package sources.

Read from the files themselves, so a change that mounts a key into a second service,
publishes a port beyond the host's loopback or looks a package up on two indexes fails
here in `make test`; `make test-containers` checks the same deployment running.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
OFFLINE = REPO_ROOT / "docker-compose.offline.yml"
DOCKER = REPO_ROOT / "docker"


def _services(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text())["services"])


def _volumes(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Named volume → (mount point, read-only) for one service."""
    out = {}
    for spec in service.get("volumes", []):
        name, target, *mode = spec.split(":")
        if not name.startswith((".", "/")):
            out[name] = (target, mode == ["ro"])
    return out


def test_each_node_mounts_its_own_volumes_and_the_public_one_read_only() -> None:
    services = _services(COMPOSE)
    nodes = sorted(name for name in services if name.startswith("node-"))
    assert nodes == ["node-1", "node-2", "node-3"]
    for node in nodes:
        assert _volumes(services[node]) == {
            node: ("/data", False),
            f"{node}-outbox": ("/outbox", False),
            "public": ("/public", True),
            "record-key": ("/record-key", True),
        }


def test_the_record_key_goes_from_the_coordinator_to_the_nodes_only() -> None:
    # The federation's record key keys every record commitment: an outsider holding it
    # could test candidate record ids. The coordinator writes it, the nodes read it.
    services = _services(COMPOSE)
    holders = {
        name: _volumes(s)["record-key"]
        for name, s in services.items()
        if "record-key" in _volumes(s)
    }
    assert holders == {
        "coordinator": ("/record-key", False),
        **{f"node-{i}": ("/record-key", True) for i in (1, 2, 3)},
    }
    assert "record.key" not in (DOCKER / "owner.sh").read_text()


def test_every_secret_volume_is_writable_by_one_service_and_readable_by_no_other() -> None:
    services = _services(COMPOSE)
    secret = {"owner", "coordinator", "node-1", "node-2", "node-3", "chain", "ipfs"}
    for volume in secret:
        holders = [name for name, s in services.items() if volume in _volumes(s)]
        assert len(holders) == 1, f"volume {volume} mounted by {holders}"
    # The SuperLink's TLS key: issued by the owner, read by the coordinator, nobody else.
    tls = {
        name: _volumes(s)["coordinator-tls"]
        for name, s in services.items()
        if "coordinator-tls" in _volumes(s)
    }
    assert tls == {"owner": ("/tls", False), "coordinator": ("/tls", True)}
    # Public halves: each outbox is written by its own participant only.
    for name, service in services.items():
        for volume, (_, read_only) in _volumes(service).items():
            if volume.endswith("-outbox") or volume == "public":
                writer = "owner" if volume == "public" else volume.removesuffix("-outbox")
                assert read_only or name == writer, f"{name} can write {volume}"


def test_published_ports_bind_the_host_loopback_only() -> None:
    for path in (COMPOSE, OFFLINE):
        for name, service in _services(path).items():
            for port in service.get("ports", []):
                assert port.startswith("127.0.0.1:"), f"{path.name} {name} publishes {port}"
    services = _services(COMPOSE)
    assert not any("ports" in services[n] for n in ("node-1", "node-2", "node-3", "owner"))


def test_the_superlink_listens_on_loopback_behind_a_fleet_only_gate() -> None:
    script = (DOCKER / "coordinator.sh").read_text()
    superlink = script.split("flower-superlink", 1)[1].split("&", 1)[0]
    assert "--host 127.0.0.1" in superlink
    assert "--enable-supernode-auth" in superlink and "--insecure" not in superlink
    gate = (DOCKER / "fleet-gate.conf").read_text()
    assert re.findall(r"location\s+(\S+)", gate) == ["/v1/fleet/", "/"]
    assert gate.count("proxy_pass") == 1
    assert re.search(r"location / \{ return 403", gate)
    node = (DOCKER / "node.sh").read_text()
    assert "--auth-key" in node and "--root-certificates" in node and "--insecure" not in node


def test_images_are_pinned_and_each_package_has_one_source() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and re.search(r"@sha256:[0-9a-f]{64}$", base.group(1))
    kubo = _services(COMPOSE)["ipfs"]["image"]
    assert re.search(r"@sha256:[0-9a-f]{64}$", kubo)
    install = (DOCKER / "install-packages.sh").read_text()
    commands = [
        line for line in (install + dockerfile).splitlines() if not line.lstrip().startswith("#")
    ]
    assert not any("--extra-index-url" in line for line in commands)
    assert "--no-index" in install  # the wheelhouse build never reaches a network


def test_the_runtime_image_installs_no_dev_tools() -> None:
    install = (DOCKER / "install-packages.sh").read_text()
    # Runtime dependencies are pyproject's list; requirements.lock only constrains them.
    assert '["project"]["dependencies"]' in install
    assert "-r requirements.lock" not in install and "-c requirements.lock" in install


def _networks(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks", [])
    return set(networks) if isinstance(networks, list) else set(dict(networks))


def test_participants_reach_the_chain_only_through_the_gate() -> None:
    services = _services(COMPOSE)
    participants = ["coordinator", "node-1", "node-2", "node-3"]
    on_admin = {n for n, s in services.items() if "chain-admin" in _networks(s)}
    assert on_admin == {"chain", "chain-gate", "owner"}
    assert _networks(services["chain"]) == {"chain-admin"}
    for name in participants:
        env = services[name]["environment"]
        assert env["LETHE_RPC_URL"] == "http://chain-gate:8545", name
    assert services["chain-gate"]["command"] == ["rpc-gate"]
    assert "infra.rpc_gate" in (DOCKER / "entrypoint.sh").read_text()


def test_the_store_rpc_is_reachable_by_its_writers_only() -> None:
    services = _services(COMPOSE)
    on_store = {n for n, s in services.items() if "store" in _networks(s)}
    assert on_store == {"ipfs", "coordinator", "node-1", "node-2", "node-3"}
    assert _networks(services["ipfs"]) == {"store"}


def test_the_owner_key_is_generated_in_the_owner_container() -> None:
    for script in ("owner.sh", "admit.sh"):
        text = (DOCKER / script).read_text()
        assert "--dev-account" not in text, script
        assert "/owner/key/eth.key" in text, script
    assert "keys.py eth /owner/key" in (DOCKER / "owner.sh").read_text()
    mounts = {n: _volumes(s) for n, s in _services(COMPOSE).items()}
    assert [n for n, v in mounts.items() if "owner" in v] == ["owner"]
