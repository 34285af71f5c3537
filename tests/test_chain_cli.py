"""`lethe devnet`, `lethe deploy` and `lethe admit` against real anvil processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from launcher.cli import main
from launcher.devnet import Devnet, rpc_ready
from protocol.ledger import Deployment, Ledger

pytest_plugins = ["tests.chain_fixtures"]

CLEAN_ENV = {"LETHE_RPC_URL": None, "LETHE_PRIVATE_KEY": None, "LETHE_DEPLOYMENT": None}


def lethe(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=CLEAN_ENV, catch_exceptions=False)


@pytest.fixture(scope="module")
def public_like_chain() -> Iterator[Devnet]:
    """An anvil that does not use the dev chain id, as a stand-in for a real network."""
    with Devnet(chain_id=1337) as chain:
        yield chain


def test_deploy_then_admit_writes_a_usable_deployment_file(devnet: Devnet, tmp_path: Path) -> None:
    out = tmp_path / "deployment.json"
    coordinator, node = devnet.accounts[1].address, devnet.accounts[2].address
    result = lethe(
        "deploy", "--rpc", devnet.rpc_url, "--coordinator", coordinator, "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    deployment = Deployment.load(out)
    assert deployment.address in result.output
    assert deployment.deployer == devnet.accounts[0].address
    assert deployment.chain_id == 31337
    assert set(json.loads(out.read_text())) == {
        "chain_id", "address", "block_number", "tx_hash", "deployer", "abi_keccak256",
        "compiler", "rpc_url",
    }  # fmt: skip
    result = lethe("admit", "--deployment", str(out), "--node", node, "--quorum", "1")
    assert result.exit_code == 0, result.output
    ledger = Ledger.from_deployment(out)
    assert ledger.coordinator() == coordinator
    assert [e.address for e in ledger.roster()] == [node]
    assert ledger.configured_quorum() == 1


def test_admit_by_a_non_owner_fails_with_the_contract_error(devnet: Devnet, tmp_path: Path) -> None:
    out = tmp_path / "deployment.json"
    assert lethe("deploy", "--rpc", devnet.rpc_url, "--out", str(out)).exit_code == 0
    result = lethe("admit", "--deployment", str(out), "--dev-account", "3", "--quorum", "1")
    assert result.exit_code == 1
    assert "NotOwner" in result.output


def test_dev_keys_are_refused_outside_a_dev_chain(
    public_like_chain: Devnet, tmp_path: Path
) -> None:
    out = tmp_path / "deployment.json"
    rpc = public_like_chain.rpc_url
    dev_key = public_like_chain.accounts[0].private_key
    for extra in (["--dev-account", "0"], ["--key", dev_key]):
        result = lethe("deploy", "--rpc", rpc, "--out", str(out), *extra)
        assert result.exit_code == 2
        assert "DEV-ONLY" in result.output
    result = lethe("deploy", "--rpc", rpc, "--out", str(out))
    assert result.exit_code == 2
    assert "not a dev chain" in result.output
    assert not out.exists()


def test_deploy_to_an_unreachable_endpoint_names_it(tmp_path: Path) -> None:
    result = lethe("deploy", "--rpc", "http://127.0.0.1:9", "--out", str(tmp_path / "d.json"))
    assert result.exit_code == 1
    assert "http://127.0.0.1:9" in result.output


def test_devnet_runs_in_the_foreground_and_saves_state_on_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "chain" / "state.json"
    command = [sys.executable, "-c", "from launcher.cli import main; main()"]
    proc = subprocess.Popen(
        [*command, "devnet", "--state", str(state), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # Ctrl-C as at a terminal, even when this suite runs as a background job (which
        # starts with SIGINT ignored, and then Python never raises KeyboardInterrupt)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Ctrl-C"):
            line = proc.stdout.readline()
            assert line, "lethe devnet exited early: " + "".join(lines)
            lines.append(line)
        url = lines[0].split()[-1]
        assert lines[0].startswith("RPC URL") and rpc_ready(url)
        info = json.loads((state.parent / "devnet.json").read_text())
        assert info["rpc_url"] == url
        proc.send_signal(signal.SIGINT)
        output = "".join(lines) + proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert "DEV-ONLY" in output
    assert state.is_file() and json.loads(state.read_text())["block"]
    assert not (state.parent / "devnet.json").exists()
    assert not rpc_ready(url)
