"""Noise inside the secure sum: each sender adds Skellam noise to its own fixed-point input.

Why here and not after the sum: the round's manifest lets anyone recompute the global
model from the masked vectors (``protocol.recompute``), so an exact sum must never exist,
not even at the coordinator. Each sender therefore adds integer noise to its quantised
``α_i·w_i`` *before* masking (the distributed Skellam mechanism, Agarwal, Kairouz & Liu,
NeurIPS 2021). Skellam(μ) is the difference of two Poisson(μ) draws, with variance
``2μ``; a sum of independent Skellams is Skellam again, so the unmasked sum of ``k``
senders each adding Skellam(μ_i) carries Skellam(Σ μ_i), exactly, in the field.

The federation's scale ``σ`` is the standard deviation the *global* model gets per
coordinate (model units, the same units as the weights): with ``k`` senders each
adds Skellam(μ) with ``2μk = (σ·2^frac_bits)²``. A sender that skips its noise removes
only its own share of the protection (the others' noise is still in the sum).

The draw is a pseudo-random function of a node secret and the round's sender-set
commitments (every sender's model hash and sample count, ``N``, the slice bound), never of
the round number: the same unchanged models in the same set republish identical noisy
bytes, so averaging many rounds gains nothing; any change to the set draws fresh noise.

This is not formal differential privacy for the federation's SGD head: a record's
influence on a trained model is unbounded, so no σ bounds it. It bounds what any one
released sum tells relative to ``σ`` (README, "What an observer learns").
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable

import numpy as np

from protocol.canonical import canonical_json
from protocol.field import IntVector

DEFAULT_NOISE_SCALE = 0.1
"""σ of the published global model per coordinate (model units); chosen in the README,
"Noise inside the sum", from ``make bench-privacy``'s curve."""

MAX_NOISE_SCALE = 0.5
"""Largest σ a federation may set: far more than any useful model survives, and its
headroom (:func:`noise_headroom`, 6 model units) stays below one more sender's clip."""

NOISE_MICROS = 1_000_000
"""The contract stores σ in millionths (``noiseScaleMicros``)."""

_DOMAIN = b"lethe/sum-noise/v1\x00"
_KEY_DOMAIN = b"lethe/sum-noise-key/v1\x00"


def node_noise_key(secret: bytes) -> bytes:
    """The node's noise PRF key, derived from a secret only it holds (its account key)."""
    return hmac.new(_KEY_DOMAIN, secret, hashlib.sha256).digest()


def noise_context(
    federation_id: str,
    commitments: Iterable[tuple[str, str, int]],
    *,
    n_total: int,
    through_slice: int | None,
    sigma: float,
) -> bytes:
    """What a node's noise is drawn for: the sender set's commitments, not the round.

    ``commitments`` are ``(address, model hash, n_samples)`` of every sender of the set.
    """
    return canonical_json(
        {
            "federation_id": federation_id,
            "commitments": sorted(
                ([a.lower(), h.lower(), int(n)] for a, h, n in commitments),
                key=lambda c: str(c[0]),
            ),
            "n_total": n_total,
            "through_slice": through_slice,
            "sigma_micros": round(sigma * NOISE_MICROS),
        }
    )


def skellam(seed: bytes, mu: float, d: int) -> IntVector:
    """``d`` Skellam(μ) draws (Poisson(μ) − Poisson(μ)) from the 32-byte ``seed``.

    Deterministic for a seed (numpy's PCG64 stream and its Poisson sampler, pinned numpy),
    so a node re-deriving its noise for a retried stage gets the same integers.
    """
    if len(seed) != 32:
        raise ValueError(f"a noise seed is 32 bytes, got {len(seed)}")
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"Skellam μ must be finite and ≥ 0, got {mu!r}")
    if mu == 0:
        return np.zeros(d, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    return rng.poisson(mu, d).astype(np.int64) - rng.poisson(mu, d).astype(np.int64)


def sender_mu(sigma: float, scale: float, senders: int) -> float:
    """Each of ``senders`` adds Skellam(μ) so that their sum has std ``σ`` in model units."""
    if not (math.isfinite(sigma) and 0 <= sigma <= MAX_NOISE_SCALE):
        raise ValueError(f"noise scale σ must be within [0, {MAX_NOISE_SCALE}], got {sigma!r}")
    if senders < 1:
        raise ValueError(f"the number of senders must be positive, got {senders}")
    return (sigma * scale) ** 2 / (2 * senders)


def sender_noise(
    key: bytes, context: bytes, d: int, *, sigma: float, scale: float, senders: int
) -> IntVector:
    """One sender's noise in field units (signed int64, not reduced): its share of ``σ``."""
    seed = hmac.new(key, _DOMAIN + context, hashlib.sha256).digest()
    return skellam(seed, sender_mu(sigma, scale, senders), d)


def noise_headroom(sigma: float) -> float:
    """Model units the fixed point must leave free above the clipped sum for the noise.

    Twelve standard deviations: a Skellam coordinate beyond that has probability far
    below 1e-30 per coordinate, so the noisy sum never wraps around the field.
    """
    return 12.0 * sigma
