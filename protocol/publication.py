"""Noise on published global models, so two models around a forget do not point at the record.

Each forget publishes the global model before and after it, and their difference is the
owner's retrain without the record. Measured with ``make bench-privacy`` (the before/after
attack of Chen et al., CCS 2021, on the default dataset with three nodes), that pair
identified forgotten records with AUC 0.55–0.56 (± 0.018) in two runs. Gaussian noise of
scale :data:`DEFAULT_SIGMA` on every published coordinate brought it to 0.530–0.535
(± 0.017) at an accuracy cost within run-to-run noise (−0.05 and 0.40 points); batching
forgets did not help reliably (README, "What an observer learns").

The noise is seeded by the exact model's own bytes: publishing an unchanged model again
repeats the same noise, so averaging many publications of one model does not remove it,
and two federations with the same node models publish the same bytes (forgetting stays
bit-exact at federation level). Nobody who lacks the exact model can regenerate the noise;
the coordinator, which reconstructs the exact sum, can (it learns that sum by design).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol.hashing import keccak256

DEFAULT_SIGMA = 0.15
"""Chosen by ``bench.privacy``: the largest σ within 0.5 accuracy points in every run."""
_DOMAIN = b"lethe.publish-noise.v1\x00"


def published_model(vector: npt.NDArray[np.float32], sigma: float) -> npt.NDArray[np.float32]:
    """``vector`` plus N(0, σ²) noise per coordinate, seeded by the vector's float32 bytes."""
    exact = np.ascontiguousarray(vector, dtype="<f4")
    if sigma == 0:
        return exact
    if not 0 < sigma < float("inf"):
        raise ValueError(f"noise scale must be ≥ 0 and finite, got {sigma}")
    seed = int.from_bytes(keccak256(_DOMAIN + exact.tobytes())[:16], "big")
    noise = np.random.Generator(np.random.PCG64(seed)).standard_normal(exact.shape)
    return (exact + sigma * noise).astype("<f4")
