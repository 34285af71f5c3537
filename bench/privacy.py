"""Privacy benchmark: what the coordinator and the public learn, with controls that can fail.

``python -m bench.privacy`` (``make bench-privacy``; ``--quick`` for development) writes
``bench/results/privacy.{json,png}``. Every node is a real SISA node's training, replayed
bit for bit in memory (``bench.sisa_replay``, checked against ``SisaNode`` on each run) on
the default dataset's cached embeddings, so thousands of independent forgets and shadow
federations fit in the run. Every figure is a mean over seeds (data samples) × items with
a 95 % interval from a two-level bootstrap (seeds, then items within a seed).

1. **Per-pair forget attack** (Chen et al., CCS 2021) at 1,500 (the demo: 1,200), 9,000 and
   30,000 records on three nodes: for each forget of one record of node 1, every
   candidate's drop in true-label confidence between the global models published before
   and after; the forgotten record is ranked among 50 retained records of the same node.
   ``per_pair_auc`` (its rank as an AUC), ``ranked_first_rate`` (chance 1/51); the pooled
   AUC over all pairs is secondary. Each forget starts from the same trained federation,
   so pairs do not share models.
2. **LiRA control** (Carlini et al. 2022, online, per-example): ≥ 128 shadow federations
   trained like the target (three nodes, the same slicing, epochs and data per node), each
   on a random half of members ∪ never-seen records. ``control_no_unlearning_auc`` is the
   attack on records a node was asked to forget but did *not* (it must exceed 0.5, or the
   attack proves nothing); ``mia_auc_forgotten`` the same records after the real forget.
3. **Noise, both placements**, on a curve of σ: *inside the sum* (``protocol.noise``,
   each sender's Skellam share before masking) and *after the sum* (the former post-hoc
   publication noise, computed here only to compare). Per σ: per-pair AUC, and the accuracy
   cost of the noisy global model over ≥ 20 draws (``noise_cost_points``: mean ± SE).
4. **Differencing by the coordinator**: four nodes of 500 records; three sum, the fourth
   is admitted, all retrain for the new roster epoch, the four sum. The estimate
   ``(N₂G₂ − N₁G₁)/n_D`` against the newcomer's model (``admission_estimate_cosine``) and
   the global model's own cosine with it (``admission_baseline_cosine``); the same for the
   removal of a node (``removal_estimate_cosine``); a loss attack on the newcomer's records
   with the estimate and with the global model (``newcomer_mia_auc_*``). With noise inside
   the sum the coordinator sees only noisy sums, each with fresh noise (the commitments
   changed); after the sum it holds the exact sums, at every σ.
5. **Duplicates**: the share of training records whose text, and whose embedding, another
   record repeats (a forget by id leaves those copies in the model).

On a shared machine the sections can run as separate processes and be combined:
``--only admission|lira|pairs`` (``--sizes``; one size's seeds in parallel with ``--raw DIR
--seed k``, then ``--raw DIR`` alone to summarize them), then ``--merge`` of their JSON files.
``--merge bench/results/privacy.json`` alone recomputes the headline keys after a change of
the shipped σ.

``sigma_rule`` applies the README's rule for the default σ: the smallest σ whose
admission estimate cosine is ≤ the baseline + 0.05 and whose mean accuracy cost is ≤ 1 point.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.noise_placement import after_sum, exact_sum, inside_sum
from bench.sisa_replay import ReplayNode, check_against_node
from bench.unlearning import RESULTS, cached_embedder, embeddings
from node.sisa import evaluate, vector_to_head
from node.store import NodeConfig, Record, load_default
from protocol.epoch import roster_epoch
from protocol.federation import DEFAULT_LABELS

FEDERATION = "bench-privacy"
NODES = 3
SIZES = (1500, 9000, 30000)
SIGMAS = (0.0, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
DECOYS = 50
ADMISSION_RECORDS = 500
COSINE_MARGIN = 0.05
COST_BUDGET_POINTS = 1.0
BOOTSTRAP = 1000
PLACEMENTS = ("inside", "after")

Array = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]
Model = tuple[npt.NDArray[np.float32], int]


def address(index: int) -> str:
    """The bench's roster address of node ``index`` (the same one ``noise_placement`` uses)."""
    return "0x" + f"{index + 1:02x}" * 20


def epoch_of(indices: Sequence[int]) -> bytes:
    return roster_epoch([address(i) for i in indices])


