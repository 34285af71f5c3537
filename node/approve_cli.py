"""`lethe-node approve`: approve, on this node's key, finalized rounds it was left out of."""

from __future__ import annotations

import click

from protocol.errors import LetheError


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The node's node.json (from `lethe-node join`).",
)
@click.option(
    "--round",
    "rounds",
    type=click.IntRange(min=1),
    multiple=True,
    help="A round to approve (repeatable); default: the recent rounds this node shared in.",
)
def approve(config_path: str, rounds: tuple[int, ...]) -> None:
    """Approve finalized rounds that carry this node's signed update but not its approval
    (the coordinator left its signature out), so it is paid for them. Runs by itself too,
    whenever the node is asked to train."""
    from node.missed_approvals import approve_missed
    from node.runtime import NodeRunConfig, NodeRuntime

    try:
        runtime = NodeRuntime(NodeRunConfig.load(config_path))
        results = approve_missed(runtime, rounds or None)
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
    if not results:
        click.echo("no finalized round to approve")
    for result in results:
        if result.tx_hash:
            click.echo(f"round {result.round}: approved (tx {result.tx_hash})")
        else:
            click.echo(f"round {result.round}: {result.reason}")
