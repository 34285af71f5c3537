"""The owner's two onboarding commands: `lethe invite` and `lethe admit REQUEST`.

Both work on a `lethe up` work directory (``--workdir``, ``LETHE_WORKDIR``, default
``.lethe/federation``): its ``federation.json`` says where the federation runs, its
coordinator config gives the recipe, and ``owner/invitations.json`` keeps the hash of
every code handed out and the address that used it (a code admits once).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from infra.workdir import WORKDIR_ENV, WorkDir
from protocol.errors import LetheError
from protocol.files import write_atomic
from protocol.invitation import (
    INVITATION_VERSION,
    AdmissionRequest,
    Invitation,
    Recipe,
    code_hash,
    new_code,
    seal_record_key,
)

workdir_option = click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar=WORKDIR_ENV,
    help=f"Work directory of `lethe up` [env {WORKDIR_ENV}; default .lethe/federation].",
)


def _ledgers(place: WorkDir, key: str | None) -> Any:
    """The contract at the work directory's chain, read-only or signing with ``key``."""
    from protocol.ledger import Ledger

    rpc = place.rpc_url()
    if rpc is None:
        raise click.UsageError(f"no federation.json in {place.root}: run `lethe up` first")
    return Ledger.from_deployment(place.deployment, rpc_url=rpc, private_key=key)


def _invitations(place: WorkDir) -> tuple[Path, dict[str, Any]]:
    path = place.root / "owner" / "invitations.json"
    try:
        return path, dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return path, {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)


@click.command()
@workdir_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default="invitation.json",
    show_default=True,
    help="Where to write the invitation (hand it to the newcomer).",
)
@click.option(
    "--superlink", help="SuperLink address the newcomer reaches [default: the work directory's]."
)
@click.option(
    "--ca-cert",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The SuperLink's CA certificate (PEM) [default: none, loopback SuperLink only].",
)
@click.option(
    "--supernode-auth",
    is_flag=True,
    help="The SuperLink authenticates SuperNodes: `lethe admit` registers the newcomer's key.",
)
def invite(
    workdir: Path | None,
    out: Path,
    superlink: str | None,
    ca_cert: Path | None,
    supernode_auth: bool,
) -> None:
    """As the owner: write an invitation with a one-time code for one new participant."""
    from coordinator.config import CoordinatorConfig

    place = WorkDir.resolve(workdir)
    summary = place.read_summary()
    try:
        ledger = _ledgers(place, None)
        config = CoordinatorConfig.load(place.root / "coordinator" / "coordinator.json")
        code = new_code()
        invitation = Invitation(
            version=INVITATION_VERSION,
            federation_id=config.federation_id,
            chain_id=ledger.chain_id,
            rpc_url=ledger.rpc_url,
            contract=ledger.address,
            deployment_block=ledger.deployment_block,
            owner=ledger.owner(),
            store=str(summary.get("store") or place.store),
            superlink=superlink or str(summary.get("superlink") or ""),
            ca_certificate=ca_cert.read_text() if ca_cert else None,
            supernode_auth=supernode_auth,
            recipe=Recipe(
                federation_id=config.federation_id,
                shards=config.shards,
                slices=config.slices,
                labels=list(config.labels),
                feature_map="none",
            ),
            stake_wei=ledger.stake_policy().required_stake,
            code=code,
            issued_block=ledger.block_number(),
        )
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
    if not invitation.superlink:
        raise click.UsageError("no SuperLink address in the work directory: give --superlink")
    path, pending = _invitations(place)
    pending[code_hash(code)] = {
        "issued_at": time.time(),
        "supernode_auth": supernode_auth,
        "used_by": None,
    }
    _save(path, pending)
    write_atomic(out, invitation.to_json().encode(), mode=0o600)
    click.echo(f"invitation written to {out} (one-time code; hand it to the newcomer)")
    click.echo(f"they run: lethe-node join --invite {out.name} --csv RECORDS.csv")


def admit_request(request_file: Path, workdir: Path | None, key: str | None) -> None:
    """`lethe admit REQUEST`: check the code and signature, admit, register, seal the key."""
    from infra import mailbox

    place = WorkDir.resolve(workdir)
    try:
        request = AdmissionRequest.from_json(request_file.read_text())
        request.check_signature()
    except OSError as exc:
        raise click.UsageError(f"cannot read {request_file}: {exc.strerror}") from exc
    except LetheError as exc:
        raise click.ClickException(f"refused: {exc}") from exc
    path, pending = _invitations(place)
    matched = next((h for h in pending if request.code_matches(h)), None)
    if matched is None:
        raise click.ClickException("refused: the request's code is not one this owner issued")
    used_by = pending[matched]["used_by"]
    if used_by is not None and used_by.lower() != request.address.lower():
        raise click.ClickException(f"refused: this invitation was already used by {used_by}")
    try:
        ledger = _ledgers(place, key)
        assert key is not None
        if ledger.account is None or ledger.account.lower() != ledger.owner().lower():
            raise click.UsageError("sign with the contract owner's key (--key, --dev-account)")
        required = ledger.stake_policy().required_stake
        staked = ledger.stake_of(request.address).amount
        if staked < required:
            raise click.ClickException(
                f"refused for now: {request.address} staked {staked} of {required} wei; "
                "the newcomer's `lethe-node join` stakes when it has the funds"
            )
        pending[matched]["used_by"] = request.address
        _save(path, pending)
        if not ledger.is_node(request.address):
            click.echo(
                f"admitted {request.address}: tx {ledger.admit_node(request.address).tx_hash}"
            )
        if pending[matched].get("supernode_auth"):
            _register_supernode(place, request)
        record_key = (place.root / "coordinator" / "record.key").read_bytes()
        payload = seal_record_key(record_key, request, ledger.owner())
        tx = mailbox.send(ledger.rpc_url, key, request.address, payload)
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot read the record key: {exc.strerror}") from exc
    click.echo(f"record key sealed to {request.name}'s share key and sent (tx {tx})")


def _register_supernode(place: WorkDir, request: AdmissionRequest) -> None:
    """``flwr supernode register`` the newcomer's auth key with the SuperLink."""
    key_file = place.root / "owner" / f"{request.name}.pub"
    write_atomic(key_file, (request.auth_key.strip() + "\n").encode(), mode=0o644)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "flwr"),
            "supernode",
            "register",
            str(key_file),
            "lethe",
            "--name",
            request.name,
        ],
        env={"FLWR_HOME": str(place.root / "flwr"), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise click.ClickException(f"flwr supernode register failed: {result.stderr.strip()}")
    click.echo(f"SuperNode key of {request.name} registered with the SuperLink")