# -- statistics ---------------------------------------------------------------------------


def auc(positives: Array, negatives: Array) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half."""
    scores = np.concatenate([positives, negatives])
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[group]
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def clustered(groups: Sequence[Array], seed: int = 0, digits: int = 4) -> dict[str, Any]:
    """Mean of items grouped by seed, with SE and 95 % interval from a two-level bootstrap
    (resample the seeds, then the items within each): items of one seed share a trained
    federation, so they are not independent."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    rng = np.random.default_rng(seed)
    boot = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        picked = rng.integers(0, len(arrays), len(arrays))
        boot[b] = np.mean(
            np.concatenate(
                [arrays[i][rng.integers(0, len(arrays[i]), len(arrays[i]))] for i in picked]
            )
        )
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {
        "mean": round(float(np.mean(np.concatenate(arrays))), digits),
        "se": round(float(np.std(boot)), digits),
        "ci95": [round(float(lo), digits), round(float(hi), digits)],
        "n": int(sum(len(a) for a in arrays)),
        "seeds": len(arrays),
    }


def confidence(vector: npt.NDArray[Any], x: Array, y: Labels) -> Array:
    """Logit-scaled confidence of the true label: z_y − logsumexp(z_other) (LiRA's φ)."""
    w, b = vector_to_head(np.asarray(vector, dtype=np.float32), x.shape[1])
    z = x.astype(np.float64) @ w.astype(np.float64) + b
    true = z[np.arange(len(y)), y]
    others = np.where(np.eye(z.shape[1], dtype=bool)[y], -np.inf, z)
    peak = others.max(axis=1, keepdims=True)
    return np.asarray(true - (peak[:, 0] + np.log(np.exp(others - peak).sum(axis=1))))


def cosine(a: Array, b: Array) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- data -------------------------------------------------------------------------------


@dataclass
class Data:
    """The default dataset's records and their cached embeddings."""

    train: list[Record]
    test: list[Record]
    vectors: dict[str, np.ndarray]

    def xy(self, records: Sequence[Record]) -> tuple[Array, Labels]:
        labels = list(DEFAULT_LABELS)
        return (
            np.stack([self.vectors[r.id] for r in records]).astype(np.float64),
            np.array([labels.index(r.label) for r in records], dtype=np.int64),
        )

    def node(
        self, index: int, records: Sequence[Record], epoch: bytes, name: str = ""
    ) -> ReplayNode:
        x, y = self.xy(records)
        config = NodeConfig(federation_id=FEDERATION, node_id=name or f"node-{index + 1}")
        return ReplayNode.train(config, [r.id for r in records], x, y, epoch)


def weighted(models: Sequence[Model]) -> Array:
    total = sum(n for _, n in models)
    return np.asarray(sum(np.asarray(v, np.float64) * (n / total) for v, n in models))


# -- 1 and 3: per-pair forget attack and the accuracy cost ------------------------------


def publish(placement: str, models: Sequence[Model], sigma: float, draw: int, roster: int) -> Array:
    """The global model the public sees under ``placement``."""
    if placement == "inside":
        return inside_sum(models, sigma, roster=roster, draw=draw)
    return after_sum(exact_sum(models, roster=roster), sigma, draw=draw)


def forget_pairs(
    data: Data, size: int, seed: int, pairs: int, draws: int, sigmas: Sequence[float]
) -> dict[str, Any]:
    """One seed at one size: per-pair ranks at every σ and placement, accuracy costs."""
    rng = random.Random(f"{seed}/{size}")
    members = rng.sample(data.train, size)
    shares = [members[i::NODES] for i in range(NODES)]
    epoch = epoch_of(range(NODES))
    nodes = [data.node(i, share, epoch) for i, share in enumerate(shares)]
    models = [n.model() for n in nodes]
    targets = rng.sample(range(len(shares[0])), pairs)
    x0, y0 = data.xy(shares[0])
    x_test, y_test = data.xy(data.test)
    scores: dict[tuple[str, float], list[Array]] = {(p, s): [] for p in PLACEMENTS for s in sigmas}
    before = {(p, s): publish(p, models, s, seed, NODES) for p in PLACEMENTS for s in sigmas}
    for number, target in enumerate(targets, start=1):
        after = [nodes[0].without([shares[0][target].id]), *models[1:]]
        decoys = rng.sample([i for i in range(len(shares[0])) if i != target], DECOYS)
        rows = [target, *decoys]
        for placement in PLACEMENTS:
            for sigma in sigmas:
                b = before[(placement, sigma)]
                a = publish(placement, after, sigma, seed, NODES)
                drop = confidence(b, x0[rows], y0[rows]) - confidence(a, x0[rows], y0[rows])
                scores[(placement, sigma)].append(drop)
        if number % 50 == 0:
            print(f"  size {size} seed {seed}: {number}/{pairs} forgets", flush=True)
    exact = exact_sum(models, roster=NODES)
    acc_exact = evaluate(exact.astype(np.float32), x_test.astype(np.float32), y_test)
    costs = {
        (placement, sigma): np.array(
            [
                100
                * (
                    acc_exact
                    - evaluate(
                        publish(placement, models, sigma, 1000 * seed + d, NODES).astype(
                            np.float32
                        ),
                        x_test.astype(np.float32),
                        y_test,
                    )
                )
                for d in range(draws)
            ]
        )
        for placement in PLACEMENTS
        for sigma in sigmas
    }
    return {"scores": scores, "costs": costs, "accuracy": acc_exact}


