"""Which model decides `POST /feedback`, how well calibrated it is, and how often it is right.

``python -m bench.sentiment`` (``make bench-sentiment``) builds the global model a
federation of three nodes publishes, exactly as the rounds do (each node's SISA model
trained on its share of the default dataset, ``lethe-node ingest --default --partition
i/3``; their sample-weighted average, which the secure sum reconstructs to within 5e-8;
then the noise the senders add inside the sum, ``protocol.noise``), stores it by CID beside a
finalized round, and scores texts through the coordinator's own ``GlobalModelScorer`` and
``FeedbackPolicy``. Two sets are scored:

- ``test``: the held-out split of the default dataset (3,832 tweets no node trains on);
  the temperature is fitted here (``coordinator.calibration``), and τ is chosen here;
- ``reviews``: the out-of-domain set ``bench/data/amazon_review_snippets.csv`` (3,697
  customer-review sentences labelled by people; provenance beside it), used for nothing
  but this report.

For the ``demo`` federation (400 training records a node, as ``make demo`` runs) and the
``full`` one (the whole training split), it reports two learners side by side:

- ``baseline``: today's head before this change — unweighted loss, raw softmax, and the
  label alone decides (negative or neutral → forget, never review);
- ``default``: class-balanced loss (``NodeConfig.class_weight``), the temperature fitted
  on the test split, and the abstain band at the default τ (forget when P(negative ∪
  neutral) ≥ τ, keep when P(positive) ≥ τ, else review).

Figures per set: accuracy, per-class recall, ECE (15 bins, top-class confidence), the
decision accuracy among decided rows, the share of true positives forgotten without a
person, the review rate, and the shares forgotten and kept; plus a τ sweep. It writes
``bench/results/sentiment.json`` and ``sentiment.png``. Embeddings come from the cache
``bench.unlearning`` keeps (``.lethe/cache/``), or are computed once.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.noise_sim import noisy_release
from bench.unlearning import RESULTS, cached_embedder, embeddings
from coordinator.calibration import expected_calibration_error, fit_temperature, softmax
from coordinator.feedback import DEFAULT_FORGET_ON, DEFAULT_TAU, FeedbackPolicy, GlobalModelScorer
from coordinator.queue import CoordinatorDB
from node.sisa import SisaNode, average, vector_to_head
from node.store import NodeConfig, Record, load_default
from protocol.features import EMBEDDING_DIM
from protocol.federation import DEFAULT_LABELS, DEFAULT_SLICES
from protocol.hashing import keccak256
from protocol.model import model_bytes
from protocol.noise import DEFAULT_NOISE_SCALE as DEFAULT_SIGMA
from protocol.store import LocalStore

NODES = 3
DEMO_RECORDS_PER_NODE = 400
REVIEWS = Path(__file__).resolve().parent / "data" / "amazon_review_snippets.csv"
TAUS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
LEARNERS = {"baseline": "none", "default": "balanced"}


def review_records() -> list[Record]:
    """The out-of-domain set as records (never trained on)."""
    with REVIEWS.open(newline="", encoding="utf-8") as fh:
        return [Record(f"review-{r['id']}", r["text"], r["label"]) for r in csv.DictReader(fh)]


def federation_model(
    work: Path, vectors: dict[str, np.ndarray], limit: int | None, class_weight: str
) -> tuple[np.ndarray, int]:
    """The exact global model of three default-dataset nodes, and its sample count."""
    models, weights = [], []
    for i in range(1, NODES + 1):
        train = load_default((i, NODES), limit=limit).train
        node = SisaNode.create(
            work / f"node-{i}-{limit}-{class_weight}.sqlite",
            NodeConfig("lethe-demo", f"node-{i}", slices=DEFAULT_SLICES, class_weight=class_weight),
        )
        node.ingest(train, embed=cached_embedder(vectors, train), progress=False)
        node.train()
        model = node.model()
        models.append(model.vector)
        weights.append(model.n_samples)
        node.close()
    return average(models, weights), sum(weights)


def logits_of(vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The head's logits for embedding rows (float64, as the scorer computes them)."""
    w, b = vector_to_head(vector, EMBEDDING_DIM)
    return np.asarray(rows, dtype=np.float64) @ w.astype(np.float64) + b.astype(np.float64)


