"""Which model decides `POST /feedback`, and how accurate it is on the held-out split.

``python -m bench.sentiment`` (``make bench-sentiment``) builds the global model a
federation of three nodes publishes, exactly as the rounds do (each node's SISA model
trained on its share of the default dataset, ``lethe-node ingest --default --partition
i/3``; their sample-weighted average, which the secure sum reconstructs to within 5e-8;
then the publication noise of ``protocol.publication``), stores it by CID beside a
finalized round, and scores every text of the held-out split (3,832 tweets that no node
trains on) through the coordinator's own ``GlobalModelScorer``. It writes
``bench/results/sentiment.json``:

- ``demo``: the federation `lethe up` / `make demo` runs (400 training records a node);
- ``full``: the same three nodes holding the whole training split (34,326 records);
- for each, ``accuracy_published`` (the model that decides) and ``accuracy_exact`` (before
  the publication noise), per-class recall, ``decision_accuracy_published`` (how often the
  default policy's forget/keep decision, negative or neutral → forget, matches the one the
  true label gives), and the share of texts it would forget.

Embeddings come from the cache ``bench.unlearning`` keeps (``.lethe/cache/``), or are
computed once.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.noise_sim import noisy_release
from bench.unlearning import RESULTS, cached_embedder, embeddings
from coordinator.feedback import DEFAULT_FORGET_ON, GlobalModelScorer
from coordinator.queue import CoordinatorDB
from node.sisa import SisaNode, average
from node.store import NodeConfig, Record, load_default
from protocol.federation import DEFAULT_LABELS, DEFAULT_SLICES
from protocol.hashing import keccak256
from protocol.model import model_bytes
from protocol.noise import DEFAULT_NOISE_SCALE as DEFAULT_SIGMA
from protocol.store import LocalStore

NODES = 3
DEMO_RECORDS_PER_NODE = 400


def federation_model(
    work: Path, vectors: dict[str, np.ndarray], limit: int | None
) -> tuple[np.ndarray, int]:
    """The exact global model of three default-dataset nodes, and its sample count."""
    models, weights = [], []
    for i in range(1, NODES + 1):
        train = load_default((i, NODES), limit=limit).train
        node = SisaNode.create(
            work / f"node-{i}-{limit}.sqlite",
            NodeConfig("lethe-demo", f"node-{i}", slices=DEFAULT_SLICES),
        )
        node.ingest(train, embed=cached_embedder(vectors, train), progress=False)
        node.train()
        model = node.model()
        models.append(model.vector)
        weights.append(model.n_samples)
        node.close()
    return average(models, weights), sum(weights)


def score_split(
    work: Path, name: str, vector: np.ndarray, test: list[Record], by_text: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Accuracy of ``vector`` as the coordinator scores feedback with it."""
    db = CoordinatorDB(work / f"{name}.sqlite")
    store = LocalStore(work / "blocks")
    data = model_bytes(vector)
    cid = store.put(data)
    db.save_round(
        1, "finalized", {"global_model_cid": cid, "global_model_hash": "0x" + keccak256(data).hex()}
    )
    scorer = GlobalModelScorer(db, store, embed=lambda text: by_text[text])
    predicted = [scorer.score(r.text).label for r in test]
    truth = [r.label for r in test]
    recall = {
        label: round(
            sum(p == t == label for p, t in zip(predicted, truth, strict=True))
            / max(1, truth.count(label)),
            4,
        )
        for label in DEFAULT_LABELS
    }
    counts = Counter(predicted)
    forget = set(DEFAULT_FORGET_ON)
    return {
        "decision_accuracy": round(
            sum((p in forget) == (t in forget) for p, t in zip(predicted, truth, strict=True))
            / len(test),
            4,
        ),
        "accuracy": round(
            sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(test), 4
        ),
        "recall": recall,
        "forgotten_share": round(sum(counts[x] for x in DEFAULT_FORGET_ON) / len(test), 4),
        "model_cid": cid,
    }


def main() -> None:
    started = time.perf_counter()
    data = load_default()
    vectors, meta = embeddings(data.train + data.test)
    by_text = {r.text: vectors[r.id] for r in data.test}
    result: dict[str, Any] = {
        "model": (
            "the latest finalized round's published global model: linear softmax head over "
            "all-MiniLM-L6-v2 int8 embeddings, sample-weighted average of the nodes' SISA "
            f"models, noise inside the sum, sigma {DEFAULT_SIGMA}"
        ),
        "test_texts": len(data.test),
        "test_labels": dict(Counter(r.label for r in data.test)),
        "policy_forget_on": list(DEFAULT_FORGET_ON),
        "embeddings": meta,
    }
    with tempfile.TemporaryDirectory(prefix="lethe-bench-sentiment-") as tmp:
        work = Path(tmp)
        for name, limit in (("demo", DEMO_RECORDS_PER_NODE), ("full", None)):
            exact, samples = federation_model(work, vectors, limit)
            published = noisy_release(exact, DEFAULT_SIGMA, seed=exact.tobytes())
            scored = score_split(work, f"{name}-published", published, data.test, by_text)
            plain = score_split(work, f"{name}-exact", exact, data.test, by_text)
            result[name] = {
                "nodes": NODES,
                "training_records": samples,
                "accuracy_published": scored["accuracy"],
                "accuracy_exact": plain["accuracy"],
                "recall_published": scored["recall"],
                "decision_accuracy_published": scored["decision_accuracy"],
                "forgotten_share_published": scored["forgotten_share"],
                "forget_share_of_truth": round(
                    sum(r.label in DEFAULT_FORGET_ON for r in data.test) / len(data.test), 4
                ),
            }
            print(name, json.dumps(result[name]), flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sentiment.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'sentiment.json'}")


if __name__ == "__main__":
    main()
