"""`lethe audit`: check a federation's whole history from the chain and the content store.

Exit codes: 0 every round and forget is consistent; 1 an inconsistency (the report says
what and where); 2 a usage error (a missing deployment file or store folder included:
that is no verdict either); 3 the chain could not be read (no verdict).

Without flags it audits the federation `lethe up` runs from this folder (its work
directory, see :mod:`infra.workdir`), or the one `lethe deploy` recorded in
``.lethe/chain/deployment.json`` if that exists.
"""

import json
from pathlib import Path

import click

from infra.workdir import WORKDIR_ENV, WorkDir
from protocol.errors import LedgerError
from protocol.ledger import (
    CONTRACT_ENV,
    DEFAULT_DEPLOYMENT_FILE,
    DEPLOYMENT_ENV,
    RPC_URL_ENV,
    Ledger,
)
from protocol.store import DEFAULT_DIR, open_store
from protocol.store.kubo import is_api_address
from verifier.store_cli import store_location_option

EXIT_INCONSISTENT = 1
EXIT_UNREADABLE = 3


def _deployment_file(deployment_file: Path | None, workdir: Path | None) -> Path:
    """--deployment, else --workdir's, else `lethe deploy`'s if it exists, else `lethe up`'s."""
    if deployment_file is not None:
        found = deployment_file
    elif workdir is not None:
        found = WorkDir(workdir).deployment
    elif DEFAULT_DEPLOYMENT_FILE.is_file():
        found = DEFAULT_DEPLOYMENT_FILE
    else:
        found = WorkDir.resolve().deployment
    if not found.is_file():
        raise click.UsageError(
            f"no deployment file at {found}: run `lethe up` (or `lethe deploy`) first, or "
            "name the federation with --workdir, --deployment, or --rpc and --contract"
        )
    return found


def _store_spec(spec: str | None, deployment_file: Path | None) -> str:
    """The store to read: --store (or its variable), else the work directory's.

    A deployment file at ``<workdir>/chain/deployment.json`` beside a ``<workdir>/store``
    folder is a `lethe up` work directory: its store is the one. A local folder that does
    not exist is a usage error, never an audit failure.
    """
    if not spec:
        sibling = None
        if deployment_file is not None and deployment_file.parent.name == "chain":
            sibling = deployment_file.parent.parent / "store"
        spec = str(sibling if sibling is not None and sibling.is_dir() else DEFAULT_DIR)
    if not is_api_address(spec) and not Path(spec).is_dir():
        raise click.UsageError(
            f"no content store folder at {spec}: give --store DIR or an IPFS API address"
        )
    return spec


def _ledger(rpc: str | None, contract: str | None, deployment_file: Path, timeout: float) -> Ledger:
    """The contract named by --contract (with --rpc), else by the deployment file."""
    if contract:
        if not rpc:
            raise click.UsageError(f"--contract needs --rpc (or {RPC_URL_ENV})")
        try:
            ledger = Ledger(rpc, contract, timeout=timeout)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        ledger.check_deployed()
        ledger.deployment_block = ledger.deployed_block()
        return ledger
    if rpc is None and (place := WorkDir.holding(deployment_file)) is not None:
        rpc = place.rpc_url()  # where this `lethe up` runs the chain now
    return Ledger.from_deployment(deployment_file, rpc_url=rpc, timeout=timeout)


@click.command()
@click.option("--rpc", envvar=RPC_URL_ENV, help=f"Ethereum JSON-RPC URL [env {RPC_URL_ENV}].")
@click.option(
    "--contract",
    envvar=CONTRACT_ENV,
    metavar="ADDR",
    help=f"Lethe contract address [env {CONTRACT_ENV}; default: the deployment file's].",
)
@click.option(
    "--deployment",
    "deployment_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar=DEPLOYMENT_ENV,
    help=f"Deployment file, read when no --contract is given [env {DEPLOYMENT_ENV}; "
    f"default: the work directory's, or {DEFAULT_DEPLOYMENT_FILE} if it exists].",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar=WORKDIR_ENV,
    help=f"Work directory of `lethe up` [env {WORKDIR_ENV}; default .lethe/federation].",
)
@store_location_option
@click.option("--federation-id", help="Federation the history must belong to [default: its own].")
@click.option(
    "--from-block",
    type=click.IntRange(min=0),
    help="First block to replay [default: the contract's deployment block].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per RPC or IPFS call.")
def audit(
    rpc: str | None,
    contract: str | None,
    deployment_file: Path | None,
    workdir: Path | None,
    store_spec: str | None,
    federation_id: str | None,
    from_block: int | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Replay the contract's events and check every round and forget against the store.

    Exits 0 only if everything holds, 1 at the first inconsistency, 3 if the chain cannot
    be read.
    """
    from verifier.audit import audit as run_audit

    deployment = None if contract else _deployment_file(deployment_file, workdir)
    beside = deployment or (WorkDir(workdir).deployment if workdir else None)
    try:
        ledger = _ledger(rpc, contract, deployment or Path(), timeout)
        store = open_store(_store_spec(store_spec, beside), timeout=timeout)
        report = run_audit(ledger, store, federation_id=federation_id, from_block=from_block)
    except LedgerError as exc:
        click.echo(f"error: cannot read the chain: {exc}", err=True)
        raise SystemExit(EXIT_UNREADABLE) from exc
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        if report.from_block > ledger.deployment_block:
            click.echo(
                f"note: replay starts at block {report.from_block}, after the deployment block "
                f"{ledger.deployment_block}: the roster and rounds before it are unknown"
            )
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        raise SystemExit(EXIT_INCONSISTENT)
