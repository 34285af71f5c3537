"""`lethe api` and `lethe up`: run the coordinator API, or a whole local federation."""

import signal
import time
from collections.abc import Callable
from pathlib import Path

import click

from coordinator.config import CoordinatorConfig
from coordinator.queue import CoordinatorDB
from coordinator.workdir import DEFAULT_WORKDIR


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The coordinator's coordinator.json.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Requests per second per client address without the token (0: no limit).",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Requests a client may send at once before the rate applies.",
)
def api(
    config_path: str, host: str, port: int, threads: int, rate_limit: float, burst: int
) -> None:
    """Serve the coordinator's HTTP API (forget requests, rounds, nodes, explorer).

    Runs on waitress (a production WSGI server) and logs one line per request.
    """
    from coordinator.api import create_app
    from coordinator.ratelimit import RateLimiter
    from coordinator.server import serve

    config = CoordinatorConfig.load(config_path)
    db = CoordinatorDB(Path(config.db))
    app = create_app(
        db,
        token=config.api_token(),
        federation_id=config.federation_id,
        explorer=_explorer(config, db),
        rate_limit=RateLimiter(rate_limit, burst) if rate_limit > 0 else None,
    )
    serve(app, host, port, threads=threads)


def _explorer(config: CoordinatorConfig, db: CoordinatorDB) -> Callable[[], str]:
    """The explorer page: the audit's verdicts, kept current block by block and cached."""
    from coordinator.explorer import LiveExplorer
    from protocol.ledger import Ledger
    from protocol.store import open_store

    ledger = Ledger(config.rpc_url, config.contract, deployment_block=config.deployment_block)
    return LiveExplorer(ledger, open_store(config.store), db)


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
                click.option("--slices", type=click.IntRange(1, 16), default=4, show_default=True),
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

    Everything lives in the work directory; `lethe forget`, `status`, `rounds` and `audit`
    run from the same folder find it without flags.
    """
    from coordinator.federation import FederationSpec, LocalFederation, describe
    from coordinator.processes import port_open

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
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
    finally:
        click.echo("stopping the federation …")
        federation.stop()


@click.command()
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Where to write coordinator.json."
)
@click.option("--federation", "federation_id", required=True, help="Federation id.")
@click.option("--rpc", envvar="LETHE_RPC_URL", required=True, help="JSON-RPC URL.")
@click.option("--contract", envvar="LETHE_CONTRACT", required=True, help="Lethe contract.")
@click.option("--deployment-block", type=int, default=0, show_default=True)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="File holding the coordinator's Ethereum private key (hex).",
)
@click.option(
    "--store",
    envvar="LETHE_STORE_SPEC",
    required=True,
    help="Content store: a folder, or a Kubo RPC address.",
)
@click.option(
    "--db", type=click.Path(dir_okay=False), required=True, help="The coordinator's SQLite queue."
)
@click.option(
    "--slices",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Initial rounds: one per SISA slice (must match the nodes').",
)
def configure(
    out: str,
    federation_id: str,
    rpc: str,
    contract: str,
    deployment_block: int,
    key_file: str,
    store: str,
    db: str,
    slices: int,
) -> None:
    """Write the coordinator's config and an API token beside it (kept if it exists)."""
    import secrets

    from node.runtime import write_secret

    folder = Path(out).resolve().parent
    token = folder / "api.token"
    if not token.exists():
        write_secret(token, secrets.token_urlsafe(24).encode())
    CoordinatorConfig(
        federation_id=federation_id,
        rpc_url=rpc,
        contract=contract,
        coordinator_key_file=str(Path(key_file).resolve()),
        store=store,
        db=str(Path(db).resolve()),
        api_token_file=str(token),
        slices=slices,
        deployment_block=deployment_block,
    ).save(Path(out))
    click.echo(f"wrote {out}; API token in {token}")
