"""`lethe-node join --invite FILE --csv FILE`: from an invitation to a running node.

Every key is made here and only public halves leave: the Ethereum key (unless
``--eth-key-file`` names a funded one), the X25519 share key and the SuperNode's
authentication key. The records are ingested with the federation's recipe, the stake the
contract asks is paid, and one admission request is written and printed for the owner's
`lethe admit REQUEST`. Then the command waits for the owner's answer on chain (the
admission and the record key sealed to this node's share key, see
:mod:`protocol.invitation`), registers the share key and becomes `lethe-node run`.
Run again after a stop, it reuses what it made and goes on where it was.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from node.run_cli import join as join_configured
from node.runtime import NodeRunConfig

POLL_S = 1.0


def _keys(home: Path, eth_key_file: Path | None) -> tuple[Path, Path, Path, str]:
    """(eth key, x25519 key, auth key files, auth public key), made if missing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from eth_account import Account

    from protocol.envelope import generate_private_key, private_key_bytes
    from protocol.files import write_secret

    eth = eth_key_file.resolve() if eth_key_file else home / "eth.key"
    if not eth.exists():
        write_secret(eth, ("0x" + bytes(Account.create().key).hex()).encode())
    share = home / "x25519.key"
    if not share.exists():
        write_secret(share, private_key_bytes(generate_private_key()))
    auth = home / "auth.key"
    if not auth.exists():
        private = ec.generate_private_key(ec.SECP384R1())  # what Flower's SuperNode takes
        write_secret(
            auth,
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
    loaded = serialization.load_ssh_private_key(auth.read_bytes(), password=None)
    public = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return eth, share, auth, public.decode()


def _ingest(ctx: click.Context, db: Path, csv: Path, recipe: Any, name: str) -> None:
    from node.commands import ingest

    if db.exists():
        return
    ctx.invoke(
        ingest,
        db=db,
        csv_path=csv,
        federation=recipe.federation_id,
        node_id=name,
        shards=recipe.shards,
        slices=recipe.slices,
        labels=",".join(recipe.labels),
        feature_map=recipe.feature_map,
    )


def _stake(ledger: Any, address: str) -> None:
    from protocol.stakes import format_ether

    missing = ledger.stake_policy().required_stake - ledger.stake_of(address).amount
    if missing <= 0:
        return
    balance = ledger.balance(address)
    if balance < missing:
        raise click.ClickException(
            f"the federation asks a stake of {format_ether(missing)} more; {address} holds "
            f"{format_ether(balance)}: fund it, then run the same command again"
        )
    click.echo(f"staking {format_ether(missing)} (tx {ledger.stake(missing).tx_hash})")


def _await_record_key(
    invitation: Any, request: Any, share_key: bytes, ledger: Any, timeout: float
) -> bytes:
    """The record key the owner sealed to us, once admitted (LedgerError/timeout else)."""
    from infra import mailbox
    from protocol.errors import ProtocolError
    from protocol.invitation import open_record_key

    scanned = invitation.issued_block
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = ledger.block_number()
        for block, payload in mailbox.received(
            invitation.rpc_url, request.address, invitation.owner, scanned
        ):
            try:
                key = open_record_key(payload, share_key, request, invitation.owner)
            except ProtocolError as exc:
                click.echo(f"block {block}: a message from the owner that is not ours ({exc})")
                continue
            if ledger.is_node(request.address):
                return key
        scanned = head + 1
        time.sleep(POLL_S)
    raise click.ClickException(
        f"no admission within {timeout:.0f} s: has the owner run `lethe admit` on the request?"
    )


def join_invited(
    ctx: click.Context,
    invite: Path,
    csv: Path,
    home: Path,
    name: str | None,
    eth_key_file: Path | None,
    wait_s: float,
    run: bool,
) -> None:
    """The newcomer's whole side of the join (see the module docstring)."""
    from eth_account import Account

    from protocol.errors import LetheError
    from protocol.files import write_atomic, write_secret
    from protocol.invitation import AdmissionRequest, Invitation, share_key_hex
    from protocol.ledger import Ledger

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    try:
        invitation = Invitation.load(invite)
        eth, share, auth, auth_public = _keys(home, eth_key_file)
        private_key = eth.read_text().strip()
        address = str(Account.from_key(private_key).address)
        name = name or f"node-{address[2:10].lower()}"
        ledger = Ledger(
            invitation.rpc_url,
            invitation.contract,
            private_key=private_key,
            deployment_block=invitation.deployment_block,
        )
        if ledger.chain_id != invitation.chain_id:
            raise click.ClickException(
                f"{invitation.rpc_url} serves chain {ledger.chain_id}, the invitation names "
                f"chain {invitation.chain_id}"
            )
        db = home / "node.sqlite"
        _ingest(ctx, db, csv, invitation.recipe, name)
        _stake(ledger, address)
        config_path = home / "node.json"
        NodeRunConfig(
            federation_id=invitation.federation_id,
            name=name,
            db=str(db),
            eth_key_file=str(eth),
            x25519_key_file=str(share),
            rpc_url=invitation.rpc_url,
            contract=invitation.contract,
            store=invitation.store,
            deployment_block=invitation.deployment_block,
            record_key_file=str(home / "record.key"),
        ).save(config_path)
        request = AdmissionRequest.signed(
            private_key,
            federation_id=invitation.federation_id,
            name=name,
            address=address,
            share_key="0x" + share_key_hex(share.read_bytes()),
            auth_key=auth_public,
            code=invitation.code,
        )
        request_file = home / "admission-request.json"
        write_atomic(request_file, request.to_json().encode(), mode=0o644)
        click.echo(f"admission request written to {request_file}; the owner runs:")
        click.echo(f"  lethe admit {request_file.name}")
        click.echo(request.to_json(), nl=False)
        if wait_s <= 0:
            return
        click.echo("waiting for the owner's admission …")
        record_key = _await_record_key(invitation, request, share.read_bytes(), ledger, wait_s)
        write_secret(home / "record.key", record_key)
        public = bytes.fromhex(request.share_key[2:])
        if ledger.node_key(address) != public:
            click.echo(f"share key registered (tx {ledger.register_key(public).tx_hash})")
    except LetheError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: admitted; record key received; node.json ready")
    if run:
        _become_node(config_path, invitation, home, auth)


def _become_node(config_path: Path, invitation: Any, home: Path, auth: Path) -> None:
    """Replace this process with `lethe-node run` (same pid: whoever started us stops it)."""
    argv = [
        str(Path(sys.executable).parent / "lethe-node"),
        "run",
        "--config",
        str(config_path),
        "--superlink",
        invitation.superlink,
    ]
    if invitation.ca_certificate is None:
        argv.append("--insecure")
    else:
        ca = home / "superlink-ca.pem"
        ca.write_text(invitation.ca_certificate)
        argv += ["--root-certificates", str(ca)]
    if invitation.supernode_auth:
        argv += ["--auth-key", str(auth)]
    click.echo("starting: " + " ".join(argv[1:]))
    sys.stdout.flush()
    os.execv(argv[0], argv)


@click.command()
@click.option(
    "--invite",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The owner's invitation (`lethe invite`): join with it.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="With --invite: your records (columns id, text, label).",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where keys, records and node.json are kept [with --invite: ./lethe-node].",
)
@click.option("--name", help="A name for logs [with --invite: node-<address prefix>].")
@click.option(
    "--eth-key-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="This node's Ethereum key [with --invite: made in --home if not given].",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="With --invite: seconds to wait for the admission (0: print the request, stop).",
)
@click.option(
    "--run/--no-run",
    default=True,
    show_default=True,
    help="With --invite: become `lethe-node run` once admitted.",
)
@click.option("--db", help="Without --invite: the node's SQLite store.")
@click.option("--rpc", envvar="LETHE_RPC_URL", help="Without --invite: JSON-RPC URL.")
@click.option("--contract", envvar="LETHE_CONTRACT", help="Without --invite: the contract.")
@click.option("--store", envvar="LETHE_STORE", help="Without --invite: the content store.")
@click.option("--record-key-file", help="Without --invite: the federation's record key.")
@click.pass_context
def join(
    ctx: click.Context,
    invite: Path | None,
    csv_path: Path | None,
    home: Path | None,
    name: str | None,
    eth_key_file: Path | None,
    wait_s: float,
    run: bool,
    db: str | None,
    rpc: str | None,
    contract: str | None,
    store: str | None,
    record_key_file: str | None,
) -> None:
    """Join a federation: with --invite and --csv, in one command (keys, records, stake,
    admission request, then the node); without, configure an admitted node by hand."""
    if invite is not None:
        if csv_path is None:
            raise click.UsageError("--invite needs --csv (your records)")
        join_invited(
            ctx, invite, csv_path, home or Path("lethe-node"), name, eth_key_file, wait_s, run
        )
        return
    given = {
        "--db": db,
        "--home": home,
        "--name": name,
        "--rpc": rpc,
        "--contract": contract,
        "--store": store,
        "--eth-key-file": eth_key_file,
        "--record-key-file": record_key_file,
    }
    missing = [option for option, value in given.items() if value is None]
    if missing:
        raise click.UsageError(f"give --invite and --csv, or {', '.join(missing)}")
    ctx.invoke(
        join_configured,
        db=db,
        home=str(home),
        name=name,
        rpc=rpc,
        contract=contract,
        store=store,
        eth_key_file=str(eth_key_file),
        record_key_file=record_key_file,
    )
