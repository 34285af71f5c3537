"""`lethe`: the coordinator's commands plus the local federation's (chain, `up`, `demo`)."""

import click

from coordinator.cli import COMMANDS as COORDINATOR_COMMANDS
from infra.lazycli import LazyGroup
from verifier.cli import COMMANDS as VERIFIER_COMMANDS

COMMANDS = {
    **COORDINATOR_COMMANDS,
    **VERIFIER_COMMANDS,
    "demo": "launcher.demo:demo",
    "up": "launcher.commands:up",
    "devnet": "launcher.chain_cli:devnet",
    "deploy": "launcher.chain_cli:deploy",
    "admit": "launcher.chain_cli:admit",
    "invite": "launcher.invite_cli:invite",
    "stake-policy": "launcher.chain_cli:stake_policy",
    "fund": "launcher.chain_cli:fund",
    "slash": "launcher.chain_cli:slash",
    "build-contract": "launcher.chain_cli:build_contract",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe: federated learning that can provably forget."""