def pair_stats(drops: Sequence[Array]) -> tuple[Array, Array, Array, Array]:
    """Per pair: the forgotten record's rank as an AUC, whether it ranked first; pooled scores."""
    d = np.stack(drops)
    own, decoys = d[:, :1], d[:, 1:]
    rank_auc = ((own > decoys).sum(axis=1) + 0.5 * (own == decoys).sum(axis=1)) / decoys.shape[1]
    first = (own[:, 0] > decoys.max(axis=1)).astype(np.float64)
    return rank_auc, first, own[:, 0], decoys.reshape(-1)


def per_pair_section(
    data: Data,
    sizes: Sequence[int],
    seeds: int,
    pairs: int,
    draws: int,
    sigmas: Sequence[float],
    raw: Path | None = None,
    seed_only: int | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "per_pair_auc": {},
        "ranked_first_rate": {},
        "pooled_auc": {},
        "per_pair_auc_by_sigma": {p: {} for p in PLACEMENTS},
        "ranked_first_rate_by_sigma": {p: {} for p in PLACEMENTS},
        "noise_cost_points_by_sigma": {p: {} for p in PLACEMENTS},
        "accuracy": {},
    }
    for size in sizes:
        started = time.perf_counter()
        if raw is not None and seed_only is not None:
            # One seed of a size split across processes: keep the raw ranks for --merge-raw.
            run = forget_pairs(data, size, seed_only, pairs, draws, sigmas)
            with (raw / f"pairs-{size}-seed{seed_only}.pkl").open("wb") as f:
                pickle.dump(run, f)
            continue
        if raw is not None:
            runs = []
            for s in range(seeds):
                with (raw / f"pairs-{size}-seed{s}.pkl").open("rb") as f:
                    runs.append(pickle.load(f))
        else:
            runs = [forget_pairs(data, size, s, pairs, draws, sigmas) for s in range(seeds)]
        key = str(size)
        for placement in PLACEMENTS:
            aucs, firsts, costs = {}, {}, {}
            for sigma in sigmas:
                stats = [pair_stats(r["scores"][(placement, sigma)]) for r in runs]
                aucs[str(sigma)] = clustered([s[0] for s in stats])
                firsts[str(sigma)] = clustered([s[1] for s in stats])
                costs[str(sigma)] = clustered(
                    [r["costs"][(placement, sigma)] for r in runs], digits=3
                )
            out["per_pair_auc_by_sigma"][placement][key] = aucs
            out["ranked_first_rate_by_sigma"][placement][key] = firsts
            out["noise_cost_points_by_sigma"][placement][key] = costs
        exact = [pair_stats(r["scores"][("inside", 0.0)]) for r in runs]
        out["per_pair_auc"][key] = out["per_pair_auc_by_sigma"]["inside"][key]["0.0"]
        out["ranked_first_rate"][key] = out["ranked_first_rate_by_sigma"]["inside"][key]["0.0"]
        out["pooled_auc"][key] = round(
            auc(np.concatenate([s[2] for s in exact]), np.concatenate([s[3] for s in exact])), 4
        )
        out["accuracy"][key] = round(float(np.mean([r["accuracy"] for r in runs])), 4)
        row = {k: v[key] if key in v else {p: v[p][key] for p in v} for k, v in out.items()}
        print(json.dumps({"size": size, **row}), flush=True)
        print(
            f"size {size}: per-pair AUC {out['per_pair_auc'][key]}, "
            f"first {out['ranked_first_rate'][key]['mean']} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return out


# -- 2: LiRA with SISA-matched shadows ---------------------------------------------------


def lira_scores(
    target: Array, shadows: Sequence[Array], member: npt.NDArray[np.bool_], x: Array, y: Labels
) -> Array:
    """Per-example likelihood ratio log N(φ; in) − log N(φ; out) for the target model."""
    phi = np.stack([confidence(s, x, y) for s in shadows])
    observed = confidence(target, x, y)

    def gaussian(mask: npt.NDArray[np.bool_]) -> tuple[Array, Array]:
        counts = mask.sum(axis=0)
        mean = (phi * mask).sum(axis=0) / counts
        var = (((phi - mean) ** 2) * mask).sum(axis=0) / np.maximum(counts - 1, 1)
        return mean, np.sqrt(np.maximum(var, 1e-6))

    mu_in, sd_in = gaussian(member)
    mu_out, sd_out = gaussian(~member)

    def logpdf(v: Array, mu: Array, sd: Array) -> Array:
        return -0.5 * ((v - mu) / sd) ** 2 - np.log(sd)

    return logpdf(observed, mu_in, sd_in) - logpdf(observed, mu_out, sd_out)


def lira_seed(data: Data, size: int, seed: int, shadows: int, forgets: int) -> dict[str, Array]:
    """LiRA on a federation of ``size`` records: the asked-to-forget records against
    never-seen ones before the forget (the control) and after it."""
    rng = random.Random(f"lira/{seed}/{size}")
    pool = rng.sample(data.train, 2 * size)
    members = pool[:size]
    shares = [members[i::NODES] for i in range(NODES)]
    epoch = epoch_of(range(NODES))
    nodes = [data.node(i, share, epoch) for i, share in enumerate(shares)]
    models = [n.model() for n in nodes]
    gone = rng.sample(shares[0], forgets)
    after = [nodes[0].without([r.id for r in gone]), *models[1:]]
    x, y = data.xy(pool)
    member = np.zeros((shadows, len(pool)), dtype=bool)
    nprng = np.random.default_rng(seed)
    shadow_models = []
    for k in range(shadows):
        inside = nprng.permutation(len(pool))[:size]  # a half, with the target's node sizes
        member[k, inside] = True
        parts = [inside[j::NODES] for j in range(NODES)]
        fed = [
            data.node(j, [pool[i] for i in part], epoch, name=f"shadow-{seed}-{k}-{j}").model()
            for j, part in enumerate(parts)
        ]
        shadow_models.append(weighted(fed))
        if (k + 1) % 32 == 0:
            print(f"  lira size {size} seed {seed}: {k + 1}/{shadows} shadows", flush=True)
    index = {r.id: i for i, r in enumerate(pool)}
    pick_gone = np.array([index[r.id] for r in gone])
    pick_unseen = np.arange(size, 2 * size)
    kept = set(index[r.id] for r in members) - set(pick_gone.tolist())
    pick_kept = np.array(sorted(kept))
    before_scores = lira_scores(weighted(models), shadow_models, member, x, y)
    after_scores = lira_scores(weighted(after), shadow_models, member, x, y)
    return {
        "control": before_scores[pick_gone],
        "forgotten": after_scores[pick_gone],
        "retained": after_scores[pick_kept],
        "unseen_before": before_scores[pick_unseen],
        "unseen_after": after_scores[pick_unseen],
    }


def auc_groups(runs: Sequence[dict[str, Array]], pos: str, neg: str, seed: int) -> dict[str, Any]:
    """AUC over the seeds' pooled scores, 95 % interval by bootstrap of seeds then records."""
    rng = np.random.default_rng(seed)
    boot = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        picked = rng.integers(0, len(runs), len(runs))
        p = np.concatenate(
            [runs[i][pos][rng.integers(0, len(runs[i][pos]), len(runs[i][pos]))] for i in picked]
        )
        n = np.concatenate(
            [runs[i][neg][rng.integers(0, len(runs[i][neg]), len(runs[i][neg]))] for i in picked]
        )
        boot[b] = auc(p, n)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    value = auc(np.concatenate([r[pos] for r in runs]), np.concatenate([r[neg] for r in runs]))
    return {
        "value": round(value, 4),
        "ci95": [round(float(lo), 4), round(float(hi), 4)],
        "positives": int(sum(len(r[pos]) for r in runs)),
        "negatives": int(sum(len(r[neg]) for r in runs)),
        "seeds": len(runs),
    }


def lira_section(
    data: Data, sizes: Sequence[int], seeds: int, shadows: int, forgets: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "control_no_unlearning_auc": {},
        "mia_auc_forgotten": {},
        "retained_auc": {},
        "lira_shadows": shadows,
        "lira_forgets_per_seed": forgets,
    }
    for size in sizes:
        started = time.perf_counter()
        runs = [lira_seed(data, size, s, shadows, forgets) for s in range(seeds)]
        key = str(size)
        out["control_no_unlearning_auc"][key] = auc_groups(runs, "control", "unseen_before", 1)
        out["mia_auc_forgotten"][key] = auc_groups(runs, "forgotten", "unseen_after", 2)
        out["retained_auc"][key] = auc_groups(runs, "retained", "unseen_after", 3)
        print(
            f"lira size {size}: control {out['control_no_unlearning_auc'][key]}, "
            f"forgotten {out['mia_auc_forgotten'][key]['value']} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return out


# -- 4: differencing by the coordinator --------------------------------------------------


def admission_seed(
    data: Data, seed: int, draws: int, sigmas: Sequence[float]
) -> dict[tuple[str, float], dict[str, Array]]:
    """Four nodes of 500: the estimates of the newcomer's (admission) and of a leaving
    node's model (removal) from two consecutive sums, at every σ and draw."""
    rng = random.Random(f"admission/{seed}")
    pool = rng.sample(data.train, 5 * ADMISSION_RECORDS)
    shares = [pool[i * ADMISSION_RECORDS : (i + 1) * ADMISSION_RECORDS] for i in range(4)]
    unseen = pool[4 * ADMISSION_RECORDS :]
    three, four, rest = [0, 1, 2], [0, 1, 2, 3], [1, 2, 3]
    before = [data.node(i, shares[i], epoch_of(three)).model() for i in three]
    admitted = [data.node(i, shares[i], epoch_of(four)).model() for i in four]
    removed = [data.node(i, shares[i], epoch_of(rest)).model() for i in rest]
    n1, n2, n3 = (sum(n for _, n in m) for m in (before, admitted, removed))
    newcomer = np.asarray(admitted[3][0], np.float64)
    leaver = np.asarray(admitted[0][0], np.float64)
    x_new, y_new = data.xy(shares[3])
    x_out, y_out = data.xy(unseen)
    x_test, y_test = data.xy(data.test)
    exact = exact_sum(admitted, roster=4)
    acc_exact = evaluate(exact.astype(np.float32), x_test.astype(np.float32), y_test)
    out: dict[tuple[str, float], dict[str, Array]] = {}
    for placement in PLACEMENTS:
        for sigma in sigmas:
            keys = (
                "estimate",
                "baseline",
                "removal",
                "removal_baseline",
                "mia_estimate",
                "mia_global",
                "cost",
            )
            acc: dict[str, list[float]] = {k: [] for k in keys}
            for d in range(draws):
                draw = 1000 * seed + d
                if placement == "inside":
                    # What the coordinator sees: the noisy sums, fresh noise per sender set.
                    g1 = inside_sum(before, sigma, roster=3, draw=draw, senders=three)
                    g2 = inside_sum(admitted, sigma, roster=4, draw=draw, senders=four)
                    g3 = inside_sum(removed, sigma, roster=3, draw=draw, senders=rest)
                    public = g2
                else:
                    # The coordinator reconstructs the exact sums; only the public gets noise.
                    g1 = exact_sum(before, roster=3)
                    g2 = exact_sum(admitted, roster=4)
                    g3 = exact_sum(removed, roster=3)
                    public = after_sum(g2, sigma, draw=draw)
                estimate = (n2 * g2 - n1 * g1) / admitted[3][1]
                removal = (n2 * g2 - n3 * g3) / admitted[0][1]
                acc["estimate"].append(cosine(estimate, newcomer))
                acc["baseline"].append(cosine(g2, newcomer))
                acc["removal"].append(cosine(removal, leaver))
                acc["removal_baseline"].append(cosine(g2, leaver))
                acc["mia_estimate"].append(
                    auc(confidence(estimate, x_new, y_new), confidence(estimate, x_out, y_out))
                )
                acc["mia_global"].append(
                    auc(confidence(g2, x_new, y_new), confidence(g2, x_out, y_out))
                )
                acc["cost"].append(
                    100
                    * (
                        acc_exact
                        - evaluate(public.astype(np.float32), x_test.astype(np.float32), y_test)
                    )
                )
            out[(placement, sigma)] = {k: np.array(v) for k, v in acc.items()}
    return out


ADMISSION_KEYS = {
    "admission_estimate_cosine": "estimate",
    "admission_baseline_cosine": "baseline",
    "removal_estimate_cosine": "removal",
    "removal_baseline_cosine": "removal_baseline",
    "newcomer_mia_auc_estimate": "mia_estimate",
    "newcomer_mia_auc_global": "mia_global",
    "admission_noise_cost_points": "cost",
}


def admission_section(
    data: Data, seeds: int, draws: int, sigmas: Sequence[float]
) -> dict[str, Any]:
    runs = [admission_seed(data, s, draws, sigmas) for s in range(seeds)]
    out: dict[str, Any] = {
        "admission_records_per_node": ADMISSION_RECORDS,
        "admission_draws": draws,
    }
    for key, name in ADMISSION_KEYS.items():
        out[f"{key}_by_sigma"] = {
            placement: {
                str(sigma): clustered([r[(placement, sigma)][name] for r in runs])
                for sigma in sigmas
            }
            for placement in PLACEMENTS
        }
    return out


# -- 5: duplicates -----------------------------------------------------------------------


def duplicates(data: Data) -> dict[str, Any]:
    """Share of training records whose text / embedding another training record repeats."""
    texts: dict[str, int] = {}
    rows: dict[bytes, int] = {}
    for r in data.train:
        texts[r.text] = texts.get(r.text, 0) + 1
        key = np.asarray(data.vectors[r.id], dtype="<f4").tobytes()
        rows[key] = rows.get(key, 0) + 1
    n = len(data.train)
    return {
        "records": n,
        "exact_duplicate_text_rate": round(sum(c for c in texts.values() if c > 1) / n, 4),
        "exact_duplicate_embedding_rate": round(sum(c for c in rows.values() if c > 1) / n, 4),
        "forget_removes_duplicates": False,
    }


# -- the rule, the plot, main ------------------------------------------------------------


def sigma_rule(result: dict[str, Any], size: str) -> dict[str, Any]:
    """Smallest σ (inside the sum) with estimate ≤ baseline + 0.05 and mean cost ≤ 1 point."""
    est = result["admission_estimate_cosine_by_sigma"]["inside"]
    base = result["admission_baseline_cosine_by_sigma"]["inside"]
    exact_base = base["0.0"]["mean"]
    costs = result["noise_cost_points_by_sigma"]["inside"][size]
    rows = []
    for sigma in est:
        rows.append(
            {
                "sigma": float(sigma),
                "estimate": est[sigma]["mean"],
                "baseline_noisy": base[sigma]["mean"],
                "cost_points": costs[sigma]["mean"],
                "meets_noisy_baseline": est[sigma]["mean"] <= base[sigma]["mean"] + COSINE_MARGIN
                and costs[sigma]["mean"] <= COST_BUDGET_POINTS,
                "meets_exact_baseline": est[sigma]["mean"] <= exact_base + COSINE_MARGIN
                and costs[sigma]["mean"] <= COST_BUDGET_POINTS,
            }
        )

    def first(flag: str) -> float | None:
        return next((r["sigma"] for r in rows if r[flag]), None)

    return {
        "rule": "smallest σ with admission_estimate_cosine ≤ admission_baseline_cosine + "
        f"{COSINE_MARGIN} and mean noise cost ≤ {COST_BUDGET_POINTS} point, inside the sum",
        "cost_size": int(size),
        "choice_noisy_baseline": first("meets_noisy_baseline"),
        "choice_exact_baseline": first("meets_exact_baseline"),
        "rows": rows,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-pair attack by size; the σ curve of the coordinator's estimate and of the cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    sizes = list(result["per_pair_auc"])
    ax = axes[0]
    for key, label in (
        ("per_pair_auc", "per-pair AUC"),
        ("ranked_first_rate", "ranked first of 51"),
    ):
        means = [result[key][s]["mean"] for s in sizes]
        err = np.array(
            [
                [m - result[key][s]["ci95"][0], result[key][s]["ci95"][1] - m]
                for s, m in zip(sizes, means, strict=True)
            ]
        ).T
        ax.errorbar([int(s) for s in sizes], means, yerr=err, marker="o", capsize=3, label=label)
    for s, c in result["control_no_unlearning_auc"].items():
        ax.errorbar(
            [int(s)],
            [c["value"]],
            yerr=[[c["value"] - c["ci95"][0]], [c["ci95"][1] - c["value"]]],
            marker="s",
            color="k",
            capsize=3,
            label=f"LiRA control (no unlearning), {s}",
        )
    ax.axhline(0.5, color="gray", ls="--", lw=1)
    ax.axhline(1 / (DECOYS + 1), color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xticks([int(s) for s in sizes], [f"{int(s):,}" for s in sizes])
    ax.minorticks_off()
    ax.set(
        xlabel="records in the federation",
        ylabel="rate / AUC",
        title="Forget pair attacks, no noise (95 % CI)",
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for placement, style in (("inside", "-"), ("after", "--")):
        curve = result["admission_estimate_cosine_by_sigma"][placement]
        sig = [float(s) for s in curve]
        ax.plot(
            sig,
            [curve[s]["mean"] for s in curve],
            "o" + style,
            label=f"admission estimate ({placement} the sum)",
        )
    base = result["admission_baseline_cosine_by_sigma"]["inside"]
    ax.plot(sig, [base[s]["mean"] for s in base], "s-", label="baseline: global model")
    ax.plot(
        sig, [base[s]["mean"] + COSINE_MARGIN for s in base], "k:", lw=1, label="baseline + 0.05"
    )
    ax.set(
        xlabel="σ (model units)",
        ylabel="cosine with the newcomer's model",
        title="What the coordinator's differencing recovers",
    )
    ax.legend(fontsize=7)
    ax = axes[2]
    size = result["sigma_rule"]["cost_size"]
    pp = result["per_pair_auc_by_sigma"]["inside"][str(size)]
    cost = result["noise_cost_points_by_sigma"]["inside"][str(size)]
    ax.plot(sig, [pp[s]["mean"] for s in pp], "o-", color="tab:red", label="per-pair AUC")
    ax.set(
        xlabel="σ (model units)",
        ylabel="per-pair AUC",
        title=f"Noise inside the sum, {size} records",
    )
    twin = ax.twinx()
    twin.errorbar(
        sig,
        [cost[s]["mean"] for s in cost],
        yerr=[cost[s]["se"] for s in cost],
        marker="s",
        color="tab:blue",
        capsize=3,
        label="accuracy cost (points)",
    )
    twin.axhline(COST_BUDGET_POINTS, color="tab:blue", ls=":", lw=1)
    twin.set(ylabel="accuracy cost (points, mean ± SE)")
    ax.legend(loc="upper left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class Mode:
    sizes: tuple[int, ...]
    seeds: int
    pairs: int
    draws: int
    lira_sizes: tuple[int, ...]
    lira_seeds: int
    shadows: int
    forgets: int


MODES = {
    "full": Mode(SIZES, 3, 200, 20, (1500,), 3, 128, 100),
    "quick": Mode((1500,), 2, 30, 10, (1500,), 2, 32, 60),
}


def verify_replay(data: Data, work: Path) -> None:
    """The replay must give a real node's bytes, before and after a forget."""
    records = random.Random(0).sample(data.train, 300)
    config = NodeConfig(federation_id=FEDERATION, node_id="node-1")
    replay = data.node(0, records, epoch_of(range(NODES)))
    check_against_node(
        work, config, records, cached_embedder(data.vectors, records), replay, records[7].id
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``bench/results/privacy.{json,png}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer pairs, seeds and shadows (≤ 5 min)"
    )
    parser.add_argument(
        "--only",
        choices=("admission", "pairs", "lira", "all"),
        default="all",
        help="one section only (development)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="override the mode's sizes")
    parser.add_argument("--pairs", type=int, help="override the mode's forgets per seed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--raw",
        type=Path,
        help="with --only pairs: with --seed, run that seed alone and keep its raw ranks "
        "here; without, summarize the kept seeds (one size split across processes)",
    )
    parser.add_argument("--seed", type=int, help="with --raw: the one seed to run")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="combine section results (JSON files of --only runs) into privacy.{json,png}",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    mode = MODES["quick" if args.quick else "full"]
    if args.sizes:
        mode = dataclasses.replace(mode, sizes=tuple(args.sizes))
    if args.pairs:
        mode = dataclasses.replace(mode, pairs=args.pairs)
    started = time.perf_counter()
    default = load_default()
    vectors, meta = embeddings(default.train + default.test)
    data = Data(list(default.train), list(default.test), vectors)
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "nodes": NODES,
        "sigmas": list(SIGMAS),
        "node_config": NodeConfig(federation_id=FEDERATION, node_id="node-1").to_json(),
        "embed_cached": meta.get("embed_cached"),
    }
    with tempfile.TemporaryDirectory(prefix="lethe-privacy-") as tmp:
        verify_replay(data, Path(tmp))
    result["replay_matches_node"] = True
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "admission": lambda: admission_section(data, mode.seeds, mode.draws, SIGMAS),
        "lira": lambda: lira_section(
            data, mode.lira_sizes, mode.lira_seeds, mode.shadows, mode.forgets
        ),
        "pairs": lambda: per_pair_section(
            data, mode.sizes, mode.seeds, mode.pairs, mode.draws, SIGMAS, args.raw, args.seed
        ),
    }
    for name, run in sections.items():
        if args.only in (name, "all"):
            t = time.perf_counter()
            result.update(run())
            result[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
            print(f"section {name}: {result[f'{name}_seconds']} s", flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "privacy-partial.json").write_text(json.dumps(result, indent=2) + "\n")
    result.update(duplicates(data))
    if args.only == "all":
        summarize(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_by_sigma")}, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "privacy" if args.only == "all" else f"privacy-{args.only}"
    if args.sizes and args.only == "pairs":
        name += "-" + "-".join(str(size) for size in mode.sizes)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.only == "all":
        plot(result, args.out / f"{name}.png")
        (args.out / "privacy-partial.json").unlink(missing_ok=True)
    return result


def _deep_update(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def merge(parts: Sequence[Path], out: Path) -> dict[str, Any]:
    """One result from sections run as separate processes (``--only``, ``--sizes``): the
    sections share nothing but the cached embeddings, so running them side by side on a
    shared machine gives the same figures as one process."""
    result: dict[str, Any] = {}
    seconds: dict[str, dict[str, float]] = {}
    for number, part in enumerate(parts):
        data = json.loads(part.read_text())
        seconds[f"{number}:{part.name}"] = {
            k: data.pop(k) for k in list(data) if k == "seconds" or k.endswith("_seconds")
        }
        _deep_update(result, data)
    # Re-merging privacy.json alone (after a change of the shipped σ) keeps its timings.
    result["seconds_by_part"] = {
        **result.get("seconds_by_part", {}),
        **{k: v for k, v in seconds.items() if v},
    }
    summarize(result)
    (out / "privacy.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "privacy.png")
    return result


def summarize(result: dict[str, Any]) -> None:
    """The headline keys at the default σ (``protocol.noise.DEFAULT_NOISE_SCALE``)."""
    from protocol.noise import DEFAULT_NOISE_SCALE

    sigma = str(DEFAULT_NOISE_SCALE)
    demo = str(min(int(s) for s in result["per_pair_auc"]))
    result["default_sigma"] = DEFAULT_NOISE_SCALE
    result["noise_cost_points"] = {
        **result["noise_cost_points_by_sigma"]["inside"][demo][sigma],
        "draws": result["noise_cost_points_by_sigma"]["inside"][demo][sigma]["n"],
        "records": int(demo),
    }
    for key in ADMISSION_KEYS:
        result[key] = result[f"{key}_by_sigma"]["inside"][sigma]
    result["admission_estimate_cosine_after_sum"] = result["admission_estimate_cosine_by_sigma"][
        "after"
    ][sigma]
    result["per_pair_auc_at_default_sigma"] = {
        size: curve[sigma] for size, curve in result["per_pair_auc_by_sigma"]["inside"].items()
    }
    result["ranked_first_rate_at_default_sigma"] = {
        size: curve[sigma] for size, curve in result["ranked_first_rate_by_sigma"]["inside"].items()
    }
    result["sigma_rule"] = sigma_rule(result, demo)
    result["default_sigma_meets_rule"] = any(
        row["sigma"] == DEFAULT_NOISE_SCALE and row["meets_noisy_baseline"]
        for row in result["sigma_rule"]["rows"]
    )


if __name__ == "__main__":
    main()
