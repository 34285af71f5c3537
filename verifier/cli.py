"""The public verifier's commands of `lethe` (the command itself is ``launcher.cli``)."""

import click

from infra.lazycli import LazyGroup

COMMANDS = {
    "cid": "verifier.store_cli:cid",
    "store": "verifier.store_cli:store",
    "audit": "verifier.audit_cli:audit",
    "check-receipt": "verifier.receipt_cli:check_receipt",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="lethe")
def main() -> None:
    """Check a Lethe federation from the chain and the content store alone."""
