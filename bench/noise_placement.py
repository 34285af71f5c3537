"""The two places a federation can put its noise, as the nodes and the coordinator compute them.

- **Inside the sum** (``protocol.noise``): each sender quantises ``α_i·w_i`` with the
  round's fixed point and adds its Skellam share, drawn from a PRF of its node secret over
  the sender set's commitments; the unmasked sum is the only thing anyone, the
  coordinator included, ever sees. Simulated here exactly as the nodes produce it,
  ``Σ_i dequantize(quantize(α_i·w_i) + noise_i)``, without running the masking (masks
  cancel exactly in the field).
- **After the sum** (the former ``protocol.publication``, kept here only to compare): the
  coordinator reconstructs the exact sum and publishes it plus Gaussian noise of scale σ
  seeded by the exact model's bytes. The coordinator itself holds the exact sum.

A *draw* stands for one assignment of node secrets (inside) or of the publication seed's
domain (after): the same draw, models and sender set give the same bytes, as in a real
federation; different draws are independent federations with the same data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from protocol.field import HALF, to_signed
from protocol.hashing import keccak256
from protocol.model import model_hash
from protocol.noise import node_noise_key, noise_context, sender_noise
from protocol.secure_sum import round_fixed_point

Array = npt.NDArray[np.float64]
_POST_HOC_DOMAIN = b"lethe.publish-noise.v1\x00"


def _address(index: int) -> str:
    return "0x" + f"{index + 1:02x}" * 20


def inside_sum(
    models: Sequence[tuple[npt.NDArray[np.float32], int]],
    sigma: float,
    *,
    roster: int,
    draw: int,
    federation: str = "bench-privacy",
    senders: Sequence[int] | None = None,
) -> Array:
    """The published global model when every sender adds its Skellam share before masking.

    ``models`` are the senders' ``(vector, n_samples)``; ``senders`` their roster indices
    (default ``0..k−1``), which name their addresses and node secrets.
    """
    indices = list(senders) if senders is not None else list(range(len(models)))
    fp = round_fixed_point(roster, sigma)
    total = sum(n for _, n in models)
    commitments = [
        (_address(i), "0x" + model_hash(v).hex(), n)
        for i, (v, n) in zip(indices, models, strict=True)
    ]
    context = noise_context(federation, commitments, n_total=total, through_slice=None, sigma=sigma)
    acc = np.zeros(len(models[0][0]), dtype=np.int64)
    for i, (vector, n) in zip(indices, models, strict=True):
        weighted = np.asarray(vector, dtype=np.float64) * (n / total)
        acc += to_signed(fp.quantize(weighted))
        if sigma > 0:
            secret = keccak256(f"bench-node-secret/{draw}/{i}".encode())
            acc += sender_noise(
                node_noise_key(secret),
                context,
                len(acc),
                sigma=sigma,
                scale=fp.scale,
                senders=len(models),
            )
    if np.abs(acc).max() > HALF:
        raise AssertionError("the noisy sum wrapped around the field")
    return acc.astype(np.float64) / fp.scale


def exact_sum(models: Sequence[tuple[npt.NDArray[np.float32], int]], *, roster: int) -> Array:
    """The noiseless fixed-point sum (what the coordinator reconstructed before the change)."""
    return inside_sum(models, 0.0, roster=roster, draw=0)


def after_sum(exact: Array, sigma: float, *, draw: int) -> Array:
    """The former post-hoc publication: ``exact`` + N(0, σ²), seeded by the exact bytes."""
    published = np.ascontiguousarray(exact, dtype="<f4")
    if sigma == 0:
        return published.astype(np.float64)
    seed = keccak256(_POST_HOC_DOMAIN + draw.to_bytes(4, "big") + published.tobytes())
    noise = np.random.Generator(np.random.PCG64(int.from_bytes(seed[:16], "big")))
    return (published + sigma * noise.standard_normal(published.shape)).astype(np.float64)
