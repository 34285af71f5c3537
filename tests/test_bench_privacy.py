"""The privacy benchmark's instruments: the SISA replay is exact, the noise has the scale
it claims, and the attack statistics can tell a leak from chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.epoch import hash_embed
from bench.noise_placement import after_sum, exact_sum, inside_sum
from bench.privacy import auc, clustered, pair_stats
from bench.sisa_replay import ReplayNode, check_against_node
from node.store import NodeConfig, Record, load_default
from protocol.federation import DEFAULT_LABELS
from protocol.secure_sum import round_fixed_point


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return load_default(limit=160).train


def _replay(records: list[Record], config: NodeConfig, epoch: bytes) -> ReplayNode:
    x = hash_embed([r.text for r in records])
    y = np.array([list(DEFAULT_LABELS).index(r.label) for r in records])
    return ReplayNode.train(config, [r.id for r in records], x, y, epoch)


def test_replay_reproduces_a_real_node_before_and_after_a_forget(
    records: list[Record], tmp_path: Path
) -> None:
    config = NodeConfig(federation_id="bench-privacy", node_id="node-1", shards=2)
    replay = _replay(records, config, b"\x07" * 32)
    check_against_node(tmp_path, config, records, hash_embed, replay, records[3].id)


def test_replay_check_fails_when_training_differs(records: list[Record], tmp_path: Path) -> None:
    config = NodeConfig(federation_id="bench-privacy", node_id="node-1")
    other = NodeConfig(federation_id="bench-privacy", node_id="node-2")  # other batch orders
    replay = _replay(records, other, b"\x07" * 32)
    with pytest.raises(AssertionError, match="does not reproduce"):
        check_against_node(tmp_path, config, records, hash_embed, replay, records[3].id)


def _models(seed: int, k: int = 3) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 1, 1155).astype(np.float32), 100 * (i + 1)) for i in range(k)]


def test_inside_sum_noise_has_std_sigma_and_is_fresh_only_when_a_model_changes() -> None:
    models = _models(1)
    exact = exact_sum(models, roster=3)
    fp = round_fixed_point(3, 0.0)
    weighted = sum(v.astype(np.float64) * n / 600 for v, n in models)
    assert np.abs(exact - weighted).max() <= 3 / fp.scale
    noise = np.concatenate([inside_sum(models, 0.3, roster=3, draw=d) - exact for d in range(8)])
    assert 0.28 < noise.std() < 0.32
    again = inside_sum(models, 0.3, roster=3, draw=0)
    assert again.tobytes() == inside_sum(models, 0.3, roster=3, draw=0).tobytes()
    changed = [models[0], models[1], (models[2][0] + np.float32(0.001), models[2][1])]
    fresh = inside_sum(changed, 0.3, roster=3, draw=0) - exact_sum(changed, roster=3)
    # every sender's share is redrawn: the two noises are uncorrelated
    assert abs(np.corrcoef(fresh, again - exact)[0, 1]) < 0.15


def test_after_sum_noise_is_a_function_of_the_exact_model() -> None:
    exact = exact_sum(_models(2), roster=3)
    one = after_sum(exact, 0.2, draw=0)
    assert one.tobytes() == after_sum(exact, 0.2, draw=0).tobytes()
    assert 0.18 < (one - exact).std() < 0.22
    assert after_sum(exact, 0.0, draw=0).tobytes() == exact.astype("<f4").astype(float).tobytes()


def test_round_fixed_point_leaves_headroom_for_the_noise() -> None:
    from protocol.field import HALF

    for n, sigma in ((3, 0.0), (3, 0.5), (4, 0.3), (10, 0.5), (30, 0.15)):
        fp = round_fixed_point(n, sigma)
        assert n * fp.max_level + np.ceil(12 * sigma * fp.scale) <= HALF
        finer = round(8.0 * 2 ** (fp.frac_bits + 1))
        assert n * finer + np.ceil(12 * sigma * 2 ** (fp.frac_bits + 1)) > HALF


def test_pair_statistics_separate_a_leak_from_chance() -> None:
    rng = np.random.default_rng(0)
    chance = [rng.normal(size=51) for _ in range(300)]
    leak = [np.concatenate([[5.0], rng.normal(size=50)]) for _ in range(300)]
    rank, first, own, decoys = pair_stats(chance)
    assert 0.45 < rank.mean() < 0.55 and first.mean() < 0.06
    assert 0.45 < auc(own, decoys) < 0.55
    rank, first, _, _ = pair_stats(leak)
    assert rank.mean() > 0.99 and first.mean() > 0.9
    summary = clustered([rank[:100], rank[100:200], rank[200:]])
    assert summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
