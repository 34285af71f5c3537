"""`lethe secagg-demo`: one full secure-aggregation round between in-process parties.

It runs the transport-free protocol of ``protocol.secure_sum`` exactly as the
Flower apps will, with the coordinator's routing done by dictionary lookups, and
prints what every party and the coordinator saw. Until the federation exists,
this is what ``make demo`` runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import click
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol import secure_sum as ss
from protocol import shamir
from protocol.envelope import generate_private_key, open_envelope, public_key_bytes
from protocol.errors import ProtocolError
from protocol.field import FixedPoint

HEAD_SIZE = 384 * 3 + 3
"""Parameters of the default model: a 3-class linear head on 384-d MiniLM embeddings."""

T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _coalition_guess(
    roster: ss.Roster,
    keys: dict[str, X25519PrivateKey],
    coalition: list[str],
    victim: str,
    envelopes: dict[str, bytes],
) -> np.ndarray:
    """What ``coalition`` (t − 1 nodes) gets by pooling their shares of ``victim``'s model."""
    rows = []
    for node in coalition:
        context = ss.envelope_context(roster, victim, node)
        plain = open_envelope(
            keys[node], roster.member(victim).public_key, envelopes[node], context=context
        )
        rows.append(np.frombuffer(plain, dtype=ss.WIRE_DTYPE).astype(np.int64))
    return shamir.reconstruct([roster.member(n).x for n in coalition], rows)


@click.command("secagg-demo")
@click.option("--nodes", "n", default=3, show_default=True, type=click.IntRange(1, 200))
@click.option(
    "--threshold",
    "t",
    type=click.IntRange(1),
    help="Shares needed to reconstruct  [default: ⌊nodes/2⌋ + 1]",
)
@click.option(
    "--dim",
    "d",
    default=HEAD_SIZE,
    show_default=True,
    type=click.IntRange(1),
    help="Model parameters per node (default: the 384×3+3 linear head).",
)
@click.option(
    "--drop",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Nodes that send their shares, then vanish before stage 3.",
)
@click.option(
    "--drop-before-share",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Nodes that vanish before stage 2; their models are left out of the sum.",
)
@click.option("--clip", default=8.0, show_default=True, help="Fixed-point range ±clip.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic models.")
def secagg_demo(
    n: int, t: int | None, d: int, drop: int, drop_before_share: int, clip: float, seed: int
) -> None:
    """Run one secure-aggregation round between in-process nodes and show who saw what."""
    t = ss.default_threshold(n) if t is None else t
    if t > n:
        raise click.BadParameter(f"threshold {t} exceeds the {n} nodes", param_hint="--threshold")
    if drop + drop_before_share > n:
        raise click.BadParameter(f"cannot drop {drop + drop_before_share} of {n} nodes")
    try:
        _run(n, t, d, drop, drop_before_share, clip, seed)
    except (ProtocolError, ValueError) as exc:
        raise click.ClickException(f"the round failed: {exc}") from exc


