"""Ingest benchmark: the ONNX int8 encoder against the PyTorch fp32 pipeline it replaced.

``python -m bench.ingest`` (``make bench-ingest``) embeds the whole default dataset (34 326
training and 3 832 test tweets) with both pipelines in one run and writes
``bench/results/ingest.{json,png}``:

- ``current`` / ``baseline``: texts per second (wall clock, all cores), process CPU seconds
  per text; each pipeline runs in its own process, the texts are cut into chunks and the
  two take turns chunk by chunk, so load from other processes on the machine weighs on
  both alike;
- ``ratio``: current texts/s over baseline texts/s (the issue's target: ≥ 3.0);
- accuracy on the held-out split of a node trained on each pipeline's embeddings
  (S = 10 shards × R = 8 slices, the default training configuration, as in
  ``bench.unlearning``) and of one centralized head; ``acc_sisa_delta`` = current − baseline,
  and ``accuracy_bound_held`` when it is ≥ −0.003 (within 0.3 points);
- ``alone_equals_batched``: the share of sampled texts whose embedding alone is bit-identical
  to the one it got inside the full run (1.0 means a pure function of the text);
- cosine similarity between the two pipelines' embeddings of each text.

``--limit N`` runs on a sample of N training texts (a quick look; the accuracy then comes
from that sample).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from bench.torch_encoder import TorchTextEncoder
from bench.unlearning import MAIN_SHARDS, RESULTS, build, centralized_accuracy
from node.store import Record, load_default
from protocol.encoder_build import recipe_key
from protocol.features import TextEncoder, encoder_path

CHUNKS = 16
ALONE_SAMPLE = 200
TARGET_RATIO = 3.0
ACCURACY_TOLERANCE = 0.003

Encode = Callable[[Sequence[str]], np.ndarray]


def _pipeline(name: str) -> Encode:
    """One of the two pipelines, loaded and warmed (model load, first-call kernels)."""
    encoder: TextEncoder | TorchTextEncoder = (
        TextEncoder() if name == "current" else TorchTextEncoder()
    )

    def encode(texts: Sequence[str]) -> np.ndarray:
        return encoder.encode(texts, progress=False)

    encode(["warm-up text"] * 64)
    return encode


def _worker(name: str, texts: Sequence[str], conn: Connection) -> None:
    """Embed the chunks the parent asks for, timing each inside this process."""
    encode = _pipeline(name)
    conn.send("ready")
    while (chunk := conn.recv()) is not None:
        lo, hi = chunk
        wall, cpu = time.perf_counter(), time.process_time()
        rows = encode(texts[lo:hi])
        conn.send((rows, time.perf_counter() - wall, time.process_time() - cpu))


def timed_alternating(
    texts: Sequence[str], names: Sequence[str], chunks: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Embed ``texts`` with every pipeline, chunk by chunk in turns; rows and timings.

    Each pipeline runs in its own process (as an ingest does), so neither one's threads,
    allocator or caches are left to the other; only one of them works at any moment.
    """
    context = multiprocessing.get_context("spawn")
    links: dict[str, Connection] = {}
    workers = []
    for name in names:
        parent, child = context.Pipe()
        worker = context.Process(target=_worker, args=(name, list(texts), child), daemon=True)
        worker.start()
        links[name] = parent
        workers.append(worker)
    for link in links.values():
        link.recv()
    bounds = np.linspace(0, len(texts), chunks + 1).astype(int)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    for index, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        for name in names if index % 2 == 0 else list(reversed(names)):
            links[name].send((int(lo), int(hi)))
            part, seconds, cpu_seconds = links[name].recv()
            rows[name].append(part)
            wall[name] += seconds
            cpu[name] += cpu_seconds
        print(
            f"chunk {index + 1}/{chunks} ({hi / len(texts):.0%}): "
            + ", ".join(f"{n} {hi / wall[n]:.0f} texts/s" for n in names),
            flush=True,
        )
    for link in links.values():
        link.send(None)
    for worker in workers:
        worker.join()
    timings = {
        name: {
            "seconds": round(wall[name], 2),
            "texts_per_s": round(len(texts) / wall[name], 1),
            "cpu_ms_per_text": round(1000 * cpu[name] / len(texts), 3),
        }
        for name in names
    }
    return {name: np.concatenate(parts) for name, parts in rows.items()}, timings


def alone_equals_batched(encode: Encode, texts: Sequence[str], batched: np.ndarray) -> float:
    """Share of ``texts`` whose embedding alone has the bytes it got among the others."""
    same = sum(
        encode([text]).tobytes() == row.tobytes() for text, row in zip(texts, batched, strict=True)
    )
    return round(float(same) / len(texts), 4)


