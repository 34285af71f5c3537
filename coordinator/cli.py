"""`lethe`: the coordinator-side and tooling command line."""

import click

from protocol.lazycli import LazyGroup

COMMANDS = {
    "demo": "coordinator.demo:demo",
    "api": "coordinator.serve_cli:api",
    "up": "coordinator.serve_cli:up",
    "configure": "coordinator.serve_cli:configure",
    "secagg-demo": "coordinator.secagg_demo:secagg_demo",
    "devnet": "coordinator.chain_cli:devnet",
    "deploy": "coordinator.chain_cli:deploy",
    "admit": "coordinator.chain_cli:admit",
    "build-contract": "coordinator.chain_cli:build_contract",
    "cid": "coordinator.store_cli:cid",
    "store": "coordinator.store_cli:store",
    "audit": "coordinator.audit_cli:audit",
    "forget": "coordinator.client_cli:forget",
    "status": "coordinator.client_cli:status",
    "rounds": "coordinator.client_cli:rounds",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe: federated learning that can provably forget."""
