"""`lethe demo`: the main job on embedded defaults, start to finish, on this machine.

A 3-node federation on the default dataset: anvil + contract, SuperLink, SuperNodes,
coordinator API and ServerApp; one secure round per SISA slice; a data subject's forget
request over HTTP followed to ``completed``; the certificate fetched by CID and verified;
the data subject checks it is about their record with the node's receipt; each node's
stake and the rewards its approved rounds earned (claimed with its own key); the chain and
store audited. Every process it starts is stopped at the end.
"""

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher.commands import federation_options

if TYPE_CHECKING:
    from node.store import Record


def _short(value: str | None) -> str:
    return "-" if not value else (value if len(value) <= 18 else f"{value[:10]}…{value[-6:]}")


def _print_round(r: dict[str, Any]) -> None:
    acc = "n/a" if r.get("accuracy") is None else f"{r['accuracy']:.3f}"
    # 0-based, as in certificates (slices_retrained) and `lethe rounds`
    label = "all slices" if r.get("through_slice") is None else f"slices 0..{r['through_slice']}"
    answered = r.get("responders", {}).get("aggregate", [])
    click.echo(
        f"  round {r['round']:>2} ({label}): accuracy {acc} | {len(answered)} nodes answered, "
        f"dropped {len(r.get('dropped', []))} | t={r.get('threshold')} | "
        f"model {_short(r.get('global_model_cid'))} | propose tx {_short(r.get('propose_tx'))} | "
        f"approvals {len(r.get('approvals', {}))}/{r.get('quorum')}"
    )


def _pick_record(federation: Any) -> "Record":
    """A record the first node still holds: the demo's data subject keeps its copy."""
    from node.sisa import SisaNode

    with SisaNode.open(federation.nodes[0].config.db) as node:
        ids = node.store.record_ids()
        if not ids:
            raise click.ClickException("node-1 holds no records any more; run with --fresh")
        return node.store.records([ids[len(ids) // 2]])[0]


@click.command()
@federation_options(".lethe/demo")
@click.option("--fresh", is_flag=True, help="Start from an empty work directory.")
def demo(workdir: str, nodes: int, records_per_node: int, slices: int, fresh: bool) -> None:
    """Run a federation, forget a record over HTTP, verify and audit it."""
    from launcher.federation import FederationSpec, LocalFederation, predates_record_keys
    from protocol.certificate import Certificate
    from protocol.receipt import Receipt
    from protocol.store import LocalStore

    started = time.monotonic()
    path = Path(workdir)
    if path.exists() and not fresh and predates_record_keys(path):
        click.echo(f"-- {path} predates keyed record commitments: starting fresh")
        fresh = True
    if fresh and path.exists():
        shutil.rmtree(path)
    federation = LocalFederation(
        path,
        FederationSpec(nodes=nodes, records_per_node=records_per_node, slices=slices),
        report=lambda line: click.echo(f"  {line}"),
    )
    click.echo(f"== Lethe demo: {nodes} nodes, {records_per_node} records each, {slices} slices")
    click.echo("-- setting up chain, contract, node data and keys")
    try:
        federation.up()
        click.echo(
            f"-- federation running: SuperLink {federation.superlink_address}, "
            f"API {federation.api_url}, logs in {federation.group.log_dir}"
        )
        earlier = {r["round"] for r in federation.wait_rounds(0)}
        if earlier:
            click.echo(
                f"-- {len(earlier)} rounds from an earlier run in {workdir} are kept "
                "(--fresh starts over); their slices are trained already"
            )
        else:
            click.echo(
                "-- secure rounds (one per slice; nodes approve on chain with their own keys)"
            )
        federation.wait_rounds(
            slices, on_round=lambda r: None if r["round"] in earlier else _print_round(r)
        )

        mine = _pick_record(federation)
        record_id = mine.id
        click.echo(f"-- a data subject asks to forget record {record_id!r}: POST /forget")
        request = federation.forget(record_id)
        click.echo(f"  accepted: request {request['request_id']} ({request['state']})")

        def on_state(state: dict[str, Any]) -> None:
            tx = state["tx"]
            click.echo(
                f"  {state['state']:<10} request tx {_short(tx['request'])} | certify tx "
                f"{_short(tx['certify'])} | complete tx {_short(tx['complete'])} | "
                f"certificate {state['certificate_cid'] or '-'}"
            )

        final = federation.follow(request["request_id"], on_state=on_state)
        if final["state"] != "completed":
            raise click.ClickException(f"forget request ended {final['state']}: {final['reason']}")
        rounds = federation.wait_rounds(0)
        _print_round(next(r for r in rounds if r["round"] == final["round"]))

        store = LocalStore(federation.workdir / "store")
        certificate = Certificate.from_bytes(store.get(final["certificate_cid"]))
        signer = certificate.verify(expected_signer=final["node_address"])
        click.echo(f"-- certificate {final['certificate_cid']}")
        click.echo(
            f"  signed by {signer} (the owning node); record leaf "
            f"{_short(certificate.record_leaf)} "
            f"proven in old slice root {_short(certificate.old_slice_root)}; retrained slices "
            f"{list(certificate.slices_retrained)} ({certificate.samples_retrained} samples) "
            f"from checkpoint {_short(certificate.from_checkpoint_hash)}; model "
            f"{_short(certificate.model_hash_before)} → {_short(certificate.model_hash_after)}"
        )
        click.echo("  verification: OK")
        receipt = Receipt.from_json(federation.receipt(request["request_id"]))
        receipt.check(certificate, mine.id, mine.text, mine.label)
        click.echo(
            f"  the data subject's check with the node's receipt (salt "
            f"{_short(receipt.record_salt)}): the certificate is about their record: OK"
        )
        _stakes(federation)
        _audit(federation)
    finally:
        click.echo("-- stopping every process the demo started")
        federation.stop()
    click.echo(f"== demo done in {time.monotonic() - started:.0f} s")


def _stakes(federation: Any) -> None:
    """Each node claims what its rounds earned, then its stake and rewards are shown."""
    from protocol.stakes import format_ether

    if not federation.staking:
        click.echo("-- stakes: this contract predates stakes and rewards (--fresh starts over)")
        return
    click.echo("-- stakes and rewards (each node claims its approved rounds with its own key)")
    claims = {i: federation.claim_rewards(i) for i in range(len(federation.nodes))}
    book = federation.stakes()
    for i, handle in enumerate(federation.nodes):
        standing = book.node(handle.address)
        tx = claims[i]
        click.echo(
            f"  node-{i + 1} {_short(handle.address)}: stake {format_ether(standing.stake)} | "
            f"rewards {format_ether(standing.claimed)} for {len(standing.claimed_rounds)} "
            f"approved rounds (claim tx {_short(tx.tx_hash if tx else None)}) | slashed "
            f"{format_ether(standing.slashed)}"
        )
    click.echo(f"  reward pool left: {format_ether(book.pool)}")


def _audit(federation: Any) -> None:
    """Replay the chain's events and check every round and forget against the store."""
    from protocol.ledger import Ledger
    from protocol.store import LocalStore
    from verifier.audit import audit

    ledger = Ledger(
        federation.devnet.rpc_url,
        federation.deployment.address,
        deployment_block=federation.deployment.block_number,
    )
    report = audit(ledger, LocalStore(federation.workdir / "store"))
    click.echo("-- audit (chain events + content store only, as any outsider can)")
    for line in report.lines():
        click.echo(f"  {line}")
    if not report.ok:
        raise click.ClickException(report.verdict())
