"""The noise a published global model carries, simulated for benchmarks without a round.

Inside the secure sum (``protocol.noise``) each of ``k`` senders adds Skellam(μ) with
``2μk = (σ·2^frac_bits)²`` to its fixed-point input; the sum carries Skellam(Σμ), which is
what :func:`inside_sum_noise` draws at once (same distribution, one draw per release).
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from protocol.noise import skellam
from protocol.secure_sum import round_fixed_point


def inside_sum_noise(
    d: int, sigma: float, *, seed: bytes | int, n_members: int = 3
) -> npt.NDArray[np.float64]:
    """One release's noise in model units: the senders' summed Skellam over the round's code."""
    if sigma == 0:
        return np.zeros(d)
    scale = round_fixed_point(n_members, sigma).scale
    key = hashlib.sha256(seed if isinstance(seed, bytes) else str(seed).encode()).digest()
    return skellam(key, (sigma * scale) ** 2 / 2, d).astype(np.float64) / scale


def noisy_release(
    exact: npt.NDArray[np.floating], sigma: float, *, seed: bytes | int, n_members: int = 3
) -> npt.NDArray[np.float32]:
    """``exact`` as a round would publish it at noise ``σ`` (float32, like model bytes)."""
    noise = inside_sum_noise(exact.size, sigma, seed=seed, n_members=n_members)
    return (np.asarray(exact, dtype=np.float64) + noise.reshape(exact.shape)).astype(np.float32)
