"""`lethe audit`: check a federation's whole history from the chain and the content store.

Exit codes: 0 every round and forget is consistent; 1 an inconsistency (the report says
what and where); 2 a usage error; 3 the chain could not be read (no verdict).
"""

import json
from pathlib import Path

import click

from coordinator.store_cli import store_location_option
from infra.options import deployment_option
from protocol.errors import LedgerError
from protocol.ledger import CONTRACT_ENV, RPC_URL_ENV, Ledger
from protocol.store import open_store

EXIT_INCONSISTENT = 1
EXIT_UNREADABLE = 3


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
    return Ledger.from_deployment(deployment_file, rpc_url=rpc, timeout=timeout)


@click.command()
@click.option("--rpc", envvar=RPC_URL_ENV, help=f"Ethereum JSON-RPC URL [env {RPC_URL_ENV}].")
@click.option(
    "--contract",
    envvar=CONTRACT_ENV,
    metavar="ADDR",
    help=f"Lethe contract address [env {CONTRACT_ENV}; default: the deployment file's].",
)
@deployment_option("--deployment", "Deployment file, read when no --contract is given")
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
    deployment_file: Path,
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
    from coordinator.audit import audit as run_audit

    store = open_store(store_spec, timeout=timeout)
    try:
        ledger = _ledger(rpc, contract, deployment_file, timeout)
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
