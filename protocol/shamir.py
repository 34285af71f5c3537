"""Vectorised Shamir t-of-n secret sharing of whole vectors over GF(2^31 − 1).

Each coordinate of a vector gets its own random polynomial of degree ``t − 1``
whose constant term is that coordinate; party ``x`` receives the polynomial values
at ``x``. Any ``t`` shares give the vector back by Lagrange interpolation at 0;
``t − 1`` shares are uniformly distributed whatever the secret, so they say nothing
about it. Shares are linear: the sum of shares is a share of the sum, which is
what secure aggregation relies on.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from protocol.errors import ProtocolError
from protocol.field import IntVector, P, canonical, check_residues, fold, inverse, random_elements

BLOCK = 1 << 15
"""Coordinates processed together: a block's coefficients and shares stay in cache."""

IDENTIFY_COLUMNS = 64
"""Failing coordinates examined when looking for the share that broke consistency."""


class InconsistentSharesError(ProtocolError):
    """Shares do not lie on one polynomial of degree ``t − 1``: at least one is corrupt.

    ``suspect_x`` is the x-coordinate of the one share whose removal makes the
    others consistent, when exactly one such share exists; ``None`` otherwise.
    """

    def __init__(self, message: str, *, suspect_x: int | None, bad_coordinates: int) -> None:
        super().__init__(message)
        self.suspect_x = suspect_x
        self.bad_coordinates = bad_coordinates


def check_points(xs: Sequence[int], threshold: int | None = None) -> None:
    """Raise ``ValueError`` unless the x-coordinates are distinct, in ``[1, p)``, and fit ``t``."""
    for x in xs:
        if not isinstance(x, int) or isinstance(x, bool) or not 1 <= x < P:
            raise ValueError(f"x-coordinates must be ints in [1, 2^31 − 1), got {x!r}")
    if len(set(xs)) != len(xs):
        raise ValueError(f"x-coordinates must be distinct, got {list(xs)}")
    if threshold is not None and not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}] (the party count), got {threshold}")


def split(secret: IntVector, xs: Sequence[int], threshold: int) -> IntVector:
    """Share every coordinate of ``secret`` ``threshold``-of-``len(xs)``.

    Parameters
    ----------
    secret
        Canonical residues, shape ``(d,)``.
    xs
        The parties' x-coordinates; row ``i`` of the result is the share for ``xs[i]``.
    threshold
        ``t``: any ``t`` shares reconstruct, ``t − 1`` reveal nothing.

    Returns
    -------
    Shares as canonical residues, int64 of shape ``(len(xs), d)``.
    """
    secret = check_residues(secret, "the secret")
    if secret.ndim != 1:
        raise ValueError(f"the secret must be a 1-D vector, got shape {secret.shape}")
    check_points(xs, threshold)
    d = secret.shape[0]
    shares = np.empty((len(xs), d), dtype=np.int64)
    if threshold == 1:
        shares[:] = secret
        return shares
    scratch = np.empty(min(BLOCK, d), dtype=np.int64)
    for start in range(0, d, BLOCK):
        stop = min(d, start + BLOCK)
        # Coefficients of degree 1..t-1, drawn fresh per block so they never all sit in memory.
        coeffs = random_elements((threshold - 1, stop - start))
        tmp = scratch[: stop - start]
        for row, x in enumerate(xs):
            acc = shares[row, start:stop]
            # Horner: acc <= p + 2 after each fold, so acc·x + c < 2^63 throughout.
            np.multiply(coeffs[-1], x, out=acc)
            for k in range(threshold - 3, -1, -1):
                acc += coeffs[k]
                fold(acc, tmp)
                acc *= x
            acc += secret[start:stop]
            canonical(fold(acc, tmp))
    return shares


def lagrange_coefficients(xs: Sequence[int], at: int = 0) -> list[int]:
    """Weights ``λ_i`` with ``f(at) = Σ λ_i f(x_i)`` for every polynomial of degree < len(xs)."""
    check_points(xs)
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (at - xj) % P
                den = den * (xi - xj) % P
        weights.append(num * inverse(den) % P)
    return weights


def combine(weights: Sequence[int], rows: Sequence[IntVector]) -> IntVector:
    """``Σ weights[i] · rows[i] mod p`` for canonical rows, vectorised, two scratch vectors."""
    if len(weights) != len(rows) or not rows:
        raise ValueError("combine needs one weight per row and at least one row")
    acc = rows[0] * (weights[0] % P)
    fold(acc)
    tmp = np.empty_like(acc)
    scratch = np.empty_like(acc)
    for w, row in zip(weights[1:], rows[1:], strict=True):
        np.multiply(row, w % P, out=tmp)
        acc += tmp  # (p + 2) + (p − 1)^2 < 2^63
        fold(acc, scratch)
    return canonical(acc)


