"""Onboarding as the containers do it, on loopback: `lethe-node join` and `lethe configure`."""

import json
from pathlib import Path
from typing import TYPE_CHECKING

from click.testing import CliRunner

from coordinator.config import CoordinatorConfig
from coordinator.serve_cli import configure
from node.run_cli import join
from node.runtime import NodeRunConfig, NodeRuntime
from protocol.envelope import load_private_key, public_key_bytes
from tests.node_fixtures import build_node, make_records, small_config

if TYPE_CHECKING:
    from launcher.devnet import Devnet
    from tests.chain_fixtures import Federation

pytest_plugins = ["tests.chain_fixtures"]


def _key_file(tmp_path: Path, name: str, key: str) -> Path:
    path = tmp_path / name
    path.write_text(key)
    return path


def test_join_registers_the_share_key_and_writes_node_json(
    tmp_path: Path, devnet: "Devnet", federation: "Federation"
) -> None:
    build_node(tmp_path / "node.sqlite", make_records(12), small_config()).close()
    account = devnet.accounts[2]  # admitted as the first node by the fixture
    args = [
        "--db",
        str(tmp_path / "node.sqlite"),
        "--home",
        str(tmp_path / "home"),
        "--name",
        "node-1",
        "--rpc",
        devnet.rpc_url,
        "--contract",
        federation.deployment.address,
        "--store",
        str(tmp_path / "store"),
        "--eth-key-file",
        str(_key_file(tmp_path, "eth.key", account.private_key)),
        "--record-key-file",
        str(_key_file(tmp_path, "record.key", "ab" * 32)),
    ]
    result = CliRunner().invoke(join, args)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "home" / "node.json").read_text())
    assert (
        config["federation_id"] == "fed-test"
        and config["contract"] == federation.deployment.address
    )
    assert NodeRuntime(NodeRunConfig.load(tmp_path / "home" / "node.json")).record_key.key == (
        bytes.fromhex("ab" * 32)
    )
    share_key = public_key_bytes(load_private_key((tmp_path / "home" / "x25519.key").read_bytes()))
    assert federation.owner.node_key(account.address) == share_key
    again = CliRunner().invoke(join, args)  # idempotent: no second registration needed
    assert again.exit_code == 0 and "registered" not in again.output


def test_join_refuses_a_node_the_owner_has_not_admitted(
    tmp_path: Path, devnet: "Devnet", federation: "Federation"
) -> None:
    build_node(tmp_path / "node.sqlite", make_records(6), small_config()).close()
    outsider = devnet.accounts[-1]
    result = CliRunner().invoke(
        join,
        [
            "--db",
            str(tmp_path / "node.sqlite"),
            "--home",
            str(tmp_path / "home"),
            "--name",
            "node-x",
            "--rpc",
            devnet.rpc_url,
            "--contract",
            federation.deployment.address,
            "--store",
            str(tmp_path / "store"),
            "--eth-key-file",
            str(_key_file(tmp_path, "eth.key", outsider.private_key)),
            "--record-key-file",
            str(_key_file(tmp_path, "record.key", "ab" * 32)),
        ],
    )
    assert result.exit_code != 0
    assert "not admitted" in result.output and "lethe admit --node" in result.output


def test_configure_writes_a_loadable_coordinator_config(
    tmp_path: Path, devnet: "Devnet", federation: "Federation"
) -> None:
    key = _key_file(tmp_path, "coordinator.key", devnet.accounts[1].private_key)
    out = tmp_path / "coordinator" / "coordinator.json"
    result = CliRunner().invoke(
        configure,
        [
            "--out",
            str(out),
            "--federation",
            "fed-test",
            "--rpc",
            devnet.rpc_url,
            "--contract",
            federation.deployment.address,
            "--key-file",
            str(key),
            "--store",
            str(tmp_path / "store"),
            "--db",
            str(tmp_path / "q.sqlite"),
            "--slices",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    config = CoordinatorConfig.load(out)
    assert config.slices == 4 and len(config.api_token()) >= 16
    assert config.coordinator_key() == devnet.accounts[1].private_key
    # The federation's record key, made beside the config for the nodes (never on chain).
    assert config.record_key().federation_id == "fed-test" and len(config.record_key().key) == 32