def _run(n: int, t: int, d: int, drop: int, drop_early: int, clip: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = {f"node-{i}": generate_private_key() for i in range(1, n + 1)}
    roster = ss.Roster(
        federation_id="lethe-demo",
        round=1,
        threshold=t,
        members=tuple(
            ss.Member(node, i, public_key_bytes(key))
            for i, (node, key) in enumerate(keys.items(), start=1)
        ),
    )
    fp = FixedPoint.for_parties(n, clip=clip)
    # Synthetic trained heads; α_i = n_i / Σ n from random sample counts.
    models = {node: rng.normal(0.0, 0.5, d) for node in keys}
    counts = dict(zip(keys, rng.integers(50, 1000, n).tolist(), strict=True))
    alphas = {node: counts[node] / sum(counts.values()) for node in keys}
    early = list(keys)[n - drop_early :]
    late = list(keys)[n - drop_early - drop : n - drop_early]
    senders = [node for node in keys if node not in early]

    click.echo(
        f"Secure aggregation, round {roster.round} of {roster.federation_id!r}: "
        f"{n} nodes, threshold t={t}, {d:,} parameters per model"
    )
    click.echo(
        f"fixed point: ±{fp.clip} in steps of 2^-{fp.frac_bits}; worst-case error of a sum "
        f"of {n}: {fp.max_sum_error(n):.2e}"
    )
    click.echo("\nroster (public: ids, Shamir x, X25519 keys)")
    for m in roster.members:
        click.echo(f"  {m.node_id:<8} x={m.x:<3} key {m.public_key.hex()[:16]}…")

    click.echo(
        "\nstage 2  each node quantises α_i·w_i, Shamir-shares it, seals one envelope per node"
    )
    outboxes: dict[str, dict[str, bytes]] = {}
    share_times = []
    for node in keys:
        if node in early:
            click.echo(f"  {node:<8} dropped out before sharing")
            continue
        outboxes[node], seconds = _timed(
            partial(
                ss.make_shares,
                roster,
                node,
                keys[node],
                models[node],
                weight=alphas[node],
                fixed_point=fp,
            )
        )
        share_times.append(seconds)
        size = sum(len(e) for e in outboxes[node].values())
        click.echo(
            f"  {node:<8} α={alphas[node]:.3f}  {len(outboxes[node])} envelopes, {size:,} B "
            f"sent  ({seconds * 1e3:.1f} ms)"
        )

    click.echo("\nstage 3  the coordinator routes envelopes; each node opens its own and sums")
    summed: list[ss.SummedShare] = []
    open_times = []
    for node in senders:
        if node in late:
            click.echo(f"  {node:<8} dropped out after sharing (its model still counts)")
            continue
        inbox = {sender: outboxes[sender][node] for sender in senders}
        share, seconds = _timed(
            partial(ss.open_and_sum, roster, node, keys[node], inbox, senders=senders)
        )
        open_times.append(seconds)
        wire = share.to_bytes()
        summed.append(ss.SummedShare.from_bytes(wire))
        click.echo(
            f"  {node:<8} opened {len(inbox)} envelopes → summed share of {len(wire):,} B  "
            f"({seconds * 1e3:.1f} ms)"
        )

    if len(senders) >= 2 and t >= 2:
        victim, coalition = senders[0], senders[1:t]
        guess = _coalition_guess(roster, keys, coalition, victim, outboxes[victim])
        error = np.abs(fp.dequantize(guess) - alphas[victim] * models[victim]).max()
        click.echo(
            f"\n{len(coalition)} colluding node(s), fewer than t ({', '.join(coalition)}), pool "
            f"their shares of {victim}'s model: off by up to {error:.3g}, noise, not the model"
        )

    click.echo("\nstage 4  the coordinator reconstructs from any t summed shares")
    envelope_bytes = sum(len(e) for sent in outboxes.values() for e in sent.values())
    summed_bytes = sum(len(s.to_bytes()) for s in summed)
    click.echo(
        f"  it saw {sum(len(v) for v in outboxes.values())} envelopes ({envelope_bytes:,} B of "
        f"ciphertext) and {len(summed)} summed shares ({summed_bytes:,} B) — no model in the clear"
    )
    total, seconds = _timed(lambda: ss.reconstruct_sum(roster, summed, fp))
    checked = (
        f"checked that the other {len(summed) - t} lie on the same polynomial"
        if len(summed) > t
        else "no spare share to cross-check"
    )
    plain, plain_seconds = _timed(lambda: sum(alphas[s] * models[s] for s in senders))
    error = float(np.abs(total - plain).max())
    click.echo(f"  used {t} of {len(summed)} summed shares; {checked}")
    click.echo(
        f"  Σ α_i·w_i over {len(senders)} senders: max |secure − plaintext| = {error:.2e} "
        f"(bound {fp.max_sum_error(len(senders)):.2e})"
    )
    click.echo(
        f"\ntimings: share+encrypt {np.mean(share_times) * 1e3:.1f} ms/node, open+sum "
        f"{np.mean(open_times) * 1e3:.1f} ms/node, reconstruct {seconds * 1e3:.1f} ms "
        f"(plaintext sum {plain_seconds * 1e3:.1f} ms)"
    )