def decisions(probs: np.ndarray, policy: FeedbackPolicy | None, labels: Sequence[str]) -> list[str]:
    """Each row's decision: the label alone (``policy`` None, today's rule) or the band."""
    forget = [i for i, label in enumerate(labels) if label in DEFAULT_FORGET_ON]
    p_forget = probs[:, forget].sum(axis=1)
    if policy is None:
        return [
            "forget" if labels[int(i)] in DEFAULT_FORGET_ON else "keep"
            for i in probs.argmax(axis=1)
        ]
    return [
        "forget" if p >= policy.tau else "keep" if 1 - p >= policy.tau else "review"
        for p in p_forget
    ]


def decision_figures(decided: list[str], truth: list[str]) -> dict[str, Any]:
    """Decision accuracy among decided rows, positives forgotten without a person, shares."""
    n = len(truth)
    should = ["forget" if t in DEFAULT_FORGET_ON else "keep" for t in truth]
    made = [(d, s) for d, s in zip(decided, should, strict=True) if d != "review"]
    positives = [d for d, t in zip(decided, truth, strict=True) if t == "positive"]
    counts = Counter(decided)
    return {
        "decision_accuracy_decided": round(sum(d == s for d, s in made) / max(1, len(made)), 4),
        "positive_forgotten_auto": round(positives.count("forget") / max(1, len(positives)), 4),
        "review_rate": round(counts["review"] / n, 4),
        "forgotten_share": round(counts["forget"] / n, 4),
        "kept_share": round(counts["keep"] / n, 4),
    }


def set_figures(
    probs: np.ndarray, truth: list[str], policy: FeedbackPolicy | None
) -> dict[str, Any]:
    """Accuracy, recall, ECE and the decision figures of one set under one learner."""
    labels = list(DEFAULT_LABELS)
    index = np.array([labels.index(t) for t in truth])
    predicted = probs.argmax(axis=1)
    return {
        "accuracy": round(float(np.mean(predicted == index)), 4),
        "recall": {
            label: round(float(np.mean(predicted[index == k] == k)), 4)
            for k, label in enumerate(labels)
        },
        "ece": round(expected_calibration_error(probs, index), 4),
        **decision_figures(decisions(probs, policy, labels), truth),
        "tau_sweep": {
            str(tau): decision_figures(
                decisions(probs, FeedbackPolicy(DEFAULT_FORGET_ON, tau), labels), truth
            )
            for tau in TAUS
        },
    }


def scored(
    work: Path,
    name: str,
    vector: np.ndarray,
    texts: list[Record],
    by_text: dict[str, np.ndarray],
    temperature: float,
) -> np.ndarray:
    """Each text's class probabilities as the coordinator's scorer gives them."""
    db = CoordinatorDB(work / f"{name}.sqlite")
    store = LocalStore(work / "blocks")
    data = model_bytes(vector)
    cid = store.put(data)
    db.save_round(
        1, "finalized", {"global_model_cid": cid, "global_model_hash": "0x" + keccak256(data).hex()}
    )
    scorer = GlobalModelScorer(db, store, embed=lambda t: by_text[t], temperature=temperature)
    labels = list(DEFAULT_LABELS)
    return np.array(
        [[scorer.score(r.text).probabilities[x] for x in labels] for r in texts], dtype=np.float64
    )


