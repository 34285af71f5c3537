"""`lethe-node run`: join a federation as a Flower SuperNode plus a warm ClientApp worker."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import click

from node.runtime import CONFIG_KEY, NodeRunConfig


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@click.command()
@click.option(
    "--allow-app",
    "extra_apps",
    multiple=True,
    metavar="PUBLISHER/NAME",
    help="Also run this Flower app's ClientApp (e.g. a benchmark baseline).",
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
    "--runtime-port",
    type=int,
    default=0,
    show_default="a free port",
    help="Port of the SuperNode's local Runtime API (127.0.0.1 only).",
)
def run(
    config_path: str,
    superlink: str,
    insecure: bool,
    root_certificates: str | None,
    runtime_port: int,
    extra_apps: tuple[str, ...],
) -> None:
    """Start the SuperNode (process isolation) and serve its ClientApp tasks in this process."""
    from node.worker import LETHE_APP, WorkerConfig, serve

    config = NodeRunConfig.load(config_path)
    host = superlink.rsplit(":", 1)[0]
    if insecure and host not in {"127.0.0.1", "localhost", "[::1]"}:
        raise click.UsageError("--insecure is allowed only for a SuperLink on loopback")
    if not insecure and not root_certificates:
        raise click.UsageError("give --root-certificates for TLS, or --insecure on loopback")
    port = runtime_port or _free_port()
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
    logging.basicConfig(level=logging.INFO, format=f"[{config.name}] %(message)s")
    click.echo(f"{config.name}: SuperNode → {superlink}, Runtime API 127.0.0.1:{port}")
    supernode = subprocess.Popen(argv, env={**os.environ})
    try:
        serve(WorkerConfig(f"127.0.0.1:{port}", allowed_apps=(LETHE_APP, *extra_apps)))
    finally:
        supernode.terminate()
        try:
            supernode.wait(timeout=10)
        except subprocess.TimeoutExpired:
            supernode.kill()
