"""`lethe-node run`: join a federation as a Flower SuperNode plus a warm ClientApp worker."""

import logging
import os
import sys
from pathlib import Path

import click

from infra import logs
from infra.net import free_port
from infra.options import chain_options, store_option
from node.keeper import SuperNodeKeeper
from node.runtime import CONFIG_KEY, NodeRunConfig, NodeRuntime


@click.command()
@click.option(
    "--allow-app",
    "extra_apps",
    multiple=True,
    metavar="PUBLISHER/NAME=DIR",
    help="Also answer runs of this app id with the ClientApp of the app project installed "
    "at DIR on this node (e.g. a benchmark baseline). A submitted FAB's code never runs.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The node's node.json (data, keys, chain, store).",
)
@click.option("--superlink", required=True, help="SuperLink address host:port.")
@click.option("--insecure", is_flag=True, help="Plain HTTP to the SuperLink (loopback only).")
@click.option(
    "--root-certificates",
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle to verify the SuperLink's TLS certificate.",
)
@click.option(
    "--auth-key",
    type=click.Path(exists=True, dir_okay=False),
    help="The SuperNode's private authentication key (OpenSSH ECDSA), for a SuperLink "
    "with SuperNode authentication (its public half registered there).",
)
@click.option(
    "--runtime-port",
    type=int,
    default=0,
    show_default="a free port",
    help="Port of the SuperNode's local Runtime API (127.0.0.1 only).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics (answers, refusals, retrain seconds, forgets, stake, "
    "rewards) at http://HOST:PORT/metrics [default: none].",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics are served on (0.0.0.0 in a container a scraper reaches).",
)
def run(
    config_path: str,
    superlink: str,
    insecure: bool,
    root_certificates: str | None,
    auth_key: str | None,
    runtime_port: int,
    extra_apps: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Start the SuperNode (process isolation) and serve its ClientApp tasks in this process."""
    from node.forget_watch import ForgetWatcher
    from node.worker import AppSpecError, WorkerConfig, parse_app, serve

    config = NodeRunConfig.load(config_path)
    try:
        apps = tuple(parse_app(spec) for spec in extra_apps)
    except AppSpecError as exc:
        raise click.UsageError(str(exc)) from exc
    host = superlink.rsplit(":", 1)[0]
    if insecure and host not in {"127.0.0.1", "localhost", "[::1]"}:
        raise click.UsageError("--insecure is allowed only for a SuperLink on loopback")
    if not insecure and not root_certificates:
        raise click.UsageError("give --root-certificates for TLS, or --insecure on loopback")
    port = runtime_port or free_port()
    argv = [
        sys.executable,
        "-m",
        "node.supernode",
        "--superlink",
        superlink,
        "--isolation",
        "process",
        "--port",
        str(port),
        "--node-config",
        f'{CONFIG_KEY}="{Path(config_path).resolve()}"',
    ]
    argv += ["--insecure"] if insecure else ["--root-certificates", str(root_certificates)]
    if auth_key:
        argv += ["--auth-supernode-private-key", str(Path(auth_key).resolve())]
    logs.configure(config.name, f"[{config.name}] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    click.echo(f"{config.name}: SuperNode → {superlink}, Runtime API 127.0.0.1:{port}")
    if metrics_port is not None:
        _serve_metrics(config, metrics_host, metrics_port)
    # Started again whenever it ends (e.g. its auth key was not registered yet).
    supernode = SuperNodeKeeper(
        argv, env={**os.environ}, log=lambda line: click.echo(f"{config.name}: {line}")
    ).start()
    # Forget requests naming this node are answered from the chain too, dispatched or not.
    watcher = ForgetWatcher(NodeRuntime(config)).start()
    try:
        serve(WorkerConfig(f"127.0.0.1:{port}", extra_apps=apps))
    finally:
        watcher.stop()
        supernode.stop()


def _serve_metrics(config: NodeRunConfig, host: str, port: int) -> None:
    from node.metrics import serve_metrics
    from node.runtime import NodeRuntime

    runtime = NodeRuntime(config)
    try:
        serve_metrics(port, host, ledger=lambda: runtime.ledger, address=runtime.address)
    except OSError as exc:
        raise click.UsageError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    click.echo(f"{config.name}: metrics at http://{host}:{port}/metrics")


@click.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    required=True,
    help="The node's SQLite store (from `lethe-node ingest`).",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    required=True,
    help="Where the node's keys and node.json are kept (created if missing).",
)
@click.option("--name", required=True, help="A name for logs, e.g. node-1.")
@chain_options
@store_option
@click.option(
    "--eth-key-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="File holding this node's Ethereum private key (hex).",
)
@click.option(
    "--record-key-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The federation's record key (from the coordinator's `lethe configure`, over a "
    "private channel): keys the record commitments the node announces.",
)
def join(
    db: str,
    home: str,
    name: str,
    rpc: str,
    contract: str,
    store: str,
    eth_key_file: str,
    record_key_file: str,
) -> None:
    """Write node.json, create the X25519 share key if missing, and register it on chain.

    The node must already be admitted by the contract owner (`lethe admit --node ADDR`).
    """
    from node.sisa import SisaNode
    from protocol.envelope import generate_private_key, private_key_bytes
    from protocol.errors import LetheError
    from protocol.files import write_secret

    folder = Path(home).resolve()
    share_key = folder / "x25519.key"
    if not share_key.exists():
        write_secret(share_key, private_key_bytes(generate_private_key()))
    try:
        with SisaNode.open(db) as node:
            federation_id = node.config.federation_id
        config = NodeRunConfig(
            federation_id=federation_id,
            name=name,
            db=str(Path(db).resolve()),
            eth_key_file=str(Path(eth_key_file).resolve()),
            x25519_key_file=str(share_key),
            rpc_url=rpc,
            contract=contract,
            store=store,
            record_key_file=str(Path(record_key_file).resolve()),
        )
        config.save(folder / "node.json")
        runtime = NodeRuntime(config)
        runtime.record_key  # noqa: B018  (a malformed key fails here, not in the first round)
        if not runtime.ledger.is_node(runtime.address):
            staked = runtime.ledger.stake_of(runtime.address).amount
            required = runtime.ledger.stake_policy().required_stake
            first = (
                f"stake first (`lethe-node stake --config {folder / 'node.json'} --amount …`: "
                f"{required - staked} wei missing), then "
                if staked < required
                else ""
            )
            raise click.ClickException(
                f"{runtime.address} is not admitted yet: {first}the owner runs "
                f"`lethe admit --node {runtime.address}`"
            )
        if runtime.ledger.node_key(runtime.address) != runtime.public_key:
            tx = runtime.ledger.register_key(runtime.public_key)
            click.echo(f"{name}: share key registered (tx {tx.tx_hash})")
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: {folder / 'node.json'} ready; start with `lethe-node run --config …`")
