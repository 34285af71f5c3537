"""`lethe-node`: the participant-side command line."""

import click

from infra.lazycli import LazyGroup

COMMANDS = {
    "ingest": "node.commands:ingest",
    "train": "node.commands:train",
    "forget": "node.commands:forget",
    "info": "node.commands:info",
    "records": "node.records_cli:records",
    "run": "node.run_cli:run",
    "join": "node.join_cli:join",
    "stake": "node.stake_cli:stake",
    "unstake": "node.stake_cli:unstake",
    "rewards": "node.stake_cli:rewards",
    "claim": "node.stake_cli:claim",
    "approve": "node.approve_cli:approve",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe node: private records, SISA training, exact forgetting."""