def reconstruct(xs: Sequence[int], shares: Sequence[IntVector]) -> IntVector:
    """Interpolate the shares at 0: the secret, if ``len(xs) ≥ t`` consistent shares are given.

    Pass exactly ``t`` shares for speed; more also work when they are consistent
    (use :func:`check_consistency` to make sure they are).
    """
    if len(xs) != len(shares):
        raise ValueError(f"{len(xs)} x-coordinates but {len(shares)} shares")
    rows = [check_residues(s, f"share at x={x}") for x, s in zip(xs, shares, strict=True)]
    if len({r.shape for r in rows}) != 1 or rows[0].ndim != 1:
        raise ValueError("shares must be 1-D vectors of one common length")
    return combine(lagrange_coefficients(xs), rows)


def _dual_weights(xs: Sequence[int]) -> list[int]:
    """``v_j = 1 / Π_{k≠j} (x_j − x_k)``, so ``Σ v_j f(x_j) = 0`` whenever deg f < len(xs) − 1."""
    weights = []
    for j, xj in enumerate(xs):
        den = 1
        for k, xk in enumerate(xs):
            if k != j:
                den = den * (xj - xk) % P
        weights.append(inverse(den))
    return weights


def _consistent_columns(xs: Sequence[int], shares: IntVector, threshold: int) -> bool:
    """Exact check on a few columns: do all shares agree with the interpolant of the first t?"""
    base = xs[:threshold]
    for j in range(threshold, len(xs)):
        predicted = combine(lagrange_coefficients(base, at=xs[j]), list(shares[:threshold]))
        if not np.array_equal(predicted, shares[j]):
            return False
    return True


def check_consistency(xs: Sequence[int], shares: Sequence[IntVector], threshold: int) -> None:
    """Raise :class:`InconsistentSharesError` unless all shares fit one degree-(t−1) polynomial.

    With ``m > t`` shares, the valid share vectors form a Reed–Solomon code whose dual
    is spanned by ``(v_j g(x_j))_j`` for polynomials ``g`` of degree < m − t. One
    combination with a secret random ``g`` checks every share in ``m`` vector passes
    (instead of ``(m − t)·t`` for comparing interpolants); a corrupt share slips
    through with probability at most ``1/p ≈ 4.7e-10``, since ``g`` is drawn after the
    shares arrived. On failure, the failing coordinates are re-examined exactly with
    each share left out in turn to name the culprit (needs ``m ≥ t + 2``).
    With exactly ``t`` shares any values fit, so nothing can be checked.
    """
    check_points(xs, threshold)
    if len(xs) != len(shares):
        raise ValueError(f"{len(xs)} x-coordinates but {len(shares)} shares")
    m = len(xs)
    if m <= threshold:
        return
    rows = [check_residues(s, f"share at x={x}") for x, s in zip(xs, shares, strict=True)]
    g = [secrets.randbelow(P) for _ in range(m - threshold)]
    weights = []
    for x, v in zip(xs, _dual_weights(xs), strict=True):
        g_x = 0
        for c in reversed(g):
            g_x = (g_x * x + c) % P
        weights.append(v * g_x % P)
    syndrome = combine(weights, rows)
    bad = np.flatnonzero(syndrome)
    if bad.size == 0:
        return
    sample = bad[:IDENTIFY_COLUMNS]
    columns = np.stack([row[sample] for row in rows])
    suspects = []
    if m >= threshold + 2:
        for j in range(m):
            keep = [k for k in range(m) if k != j]
            if _consistent_columns([xs[k] for k in keep], columns[keep], threshold):
                suspects.append(xs[j])
    suspect = suspects[0] if len(suspects) == 1 else None
    culprit = (
        f"the share at x={suspect} disagrees with the other {m - 1}"
        if suspect is not None
        else "the corrupt share cannot be singled out (need t + 2 shares and one culprit)"
    )
    raise InconsistentSharesError(
        f"{m} shares do not lie on one polynomial of degree {threshold - 1} "
        f"at {bad.size} of {syndrome.size} coordinates: {culprit}",
        suspect_x=suspect,
        bad_coordinates=int(bad.size),
    )
