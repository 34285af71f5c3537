"""Temperature scaling and ECE (``coordinator.calibration``) and the scorer that uses them.

Specifications:
- the fitted temperature recovers the one that generated the labels, on both sides of 1;
- a temperature never changes a label, only the confidence;
- ECE is ~0 for calibrated probabilities and large for over-confident ones;
- the scorer divides the published head's logits by the federation's temperature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coordinator.calibration import expected_calibration_error, fit_temperature, softmax
from coordinator.feedback import GlobalModelScorer
from coordinator.queue import CoordinatorDB
from protocol.features import EMBEDDING_DIM
from protocol.hashing import keccak256
from protocol.model import model_bytes
from protocol.store import LocalStore


def sample(true_t: float, n: int = 20000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Logits, and labels drawn from softmax(logits / true_t)."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, 3)) * 3
    probs = softmax(logits, true_t)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_the_fitted_temperature_recovers_the_true_one(true_t: float) -> None:
    logits, labels = sample(true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.08)
    assert fit_temperature(logits, labels) == fit_temperature(logits, labels)


def test_a_temperature_changes_confidence_not_labels() -> None:
    logits, _ = sample(1.0, n=500)
    for t in (0.2, 1.0, 7.0):
        assert (softmax(logits, t).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_ece_separates_calibrated_from_overconfident() -> None:
    logits, labels = sample(2.0)
    calibrated = expected_calibration_error(softmax(logits, 2.0), labels)
    overconfident = expected_calibration_error(softmax(logits, 0.5), labels)
    assert calibrated < 0.02 < 0.1 < overconfident
    with pytest.raises(ValueError):
        expected_calibration_error(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 3)), np.zeros(0))


def test_the_scorer_applies_the_federation_temperature(tmp_path: Path) -> None:
    db = CoordinatorDB(tmp_path / "c.sqlite")
    store = LocalStore(tmp_path / "blocks")
    vector = np.random.default_rng(5).standard_normal((EMBEDDING_DIM + 1) * 3).astype(np.float32)
    data = model_bytes(vector)
    cid = store.put(data)
    db.save_round(
        1, "finalized", {"global_model_cid": cid, "global_model_hash": "0x" + keccak256(data).hex()}
    )
    x = np.random.default_rng(6).standard_normal(EMBEDDING_DIM).astype(np.float32) * 0.05
    logits = x.astype(np.float64) @ vector[: EMBEDDING_DIM * 3].reshape(EMBEDDING_DIM, 3).astype(
        np.float64
    ) + vector[EMBEDDING_DIM * 3 :].astype(np.float64)
    for t in (1.0, 2.5):
        got = GlobalModelScorer(db, store, embed=lambda _t: x, temperature=t).score("text")
        np.testing.assert_allclose(list(got.probabilities.values()), softmax(logits, t), atol=2e-6)
    with pytest.raises(ValueError, match="temperature"):
        GlobalModelScorer(db, store, temperature=0.0)
