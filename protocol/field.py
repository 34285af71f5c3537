"""GF(p) for p = 2^31 − 1: vectorised modular arithmetic, a CSPRNG sampler and fixed-point coding.

Why this prime: it is a Mersenne prime, so reduction is two shift-and-mask folds
instead of a division, and a product of two field elements (< 2^62) plus another
element still fits a signed 64-bit integer. Everything here works on whole numpy
vectors; nothing loops over coordinates in Python.

Fixed point (see :class:`FixedPoint`): a real ``x`` is clipped to ``[-clip, clip]``,
scaled by ``2^frac_bits``, rounded half-to-even to an integer ``q`` and stored as
``q mod p``, so a negative ``q`` becomes ``p - |q|`` (the field's "two's complement").
Decoding reads a residue above ``p // 2`` as negative. Rounding moves each value by
at most ``2^-(frac_bits + 1)``, so a sum of ``n`` quantised in-range values is off by
at most ``n · 2^-(frac_bits + 1)``; the sum decodes correctly as long as
``n · round(clip · 2^frac_bits) ≤ (p − 1) / 2``, which :meth:`FixedPoint.check_parties`
enforces and :meth:`FixedPoint.for_parties` chooses ``frac_bits`` to satisfy.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

P = (1 << 31) - 1
"""The field modulus, the Mersenne prime 2^31 − 1."""

HALF = P // 2
"""Largest residue read as non-negative; residues above it are negative numbers."""

IntVector = NDArray[np.int64]
FloatVector = NDArray[np.float64]


def fold(a: IntVector, scratch: IntVector | None = None) -> IntVector:
    """Partly reduce non-negative ``a < 2^63`` in place to ``[0, p + 2]``; return it.

    Two Mersenne folds ``a -> (a & p) + (a >> 31)``. The result is not canonical,
    but small enough that multiplying by a field element and adding one keeps every
    intermediate below 2^63, which lets Horner's rule skip the final subtraction
    until the end. ``scratch`` (same shape as ``a``) avoids an allocation in hot loops.
    """
    high = np.right_shift(a, 31, out=scratch)
    np.bitwise_and(a, P, out=a)
    a += high
    np.right_shift(a, 31, out=high)
    np.bitwise_and(a, P, out=a)
    a += high
    return a


def canonical(a: IntVector) -> IntVector:
    """Map values in ``[0, 2p)`` (e.g. after :func:`fold`) in place to ``[0, p)``; return it."""
    a[a >= P] -= P
    return a


def reduce(a: IntVector) -> IntVector:
    """Reduce non-negative ``a < 2^63`` in place to canonical residues in ``[0, p)``."""
    return canonical(fold(a))


def add_mod(a: IntVector, b: IntVector) -> IntVector:
    """Return ``a + b mod p`` as a new canonical vector (both canonical)."""
    return canonical(a + b)


def inverse(a: int) -> int:
    """Multiplicative inverse of ``a`` in GF(p); ``ValueError`` for ``a ≡ 0``."""
    if a % P == 0:
        raise ValueError("0 has no inverse in GF(p)")
    return pow(a, -1, P)


def random_elements(shape: int | tuple[int, ...]) -> IntVector:
    """Uniform field elements from the OS CSPRNG, as int64 of the given shape.

    Masking 32 random bits to 31 gives a uniform value in ``[0, 2^31 − 1]``; only the
    single value ``p = 2^31 − 1`` falls outside the field, so rejection sampling
    redraws just those positions (about one in two billion).
    """
    size = math.prod(shape) if isinstance(shape, tuple) else shape
    raw = np.frombuffer(secrets.token_bytes(4 * size), dtype="<u4") & np.uint32(P)
    return redraw_out_of_field(raw).astype(np.int64).reshape(shape)


def redraw_out_of_field(raw: NDArray[np.uint32]) -> NDArray[np.uint32]:
    """Replace, in place, every 31-bit value equal to ``p`` by a fresh CSPRNG draw below ``p``."""
    rejected = np.flatnonzero(raw == P)
    while rejected.size:
        fresh = np.frombuffer(secrets.token_bytes(4 * rejected.size), dtype="<u4")
        raw[rejected] = fresh & np.uint32(P)
        rejected = rejected[raw[rejected] == P]
    return raw


def to_signed(v: IntVector) -> IntVector:
    """Read canonical residues as signed integers in ``[-(p − 1)/2, (p − 1)/2]``."""
    v = np.asarray(v, dtype=np.int64)
    return np.where(v > HALF, v - P, v)


def check_residues(v: NDArray[Any], what: str) -> IntVector:
    """Return ``v`` as int64 if every entry is a canonical residue, else ``ValueError``."""
    arr = np.asarray(v)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= P):
        raise ValueError(f"{what} holds values outside [0, p) for p = 2^31 − 1")
    return arr


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point code of reals in GF(p): ``clip`` bounds |x|, ``2^-frac_bits`` is the step.

    Parameters
    ----------
    clip
        Inputs are clipped to ``[-clip, clip]`` before rounding. In secure
        aggregation the input is ``α_i · w_i``, so ``clip`` bounds the weighted
        parameters one node contributes.
    frac_bits
        Number of fractional bits: the quantisation step is ``2^-frac_bits`` and
        rounding (half to even) errs by at most half a step per value.
    """

    clip: float
    frac_bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.frac_bits, int) or isinstance(self.frac_bits, bool):
            raise TypeError(f"frac_bits must be an int, got {type(self.frac_bits).__name__}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip!r}")
        if not 0 <= self.frac_bits <= 30:
            raise ValueError(f"frac_bits must be in [0, 30], got {self.frac_bits}")
        if self.max_level < 1:
            raise ValueError(
                f"clip={self.clip} with frac_bits={self.frac_bits} rounds every value to 0; "
                "raise frac_bits or clip"
            )
        if self.max_level > HALF:
            raise ValueError(
                f"clip·2^frac_bits = {self.max_level} exceeds (p − 1)/2 = {HALF}: even one "
                f"value would wrap; use frac_bits ≤ {self._largest_frac_bits(self.clip, 1)}"
            )

    @classmethod
    def for_parties(cls, n: int, clip: float = 8.0) -> FixedPoint:
        """The finest code for which a sum of ``n`` clipped values cannot wrap around.

        Picks the largest ``frac_bits`` with ``n · round(clip · 2^frac_bits) ≤ (p − 1)/2``.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of parties must be a positive int, got {n!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {clip!r}")
        frac_bits = cls._largest_frac_bits(clip, n)
        if frac_bits < 0:
            raise ValueError(
                f"no fixed-point code fits {n} values of magnitude {clip} in GF(2^31 − 1): "
                f"lower clip to at most {HALF // n}"
            )
        return cls(clip=clip, frac_bits=frac_bits)

    @staticmethod
    def _largest_frac_bits(clip: float, n: int) -> int:
        for frac_bits in range(30, -1, -1):
            level = round(clip * (1 << frac_bits))
            if level >= 1 and n * level <= HALF:
                return frac_bits
        return -1

    @property
    def scale(self) -> float:
        """``2^frac_bits``: one unit of the real value in field units."""
        return float(1 << self.frac_bits)

    @property
    def max_level(self) -> int:
        """Largest magnitude of a quantised value, ``round(clip · 2^frac_bits)``."""
        return round(self.clip * (1 << self.frac_bits))

    @property
    def max_parties(self) -> int:
        """Largest ``n`` whose sum of clipped values still decodes without wrapping."""
        return HALF // self.max_level

    def check_parties(self, n: int) -> None:
        """Raise ``ValueError`` if a sum of ``n`` clipped values could wrap around p."""
        if n < 1:
            raise ValueError(f"the number of parties must be positive, got {n}")
        if n > self.max_parties:
            hint = self._largest_frac_bits(self.clip, n)
            fix = f"use frac_bits ≤ {hint}" if hint >= 0 else f"lower clip to ≤ {HALF // n}"
            raise ValueError(
                f"a sum of {n} values clipped to ±{self.clip} at frac_bits={self.frac_bits} "
                f"can exceed (p − 1)/2 and wrap around; at most {self.max_parties} parties "
                f"fit; {fix} (FixedPoint.for_parties({n}, clip={self.clip}) does that)"
            )

    def max_sum_error(self, n: int) -> float:
        """Worst-case |decoded sum − true sum| of ``n`` values inside ``[-clip, clip]``.

        Each value is rounded by at most ``2^-(frac_bits+1)``; field addition is exact
        while no wrap-around happens (checked here), and decoding divides by a power of
        two, which is exact in float64. Values outside the clip range additionally lose
        their excess — clipping is a deliberate, documented bias, not rounding error.
        """
        self.check_parties(n)
        return n / (1 << (self.frac_bits + 1))

    def quantize(self, x: NDArray[Any]) -> IntVector:
        """Clip, scale, round half to even and map to residues in ``[0, p)`` (int64)."""
        arr = np.asarray(x, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("cannot quantise NaN or infinite values; has the model diverged?")
        q = np.rint(np.clip(arr, -self.clip, self.clip) * self.scale).astype(np.int64)
        q[q < 0] += P
        return q

    def dequantize(self, v: NDArray[Any]) -> FloatVector:
        """Map residues back to reals: above ``p // 2`` is negative, then divide by the scale."""
        residues = check_residues(v, "a fixed-point vector")
        return to_signed(residues).astype(np.float64) / self.scale
