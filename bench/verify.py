"""What verifying a round costs: the transcript's bytes and the recomputation's seconds.

``python -m bench.verify`` (``make bench-verify``) writes ``bench/results/verify.{json,png}``.
For 3, 10 and 30 senders it runs one secure round in process as the nodes do (each masks
its weighted model of the default head's size plus its noise, signs its masked vector and
the sender set, reveals), builds the manifest the coordinator stores, and times
``protocol.recompute.recompute_model`` on it: that is what each node adds to its approval
and what ``lethe audit`` and the explorer spend per round. Keys:

- ``manifest_bytes_by_nodes``: the manifest's canonical bytes (transcript included);
- ``transcript_bytes_per_sender``: the part each sender adds;
- ``recompute_s_by_nodes``: median seconds of ``recompute_model`` over ``--repeats`` runs
  (signature recovery, seed interpolation and checks, unmasking);
- ``share_s_per_node``: median seconds of one node's ``mask_and_share`` with its noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account

from protocol.commitments import Update, sign_leaf
from protocol.envelope import public_key_bytes
from protocol.features import EMBEDDING_DIM
from protocol.federation import DEFAULT_LABELS
from protocol.field import FixedPoint
from protocol.hashing import keccak256
from protocol.manifest import NodeUpdate, RoundManifest
from protocol.model import model_bytes
from protocol.noise import DEFAULT_NOISE_SCALE, node_noise_key, noise_context, sender_noise
from protocol.recompute import Signed, Transcript, global_model, recompute_model
from protocol.secure_sum import (
    Member,
    Roster,
    SumSettings,
    default_threshold,
    mask_and_share,
    reveal,
    round_fixed_point,
    sender_set_digest,
)
from protocol.typed_data import Domain

RESULTS = Path(__file__).parent / "results"
NODES = (3, 10, 30)
HEAD_SIZE = (EMBEDDING_DIM + 1) * len(DEFAULT_LABELS)
"""Coordinates of the federation's default linear head: W (D×C) and b (C)."""
DOMAIN = Domain(31337, "0x" + "11" * 20)


@dataclass(frozen=True)
class Sender:
    """One node of an in-process round: its keys, model and samples."""

    address: str
    eth_key: str
    x25519_key: X25519PrivateKey
    vector: npt.NDArray[np.float64]
    n_samples: int

    @classmethod
    def make(cls, index: int, vector: npt.NDArray[np.float64], n_samples: int) -> Sender:
        eth_key = "0x" + keccak256(b"bench eth " + str(index).encode()).hex()
        x_key = X25519PrivateKey.from_private_bytes(keccak256(b"bench x25519 " + bytes([index])))
        address = str(Account.from_key(eth_key).address)
        return cls(address, eth_key, x_key, vector, n_samples)


def masked_round(
    federation_id: str,
    round_no: int,
    ordered: Sequence[Sender],
    *,
    sigma: float = DEFAULT_NOISE_SCALE,
    commitments: Sequence[tuple[str, str, int]] = (),
) -> tuple[Transcript, npt.NDArray[np.float32], Roster]:
    """The secure sum of ``ordered`` (sorted by address) as nodes and coordinator run it:
    each masks its weighted model plus its noise (none without ``commitments`` to draw it
    for), signs its masked vector and the sender set, reveals; the global model is what
    anyone recomputes from the transcript."""
    roster = Roster(
        federation_id,
        round_no,
        default_threshold(len(ordered)),
        tuple(
            Member(s.address, i + 1, public_key_bytes(s.x25519_key)) for i, s in enumerate(ordered)
        ),
    )
    addresses = [s.address for s in ordered]
    n_total = sum(s.n_samples for s in ordered)
    settings = SumSettings.for_round(len(ordered), sigma, through_slice=None, n_total=n_total)
    shared = {}
    for s in ordered:
        extra = None
        if commitments:
            extra = sender_noise(
                node_noise_key(bytes.fromhex(s.eth_key.removeprefix("0x"))),
                noise_context(
                    federation_id, commitments, n_total=n_total, through_slice=None, sigma=sigma
                ),
                s.vector.shape[0],
                sigma=sigma,
                scale=settings.fixed_point.scale,
                senders=len(ordered),
            )
        shared[s.address] = mask_and_share(
            roster,
            s.address,
            s.x25519_key,
            s.vector,
            weight=s.n_samples / n_total,
            fixed_point=settings.fixed_point,
            senders=addresses,
            settings=settings,
            noise=extra,
        )
    reveals = {
        s.address: reveal(
            roster,
            s.address,
            s.x25519_key,
            {a: shared[a].envelopes[s.address] for a in addresses},
            senders=addresses,
            masked_with=addresses,
        )
        for s in ordered
    }
    keys = {s.address: s.eth_key for s in ordered}

    def signed(address: str, data: bytes) -> Signed:
        return Signed(data, sign_leaf(keccak256(data), keys[address]))

    digest = sender_set_digest(roster, addresses, settings)
    transcript = Transcript(
        masked={a: signed(a, shared[a].masked.to_bytes()) for a in addresses},
        agreements={a: sign_leaf(digest, keys[a]) for a in addresses},
        reveals={a: signed(a, r.to_bytes()) for a, r in reveals.items()},
    )
    vector = global_model(
        roster,
        {a: shared[a].masked for a in addresses},
        list(reveals.values()),
        settings.fixed_point,
        n_total,
        n_total,
    )
    return transcript, vector, roster


