"""`lethe cid` and `lethe store put|get|export-car`: content by CID from the command line."""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import click

from protocol.cid import cid_of_stream
from protocol.errors import StoreError
from protocol.store import DEFAULT_DIR, STORE_ENV, ContentStore, LocalStore, open_store


@click.command()
@click.argument("file", type=click.File("rb"))
def cid(file: BinaryIO) -> None:
    """Print the CID of FILE as `ipfs add --cid-version=1` gives it, without storing it."""
    click.echo(cid_of_stream(file))


@click.group()
def store() -> None:
    """Put and get content by CID: the local blockstore, or any IPFS node's RPC API."""


def store_location_option(command: Callable[..., None]) -> Callable[..., None]:
    """Add ``--store DIR|ADDR``: which content store a command reads (None: the default)."""
    return click.option(
        "--store",
        "store_spec",
        metavar="DIR|ADDR",
        envvar=STORE_ENV,
        help=(
            "Local blockstore folder, or IPFS (Kubo) RPC API such as /ip4/127.0.0.1/tcp/5001 "
            f"[env {STORE_ENV}; default {DEFAULT_DIR}]."
        ),
    )(command)


def _with_store(command: Callable[..., None]) -> Callable[..., None]:
    """Add the store options and --timeout, open the store, turn its errors into exit 1."""

    @store_location_option
    @click.option(
        "--timeout", default=30.0, show_default=True, help="Seconds to wait for the IPFS API."
    )
    @functools.wraps(command)
    def wrapper(store_spec: str | None, timeout: float, **kwargs: object) -> None:
        try:
            command(open_store(store_spec, timeout=timeout), **kwargs)
        except (StoreError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


@store.command()
@click.argument("file", type=click.File("rb"))
@_with_store
def put(backend: ContentStore, file: BinaryIO) -> None:
    """Store and pin FILE; print its CID."""
    click.echo(backend.put(file.read()))


@store.command()
@click.argument("cid")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout."
)
@_with_store
def get(backend: ContentStore, cid: str, output: Path | None) -> None:
    """Write the verified content of CID to stdout or --output."""
    data = backend.get(cid)
    if output is None:
        click.echo(data, nl=False)
    else:
        output.write_bytes(data)


@store.command(name="export-car")
@click.argument("cid")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@_with_store
def export_car(backend: ContentStore, cid: str, output: Path) -> None:
    """Write CID's DAG as a CAR v1 file that `ipfs dag import` loads under the same CID."""
    if not isinstance(backend, LocalStore):
        raise click.ClickException(
            "export-car reads the local blockstore; on an IPFS node use `ipfs dag export`"
        )
    backend.write_car(cid, output)
