"""What a roster change costs a node, and what the first sum after it still tells.

``python -m bench.epoch`` (``make bench-epoch``) writes ``bench/results/epoch.{json,png}``:

- ``retrain_s`` per node size: an admission or a removal moves every node to a new roster
  epoch, and each retrains all its slices from zero (``SisaNode.enter_epoch`` then
  ``train``), with the default node configuration (1 shard × 4 slices, 36 epochs). Sizes:
  the demo's share (500 records), one of three nodes sharing the whole default dataset
  (11,442) and all of it on one node (34,326). Training time depends on the number of
  samples and epochs, not on the embeddings' values, so this part embeds with
  hash-seeded unit vectors (no encoder run); median of ``--repeats`` retrains, alternating
  between two epochs, with process CPU time beside wall time.
- ``newcomer``: four nodes of 500 real default-dataset tweets (real encoder, cached in
  ``.lethe/cache/``). The three first sum under their epoch; the fourth is admitted, all
  retrain, the four sum. The coordinator, which sees exact sums, subtracts them:
  ``estimate = (N₂·G₂ − N₁·G₁) / n_D`` is the newcomer's model plus the three others'
  changes from the retrain. Reported: its relative error against the newcomer's model,
  their cosine, and the test accuracy of both (the retrain is what keeps the estimate from
  being the model itself: without it, the error would be 0).
- ``noise_curve``: the same estimate when every sum carries the noise the senders add
  inside the secure sum (``protocol.noise``, simulated by ``bench.noise_sim``: fresh per
  sum, since the sender set's commitments changed), for each σ of ``NOISE_SCALES``, over
  ``DRAWS`` draws (mean and standard error): the estimate's cosine with the newcomer's
  model, against ``baseline_cosine``, the exact global model's cosine with it (what the
  coordinator would know without differencing), and the accuracy cost of the noise on
  the global model in points. A removal is the same difference read the other way (the
  four before, the three after), so its figures are these.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.noise_sim import inside_sum_noise
from bench.unlearning import cached_embedder, embeddings
from node.sisa import SisaNode, evaluate
from node.store import NodeConfig, Record, load_default
from protocol.epoch import roster_epoch
from protocol.hashing import keccak256

RESULTS = Path(__file__).parent / "results"
NODE_DATA: tuple[tuple[tuple[int, int], int | None], ...] = (
    ((1, 3), 500),
    ((1, 3), None),
    ((1, 1), None),
)
"""(partition, limit): the demo's share of a node, one of three nodes of the whole
dataset, all of it on one node."""
NEWCOMER_RECORDS = 500
NOISE_SCALES = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
DRAWS = 20
EPOCH_A = roster_epoch(["0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20])
EPOCH_B = roster_epoch(["0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20, "0x" + "dd" * 20])


def hash_embed(texts: Sequence[str]) -> np.ndarray[Any, Any]:
    """Unit vectors seeded by each text's hash: the encoder's shape at none of its cost."""
    rows = np.empty((len(texts), 384), dtype=np.float32)
    for i, text in enumerate(texts):
        rng = np.random.default_rng(int.from_bytes(keccak256(text.encode())[:8], "big"))
        v = rng.standard_normal(384)
        rows[i] = v / np.linalg.norm(v)
    return rows


def _config(node_id: str) -> NodeConfig:
    return NodeConfig(federation_id="bench", node_id=node_id)


def retrain_cost(records: Sequence[Record], work: Path, repeats: int) -> dict[str, Any]:
    """Median wall and CPU time of a node's full retrain for a new roster epoch."""
    node = SisaNode.create(work / f"cost-{len(records)}.db", _config("node-1"))
    node.ingest(records, embed=hash_embed, progress=False)
    node.enter_epoch(EPOCH_A)
    node.train()
    walls, cpus, slices = [], [], 0
    for i in range(repeats):
        node.enter_epoch(EPOCH_B if i % 2 == 0 else EPOCH_A)
        wall, cpu = time.perf_counter(), time.process_time()
        report = node.train()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        slices = report.slices_trained
    node.close()
    return {
        "records_per_node": len(records),
        "retrain_s": round(statistics.median(walls), 3),
        "retrain_cpu_s": round(statistics.median(cpus), 3),
        "slices_trained": slices,
        "repeats": repeats,
    }


def _node(work: Path, name: str, records: Sequence[Record], vectors: Any) -> SisaNode:
    node = SisaNode.create(work / f"{name}.db", _config(name))
    node.ingest(records, embed=cached_embedder(vectors, records), progress=False)
    return node


def _model(node: SisaNode, epoch: bytes) -> tuple[np.ndarray[Any, Any], int]:
    node.enter_epoch(epoch)
    node.train()
    model = node.model()
    return np.asarray(model.vector, dtype=np.float64), model.n_samples