def accuracies(
    train: Sequence[Record], test: Sequence[Record], rows: np.ndarray
) -> dict[str, float]:
    """Held-out accuracy of an S×R SISA node and of one centralized head on these embeddings."""
    records = [*train, *test]
    vectors = {r.id: rows[i] for i, r in enumerate(records)}
    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp:
        node = build(Path(tmp) / "node.db", MAIN_SHARDS, train, test, vectors)
        acc_sisa = node.test_accuracy()
        node.close()
    return {
        "acc_sisa": round(acc_sisa, 4),
        "acc_centralized": round(centralized_accuracy(train, test, vectors), 4),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput and accuracy of both pipelines, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["baseline", "current"]
    labels = ["PyTorch fp32\n(batched, before)", "ONNX int8\n(one text a run, now)"]
    colors = ["tab:gray", "tab:blue"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    speeds = [result[n]["texts_per_s"] for n in names]
    left.bar(labels, speeds, color=colors)
    left.axhline(TARGET_RATIO * speeds[0], color="k", ls=":", lw=1, label="3 × baseline")
    for x, v in enumerate(speeds):
        left.text(x, v, f"{v:.0f}", ha="center", va="bottom")
    left.set(ylabel="texts / s", title=f"Embedding throughput ({result['workers']} cores)")
    left.legend(loc="upper left")
    accs = [result[n]["acc_sisa"] for n in names]
    right.bar(labels, accs, color=colors)
    right.axhline(accs[0] - ACCURACY_TOLERANCE, color="k", ls=":", lw=1, label="baseline − 0.003")
    for x, v in enumerate(accs):
        right.text(x, v, f"{v:.4f}", ha="center", va="bottom")
    right.set(
        ylim=(min(accs) - 0.02, max(accs) + 0.01),
        ylabel="test accuracy",
        title=f"SISA node (S = {MAIN_SHARDS}) on held-out tweets",
    )
    right.legend(loc="upper left")
    fig.suptitle(f"ratio {result['ratio']:.2f}×, Δacc {result['acc_sisa_delta']:+.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``bench/results/ingest.{json,png}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="A sample of N training texts (quick look).")
    parser.add_argument("--chunks", type=int, default=CHUNKS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    data = load_default(limit=args.limit)
    texts = [r.text for r in [*data.train, *data.test]]
    started = time.perf_counter()
    encoder_path()
    build_s = time.perf_counter() - started
    load_before = os.getloadavg()[0]
    rows, timings = timed_alternating(texts, ["baseline", "current"], args.chunks)
    load_after = os.getloadavg()[0]

    sample = sorted(
        random.Random(args.seed).sample(range(len(texts)), min(ALONE_SAMPLE, len(texts)))
    )
    pipelines = {name: _pipeline(name) for name in ("baseline", "current")}
    current = TextEncoder()
    result: dict[str, Any] = {
        "n_texts": len(texts),
        "n_train": len(data.train),
        "n_test": len(data.test),
        "workers": current.workers,
        "chunks": args.chunks,
        "encoder": current.load(),
        "recipe": recipe_key(),
        "build_s": round(build_s, 2),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(load_after, 2),
    }
    for name, encode in pipelines.items():
        print(f"{name}: accuracy and batch independence ...", flush=True)
        result[name] = {
            **timings[name],
            **accuracies(data.train, data.test, rows[name]),
            "alone_equals_batched": alone_equals_batched(
                encode, [texts[i] for i in sample], rows[name][sample]
            ),
        }
    cosine = np.sum(rows["current"] * rows["baseline"], axis=1)
    result["baseline"]["pipeline"] = "PyTorch fp32, batches of 64 by length bucket"
    result["current"]["pipeline"] = "ONNX Runtime int8 (per-channel weights), one text a run"
    result["ratio"] = round(result["current"]["texts_per_s"] / result["baseline"]["texts_per_s"], 2)
    result["target_ratio"] = TARGET_RATIO
    result["acc_sisa_delta"] = round(
        result["current"]["acc_sisa"] - result["baseline"]["acc_sisa"], 4
    )
    result["acc_centralized_delta"] = round(
        result["current"]["acc_centralized"] - result["baseline"]["acc_centralized"], 4
    )
    result["accuracy_bound_held"] = bool(result["acc_sisa_delta"] >= -ACCURACY_TOLERANCE)
    result["cosine_mean"] = round(float(cosine.mean()), 5)
    result["cosine_min"] = round(float(cosine.min()), 5)
    print(json.dumps(result, indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "ingest.png")
    return result


if __name__ == "__main__":
    main()