def signed_round(
    federation_id: str, round_no: int, senders: Sequence[Sender], *, domain: Domain = DOMAIN
) -> RoundManifest:
    """A whole round with its noise, as the manifest the coordinator stores."""
    ordered = sorted(senders, key=lambda s: s.address.lower())
    updates = []
    for s in ordered:
        digest = keccak256(model_bytes(s.vector.astype(np.float32)))
        roots = (keccak256(b"slice root " + s.address.encode()),)
        update = Update(federation_id, round_no, s.address, digest, s.n_samples, roots)
        updates.append(
            NodeUpdate(
                s.address,
                "0x" + digest.hex(),
                s.n_samples,
                update.sign(domain, s.eth_key),
                ["0x" + r.hex() for r in roots],
            )
        )
    commitments = [(u.address, u.model_hash, u.n_samples) for u in updates]
    transcript, vector, roster = masked_round(
        federation_id, round_no, ordered, commitments=commitments
    )
    addresses = [s.address for s in ordered]
    return RoundManifest(
        federation_id=federation_id,
        round=round_no,
        threshold=roster.threshold,
        roster=[
            {"address": m.node_id, "x": m.x, "public_key": "0x" + m.public_key.hex()}
            for m in roster.members
        ],
        updates=updates,
        responders={"train": addresses, "share": addresses, "aggregate": addresses},
        dropped=[],
        global_model_cid="",
        global_model_hash="0x" + keccak256(model_bytes(vector)).hex(),
        n_total=sum(s.n_samples for s in ordered),
        fixed_point={
            "clip": roster_code(roster.n).clip,
            "frac_bits": roster_code(roster.n).frac_bits,
        },
        transcript=transcript.to_json(),
    )


def roster_code(n: int) -> FixedPoint:
    """The fixed-point code of a roster of ``n`` at the default noise."""
    return round_fixed_point(n, DEFAULT_NOISE_SCALE)


def measure(n: int, repeats: int) -> dict[str, Any]:
    """Bytes and seconds of verifying one round of ``n`` senders."""
    rng = np.random.default_rng(n)
    senders = [Sender.make(i, rng.normal(0, 0.5, HEAD_SIZE), 500) for i in range(n)]
    started = time.perf_counter()
    manifest = signed_round("bench", 1, senders)
    build_s = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        recompute_model(manifest)
        times.append(time.perf_counter() - started)
    size = len(manifest.to_bytes())
    without = len(
        RoundManifest(
            **{**manifest.to_json(), "updates": manifest.updates, "transcript": {}}
        ).to_bytes()
    )
    return {
        "nodes": n,
        "manifest_bytes": size,
        "transcript_bytes_per_sender": round((size - without) / n),
        "recompute_s": round(statistics.median(times), 4),
        "round_build_s": round(build_s, 3),
        "repeats": repeats,
    }


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    nodes = [p["nodes"] for p in points]
    left.plot(nodes, [p["manifest_bytes"] / 1000 for p in points], "o-")
    left.set(xlabel="senders", ylabel="kB", title="Manifest with its transcript")
    right.plot(nodes, [p["recompute_s"] * 1000 for p in points], "o-", color="tab:red")
    right.set(xlabel="senders", ylabel="ms", title="Recomputing the model (node, audit)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``bench/results/verify.{json,png}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    points = []
    for n in NODES:
        points.append(measure(n, args.repeats))
        print(json.dumps(points[-1]), flush=True)
    result = {
        "head_size": HEAD_SIZE,
        "noise_scale": DEFAULT_NOISE_SCALE,
        "manifest_bytes_by_nodes": {str(p["nodes"]): p["manifest_bytes"] for p in points},
        "transcript_bytes_per_sender": points[0]["transcript_bytes_per_sender"],
        "recompute_s_by_nodes": {str(p["nodes"]): p["recompute_s"] for p in points},
        "points": points,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verify.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(points, RESULTS / "verify.png")
    return result


if __name__ == "__main__":
    main()
