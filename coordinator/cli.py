"""The coordinator-side commands of `lethe` (the command itself is ``launcher.cli``)."""

import click

from infra.lazycli import LazyGroup

COMMANDS = {
    "api": "coordinator.serve_cli:api",
    "configure": "coordinator.serve_cli:configure",
    "secagg-demo": "coordinator.secagg_demo:secagg_demo",
    "forget": "coordinator.client_cli:forget",
    "status": "coordinator.client_cli:status",
    "rounds": "coordinator.client_cli:rounds",
    "receipt": "coordinator.receipt_cli:receipt",
    "feedback": "coordinator.feedback_cli:feedback",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe: federated learning that can provably forget."""
