"""`lethe up`: a whole local federation on 127.0.0.1 until Ctrl-C; options shared with demo."""

import signal
import time
from collections.abc import Callable
from pathlib import Path

import click

from infra.workdir import DEFAULT_WORKDIR
from protocol.federation import DEFAULT_SLICES


def federation_options(workdir: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The options of a local federation's size and place (``lethe up``, ``lethe demo``)."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(
            [
                click.option(
                    "--workdir",
                    type=click.Path(file_okay=False),
                    default=workdir,
                    show_default=True,
                    help="Chain state, node data, store and logs.",
                ),
                click.option("--nodes", type=click.IntRange(2, 10), default=3, show_default=True),
                click.option(
                    "--records-per-node", type=click.IntRange(10), default=400, show_default=True
                ),
                click.option(
                    "--slices",
                    type=click.IntRange(1, 16),
                    default=DEFAULT_SLICES,
                    show_default=True,
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


@click.command()
@federation_options(str(DEFAULT_WORKDIR))
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port of the coordinator API on 127.0.0.1 (0: any free port).",
)
def up(workdir: str, nodes: int, records_per_node: int, slices: int, api_port: int) -> None:
    """Run a local federation on 127.0.0.1 until Ctrl-C (anvil, SuperLink, nodes, API).

    A part that crashes is restarted (at most 5 times in 5 minutes each, one line per
    restart); Ctrl-C stops everything, restarted parts included. Everything lives in the
    work directory; `lethe forget`, `status`, `rounds` and `audit`
    run from the same folder find it without flags.
    """
    from infra.net import port_open
    from launcher.federation import FederationSpec, LocalFederation, describe
    from launcher.supervisor import Supervisor

    if api_port and port_open(api_port):
        raise click.UsageError(
            f"port {api_port} on 127.0.0.1 is in use: pick another with --api-port "
            "(0: any free port)"
        )
    federation = LocalFederation(
        Path(workdir),
        FederationSpec(nodes=nodes, records_per_node=records_per_node, slices=slices),
        api_port=api_port,
    )
    federation.up()
    click.echo(describe(federation))
    click.echo(f"API token: {federation.api_token()}  (Ctrl-C stops everything)")
    supervisor = Supervisor(federation, report=lambda line: click.echo(line, err=True))
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
            supervisor.check()
    finally:
        click.echo("stopping the federation …")
        federation.stop()
