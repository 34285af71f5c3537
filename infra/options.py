"""Command-line options both CLIs share, so a flag means the same on every command."""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from protocol.ledger import CONTRACT_ENV, DEFAULT_DEPLOYMENT_FILE, DEPLOYMENT_ENV, RPC_URL_ENV
from protocol.store import STORE_ENV

FC = TypeVar("FC", bound=Callable[..., object])


def deployment_option(flag: str, what: str) -> Callable[[FC], FC]:
    """The deployment file option: read by `admit` and `audit`, written by `deploy`."""
    return click.option(
        flag,
        "deployment_file",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar=DEPLOYMENT_ENV,
        default=DEFAULT_DEPLOYMENT_FILE,
        show_default=True,
        help=f"{what} [env {DEPLOYMENT_ENV}].",
    )


def chain_options(command: FC) -> FC:
    """``--rpc`` and ``--contract``, both required: where a running role finds the chain."""
    command = click.option(
        "--contract",
        envvar=CONTRACT_ENV,
        required=True,
        help=f"The Lethe contract's address [env {CONTRACT_ENV}].",
    )(command)
    return click.option(
        "--rpc", envvar=RPC_URL_ENV, required=True, help=f"JSON-RPC URL [env {RPC_URL_ENV}]."
    )(command)


def store_option(command: FC) -> FC:
    """``--store``, required: a content store folder, or a Kubo RPC address."""
    return click.option(
        "--store",
        envvar=STORE_ENV,
        required=True,
        help=f"Content store: a folder, or a Kubo RPC address [env {STORE_ENV}].",
    )(command)