def learner_figures(
    work: Path,
    name: str,
    published: np.ndarray,
    sets: dict[str, tuple[list[Record], dict[str, np.ndarray]]],
    calibrate: bool,
) -> dict[str, Any]:
    """One learner's figures on every set (temperature fitted on the test split)."""
    test, test_vectors = sets["test"]
    temperature = 1.0
    if calibrate:
        rows = np.stack([test_vectors[r.text] for r in test])
        truth = np.array([list(DEFAULT_LABELS).index(r.label) for r in test])
        temperature = fit_temperature(logits_of(published, rows), truth)
    policy = FeedbackPolicy(DEFAULT_FORGET_ON, DEFAULT_TAU) if calibrate else None
    out: dict[str, Any] = {"temperature": temperature, "tau": policy.tau if policy else None}
    for set_name, (records, by_text) in sets.items():
        probs = scored(work, f"{name}-{set_name}", published, records, by_text, temperature)
        out[set_name] = set_figures(probs, [r.label for r in records], policy)
        if calibrate:
            raw = softmax(logits_of(published, np.stack([by_text[r.text] for r in records])))
            index = np.array([list(DEFAULT_LABELS).index(r.label) for r in records])
            out[set_name]["ece_before_calibration"] = round(
                expected_calibration_error(raw, index), 4
            )
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Decision accuracy among decided rows and review rate against τ (default learner)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, set_name in zip(axes, ("test", "reviews"), strict=True):
        for size, style in (("demo", "--"), ("full", "-")):
            sweep = result[size]["default"][set_name]["tau_sweep"]
            taus = [float(t) for t in sweep]
            ax.plot(
                taus,
                [sweep[t]["decision_accuracy_decided"] for t in sweep],
                "b" + style,
                label=f"{size}: decision accuracy (decided rows)",
            )
            ax.plot(
                taus,
                [sweep[t]["review_rate"] for t in sweep],
                "r" + style,
                label=f"{size}: review rate",
            )
            ax.plot(
                taus,
                [sweep[t]["positive_forgotten_auto"] for t in sweep],
                "g" + style,
                label=f"{size}: positives forgotten automatically",
            )
            base = result[size]["baseline"][set_name]["decision_accuracy_decided"]
            ax.axhline(base, color="grey", linestyle=style, linewidth=0.8)
        ax.axvline(DEFAULT_TAU, color="black", linewidth=0.6)
        ax.set_title(
            {"test": "test split (tweets)", "reviews": "out of domain (reviews)"}[set_name]
        )
        ax.set_xlabel("τ")
    axes[0].legend(fontsize=7)
    fig.suptitle("Feedback decisions (grey: today's head, decision accuracy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    started = time.perf_counter()
    data = load_default()
    reviews = review_records()
    vectors, meta = embeddings(data.train + data.test)
    review_vectors, review_meta = embeddings(reviews, name="reviews")
    sets = {
        "test": (data.test, {r.text: vectors[r.id] for r in data.test}),
        "reviews": (reviews, {r.text: review_vectors[r.id] for r in reviews}),
    }
    result: dict[str, Any] = {
        "model": (
            "the latest finalized round's published global model: linear softmax head over "
            "all-MiniLM-L6-v2 int8 embeddings, sample-weighted average of the nodes' SISA "
            f"models, noise inside the sum, sigma {DEFAULT_SIGMA}"
        ),
        "learners": {
            "baseline": "unweighted loss, temperature 1, the argmax label decides (no review)",
            "default": (
                f"class-balanced loss, temperature fitted on the test split, tau {DEFAULT_TAU}"
            ),
        },
        "sets": {
            "test": {"texts": len(data.test), "labels": dict(Counter(r.label for r in data.test))},
            "reviews": {
                "texts": len(reviews),
                "labels": dict(Counter(r.label for r in reviews)),
                "source": "bench/data/amazon_review_snippets.md",
            },
        },
        "policy_forget_on": list(DEFAULT_FORGET_ON),
        "embeddings": {"default_dataset": meta, "reviews": review_meta},
    }
    with tempfile.TemporaryDirectory(prefix="lethe-bench-sentiment-") as tmp:
        work = Path(tmp)
        for size, limit in (("demo", DEMO_RECORDS_PER_NODE), ("full", None)):
            result[size] = {"nodes": NODES}
            for learner, class_weight in LEARNERS.items():
                t0 = time.perf_counter()
                exact, samples = federation_model(work, vectors, limit, class_weight)
                train_s = time.perf_counter() - t0
                published = noisy_release(exact, DEFAULT_SIGMA, seed=exact.tobytes())
                figures = learner_figures(
                    work, f"{size}-{learner}", published, sets, calibrate=learner == "default"
                )
                result[size]["training_records"] = samples
                result[size][learner] = {"train_s": round(train_s, 1), **figures}
                brief = {
                    k: figures["reviews"][k]
                    for k in (
                        "accuracy",
                        "decision_accuracy_decided",
                        "positive_forgotten_auto",
                        "review_rate",
                    )
                }
                print(size, learner, json.dumps(brief), flush=True)
            result[size]["reviews_gain_points"] = round(
                100
                * (
                    result[size]["default"]["reviews"]["decision_accuracy_decided"]
                    - result[size]["baseline"]["reviews"]["decision_accuracy_decided"]
                ),
                1,
            )
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sentiment.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "sentiment.png")
    print(f"wrote {RESULTS / 'sentiment.json'} and sentiment.png")


if __name__ == "__main__":
    main()
