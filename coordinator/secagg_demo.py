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

from protocol import masking, shamir
from protocol import secure_sum as ss
from protocol.envelope import generate_private_key, open_envelope, public_key_bytes
from protocol.errors import ProtocolError
from protocol.field import FixedPoint, P

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
    sent: ss.Contribution,
) -> np.ndarray:
    """What ``coalition`` (t − 1 nodes) gets by pooling their shares of ``victim``'s self-mask
    seed and stripping that "seed"'s mask from the victim's masked vector."""
    rows = []
    for node in coalition:
        context = ss.envelope_context(roster, victim, node)
        plain = open_envelope(
            keys[node], roster.member(victim).public_key, sent.envelopes[node], context=context
        )
        rows.append(np.frombuffer(plain, dtype=ss.WIRE_DTYPE).astype(np.int64))
    xs = [roster.member(n).x for n in coalition]
    digits = shamir.reconstruct(xs, rows)[: masking.SEED_DIGITS]
    try:
        seed = masking.field_to_seed(digits)
    except ProtocolError:  # the pooled digits do not even encode a seed
        seed = bytes(masking.SEED_BYTES)
    values = sent.masked.values
    return np.asarray((values - masking.expand(seed, values.shape[0])) % P, dtype=np.int64)


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
        "\nstage 2  each node masks α_i·w_i (a self mask and one pair mask per other sender), "
        "uploads it, and seals its seeds' Shamir shares in one envelope per node"
    )
    sent: dict[str, ss.Contribution] = {}
    share_times = []
    for node in keys:
        if node in early:
            click.echo(f"  {node:<8} dropped out before sharing")
            continue
        sent[node], seconds = _timed(
            partial(
                ss.mask_and_share,
                roster,
                node,
                keys[node],
                models[node],
                weight=alphas[node],
                fixed_point=fp,
                senders=senders,
            )
        )
        share_times.append(seconds)
        masked = len(sent[node].masked.to_bytes())
        sealed = sum(len(e) for e in sent[node].envelopes.values())
        click.echo(
            f"  {node:<8} α={alphas[node]:.3f}  masked vector {masked:,} B + "
            f"{len(sent[node].envelopes)} envelopes {sealed:,} B  ({seconds * 1e3:.1f} ms)"
        )

    click.echo(
        "\nstage 3  the coordinator routes envelopes; each node reveals its mask-seed shares"
    )
    reveals: list[ss.Reveal] = []
    open_times = []
    for node in senders:
        if node in late:
            click.echo(f"  {node:<8} dropped out after sharing (its model still counts)")
            continue
        inbox = {sender: sent[sender].envelopes[node] for sender in senders}
        answer, seconds = _timed(
            partial(
                ss.reveal, roster, node, keys[node], inbox, senders=senders, masked_with=senders
            )
        )
        open_times.append(seconds)
        wire = answer.to_bytes()
        reveals.append(ss.Reveal.from_bytes(wire))
        click.echo(
            f"  {node:<8} opened {len(inbox)} envelopes → reveal of {len(wire):,} B  "
            f"({seconds * 1e3:.1f} ms)"
        )

    if len(senders) >= 2 and t >= 2:
        victim, coalition = senders[0], senders[1:t]
        guess = _coalition_guess(roster, keys, coalition, victim, sent[victim])
        error = np.abs(fp.dequantize(guess) - alphas[victim] * models[victim]).max()
        click.echo(
            f"\n{len(coalition)} colluding node(s), fewer than t ({', '.join(coalition)}), pool "
            f"their shares of {victim}'s self mask: off by up to {error:.3g}, noise, not the model"
        )

    click.echo("\nstage 4  the coordinator unmasks the sum with the seeds from any t reveals")
    upload_bytes = sum(
        len(c.masked.to_bytes()) + sum(len(e) for e in c.envelopes.values()) for c in sent.values()
    )
    reveal_bytes = sum(len(r.to_bytes()) for r in reveals)
    click.echo(
        f"  it saw {len(sent)} masked vectors and their envelopes ({upload_bytes:,} B) and "
        f"{len(reveals)} reveals ({reveal_bytes:,} B) — no model in the clear"
    )
    masked_inputs = {node: c.masked for node, c in sent.items()}
    total, seconds = _timed(lambda: ss.reconstruct_sum(roster, masked_inputs, reveals, fp))
    checked = (
        f"checked that the other {len(reveals) - t} lie on the same polynomial"
        if len(reveals) > t
        else "no spare reveal to cross-check; each seed is checked against its commitment"
    )
    plain, plain_seconds = _timed(lambda: sum(alphas[s] * models[s] for s in senders))
    error = float(np.abs(total - plain).max())
    click.echo(f"  used {t} of {len(reveals)} reveals; {checked}")
    click.echo(
        f"  Σ α_i·w_i over {len(senders)} senders: max |secure − plaintext| = {error:.2e} "
        f"(bound {fp.max_sum_error(len(senders)):.2e})"
    )
    click.echo(
        f"\ntimings: share+encrypt {np.mean(share_times) * 1e3:.1f} ms/node, open+reveal "
        f"{np.mean(open_times) * 1e3:.1f} ms/node, unmask {seconds * 1e3:.1f} ms "
        f"(plaintext sum {plain_seconds * 1e3:.1f} ms)"
    )