def newcomer(work: Path) -> dict[str, Any]:
    """How far the difference of the last sum before and the first after an admission is
    from the newcomer's model, once every node retrained for the new epoch."""
    shares = [load_default((i + 1, 4), limit=NEWCOMER_RECORDS) for i in range(4)]
    pools = [share.train for share in shares]
    records = [r for pool in pools for r in pool]
    test = shares[0].test
    vectors, meta = embeddings(records + list(test))
    nodes = [_node(work, f"n{i}", pool, vectors) for i, pool in enumerate(pools)]
    before = [_model(n, EPOCH_A) for n in nodes[:3]]
    after = [_model(n, EPOCH_B) for n in nodes]
    n1, n2 = sum(n for _, n in before), sum(n for _, n in after)
    g1 = sum(w * n for w, n in before) / n1
    g2 = sum(w * n for w, n in after) / n2
    victim, n_victim = after[3]
    estimate = np.asarray((n2 * g2 - n1 * g1) / n_victim, dtype=np.float64)
    features = np.stack([vectors[r.id] for r in test]).astype(np.float32)
    labels = np.array([_config("x").labels.index(r.label) for r in test])
    change = [
        float(np.linalg.norm(a - b) / np.linalg.norm(b))
        for (a, _), (b, _) in zip(after[:3], before, strict=True)
    ]
    for node in nodes:
        node.close()
    curve = noise_curve(
        np.asarray(g1), np.asarray(g2), (n1, n2), (victim, n_victim), (features, labels)
    )
    error = float(np.linalg.norm(estimate - victim) / np.linalg.norm(victim))
    return {
        "records_per_node": NEWCOMER_RECORDS,
        "estimate_rel_error": round(error, 4),
        "estimate_cosine": round(
            float(estimate @ victim / (np.linalg.norm(estimate) * np.linalg.norm(victim))), 4
        ),
        "retrain_rel_change_mean": round(statistics.mean(change), 4),
        "acc_newcomer": round(evaluate(victim.astype(np.float32), features, labels), 4),
        "acc_estimate": round(evaluate(estimate.astype(np.float32), features, labels), 4),
        "n_test": len(test),
        "baseline_cosine": round(_cosine(np.asarray(g2), victim), 4),
        "noise_curve": curve,
        **meta,
    }


def _cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _mean_se(values: Sequence[float]) -> list[float]:
    return [
        round(statistics.mean(values), 4),
        round(statistics.stdev(values) / len(values) ** 0.5, 4),
    ]


def noise_curve(
    g1: np.ndarray[Any, Any],
    g2: np.ndarray[Any, Any],
    totals: tuple[int, int],
    newcomer: tuple[np.ndarray[Any, Any], int],
    test: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> list[dict[str, Any]]:
    """The admission estimate and the accuracy cost under noise inside the sum, per σ."""
    (n1, n2), (victim, n_victim), (features, labels) = totals, newcomer, test
    exact_accuracy = evaluate(g2.astype(np.float32), features, labels)
    points = []
    for sigma in NOISE_SCALES:
        cosines, costs = [], []
        for draw in range(DRAWS):
            noisy1 = g1 + inside_sum_noise(
                g1.size, sigma, seed=f"before-{draw}".encode(), n_members=3
            )
            noisy2 = g2 + inside_sum_noise(
                g2.size, sigma, seed=f"after-{draw}".encode(), n_members=4
            )
            cosines.append(_cosine((n2 * noisy2 - n1 * noisy1) / n_victim, victim))
            accuracy = evaluate(noisy2.astype(np.float32), features, labels)
            costs.append(100 * (exact_accuracy - accuracy))
        points.append(
            {
                "sigma": sigma,
                "estimate_cosine": _mean_se(cosines),
                "accuracy_cost_points": _mean_se(costs),
                "draws": DRAWS,
            }
        )
        print(json.dumps(points[-1]), flush=True)
    return points


def plot(points: list[dict[str, Any]], leak: dict[str, Any], path: Path) -> None:
    """Retrain time per node size; the newcomer's model against the estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = [p["records_per_node"] for p in points]
    left.plot(sizes, [p["retrain_s"] for p in points], "o-", label="wall")
    left.plot(sizes, [p["retrain_cpu_s"] for p in points], "s--", ms=4, label="process CPU")
    left.set(
        xlabel="records on the node",
        ylabel="seconds",
        title="Retrain for a new roster epoch (1 shard × 4 slices)",
    )
    left.legend()
    left.grid(alpha=0.3)
    curve = leak["noise_curve"]
    sigmas = [p["sigma"] for p in curve]
    right.errorbar(
        sigmas,
        [p["estimate_cosine"][0] for p in curve],
        yerr=[1.96 * p["estimate_cosine"][1] for p in curve],
        fmt="o-",
        color="tab:red",
        label="estimate from two noisy sums",
    )
    right.axhline(leak["baseline_cosine"], color="tab:blue", ls="--", label="exact global model")
    right.set(
        xlabel="σ of the noise inside the sum",
        ylabel="cosine with the newcomer's model",
        title="What an admission tells the coordinator",
    )
    right.legend(loc="lower left")
    cost = right.twinx()
    cost.errorbar(
        sigmas,
        [p["accuracy_cost_points"][0] for p in curve],
        yerr=[1.96 * p["accuracy_cost_points"][1] for p in curve],
        fmt="s:",
        color="tab:gray",
    )
    cost.set_ylabel("accuracy cost (points, grey)")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``bench/results/epoch.{json,png}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    pools = [load_default(partition, limit=limit).train for partition, limit in NODE_DATA]
    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp:
        work = Path(tmp)
        retrain_cost(pools[0][:200], work, 1)  # torch's import and first switch, not measured
        points = [retrain_cost(pool, work, args.repeats) for pool in pools]
        for point in points:
            print(json.dumps(point), flush=True)
        leak = newcomer(work)
    result = {
        "retrain": points,
        "default_node_retrain_s": points[1]["retrain_s"],
        "newcomer": leak,
    }
    print(json.dumps(result, indent=2), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "epoch.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(points, leak, RESULTS / "epoch.png")
    return result


if __name__ == "__main__":
    main()
