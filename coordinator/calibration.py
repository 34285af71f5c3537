"""Temperature scaling and calibration error for the feedback scorer.

A softmax head trained on tweets is over- or under-confident on other text; the abstain
band (``coordinator.feedback.FeedbackPolicy``) only means something if a probability of
0.8 is right about 80 % of the time. One temperature ``T`` divides the logits (Guo et al.,
"On Calibration of Modern Neural Networks", ICML 2017): it keeps every argmax, so the
label and accuracy do not change, only the confidence. It is fitted by minimising the
negative log-likelihood on the federation's test split (a 1-D search, deterministic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

T_MIN, T_MAX = 0.05, 20.0
"""The search range of the temperature (log-spaced)."""


def softmax(logits: npt.NDArray[Any], temperature: float = 1.0) -> npt.NDArray[np.float64]:
    """Row-wise softmax of ``logits / temperature`` in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float64)


def nll(logits: npt.NDArray[Any], labels: npt.NDArray[Any], temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` (class indices) at ``temperature``."""
    probs = softmax(logits, temperature)
    picked = probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(np.log(np.maximum(picked, 1e-300))))


def fit_temperature(logits: npt.NDArray[Any], labels: npt.NDArray[Any]) -> float:
    """The temperature minimising :func:`nll`: a log-spaced grid, then golden-section refine."""
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one labelled row")
    grid = np.geomspace(T_MIN, T_MAX, 61)
    losses = [nll(logits, labels, float(t)) for t in grid]
    best = int(np.argmin(losses))
    lo, hi = np.log(grid[max(0, best - 1)]), np.log(grid[min(len(grid) - 1, best + 1)])
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(logits, labels, float(np.exp(a))) <= nll(logits, labels, float(np.exp(b))):
            hi = b
        else:
            lo = a
    return round(float(np.exp((lo + hi) / 2)), 4)


def expected_calibration_error(
    probs: npt.NDArray[Any], labels: npt.NDArray[Any], bins: int = 15
) -> float:
    """ECE of the top-class confidence: Σ_bins |accuracy − confidence| · share of rows,
    with ``bins`` equal-width confidence bins (the usual 15)."""
    p = np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        raise ValueError("ECE needs at least one row")
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += abs(correct[inside].mean() - confidence[inside].mean()) * inside.mean()
    return float(total)
