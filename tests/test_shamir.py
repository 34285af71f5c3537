"""Vectorised Shamir sharing: reconstruction, secrecy below t, consistency, a foreign decoder."""

from itertools import combinations

import numpy as np
import pytest
import shamirs
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import shamir
from protocol.field import P, random_elements


@st.composite
def sharings(draw: st.DrawFn, max_n: int = 7, min_t: int = 1) -> tuple[list[int], int, int]:
    """Distinct x-coordinates (small, and close to p to stress Horner's bounds), t, d."""
    n = draw(st.integers(min_t, max_n))
    xs = draw(
        st.lists(
            st.one_of(st.integers(1, 50), st.integers(P - 50, P - 1)),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    return xs, draw(st.integers(min_t, n)), draw(st.integers(1, 40))


@settings(max_examples=60, deadline=None)
@given(sharings())
def test_every_t_subset_reconstructs_the_secret(case: tuple[list[int], int, int]) -> None:
    xs, t, d = case
    secret = random_elements(d)
    secret[0], secret[-1] = 0, P - 1  # extremes of the field
    shares = shamir.split(secret, xs, t)
    assert shares.shape == (len(xs), d) and shares.min() >= 0 and shares.max() < P
    for subset in combinations(range(len(xs)), t):
        got = shamir.reconstruct([xs[i] for i in subset], [shares[i] for i in subset])
        np.testing.assert_array_equal(got, secret)


def test_splitting_spans_blocks_and_still_reconstructs() -> None:
    d = 2 * shamir.BLOCK + 17
    secret = random_elements(d)
    shares = shamir.split(secret, [3, 5, 8, 13], 3)
    np.testing.assert_array_equal(shamir.reconstruct([5, 8, 13], list(shares[1:])), secret)


@settings(max_examples=30, deadline=None)
@given(sharings(min_t=2), st.data())
def test_t_minus_1_shares_do_not_reconstruct(
    case: tuple[list[int], int, int], data: st.DataObject
) -> None:
    xs, t, _ = case
    secret = random_elements(2000)
    shares = shamir.split(secret, xs, t)
    subset = data.draw(st.permutations(range(len(xs))))[: t - 1]
    guess = shamir.reconstruct([xs[i] for i in subset], [shares[i] for i in subset])
    # A degree-(t−2) fit through t−1 shares hits the secret only by chance (1/p each).
    assert np.count_nonzero(guess == secret) <= 2


def test_t_minus_1_shares_are_uniform_whatever_the_secret() -> None:
    # t = 3: the two shares at x = 1, 2 of the all-zero and of the all-(p−1) secret are
    # both uniform on GF(p)^2 (a chi-square over a 16×16 grid of their joint bins).
    xs, t, d = [1, 2, 3, 4], 3, 100_000
    for value in (0, P - 1):
        shares = shamir.split(np.full(d, value, dtype=np.int64), xs, t)
        bins = shares[:2] * 16 // P
        counts = np.bincount(bins[0] * 16 + bins[1], minlength=256)
        expected = d / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 400  # 255 degrees of freedom: mean 255, sd ~23


def test_shares_are_fresh_each_time() -> None:
    secret = random_elements(100)
    a, b = shamir.split(secret, [1, 2, 3], 2), shamir.split(secret, [1, 2, 3], 2)
    assert np.count_nonzero(a == b) <= 2


def test_threshold_one_hands_everyone_the_secret() -> None:
    secret = random_elements(10)
    shares = shamir.split(secret, [4, 9], 1)
    np.testing.assert_array_equal(shares, np.stack([secret, secret]))


@settings(max_examples=40, deadline=None)
@given(sharings(max_n=6), st.data())
def test_shamirs_package_reconstructs_our_shares(
    case: tuple[list[int], int, int], data: st.DataObject
) -> None:
    """Independent check: PyPI `shamirs` (pure Python, its own Lagrange) reads our shares."""
    xs, t, d = case
    secret = random_elements(d)
    shares = shamir.split(secret, xs, t)
    subset = data.draw(st.permutations(range(len(xs))))[:t]
    for c in data.draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=3, unique=True)):
        points = [shamirs.share(xs[i], int(shares[i, c]), P) for i in subset]
        assert shamirs.interpolate(points, threshold=t) == int(secret[c])


def test_we_reconstruct_shares_made_by_the_shamirs_package() -> None:
    n, t = 7, 4
    values = [0, 1, 123456789, P - 1]
    theirs = [shamirs.shares(v, n, modulus=P, threshold=t) for v in values]
    for subset in combinations(range(n), t):
        xs = [theirs[0][i].index for i in subset]
        rows = [np.array([theirs[k][i].value for k in range(len(values))]) for i in subset]
        assert shamir.reconstruct(xs, rows).tolist() == values


def test_consistent_shares_pass_the_check() -> None:
    xs = [1, 2, 3, 4, 5, 6]
    shares = shamir.split(random_elements(500), xs, 3)
    for m in range(3, 7):
        shamir.check_consistency(xs[:m], list(shares[:m]), 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5), st.integers(2, 4), st.data())
def test_one_corrupt_share_is_detected_and_named(t: int, extra: int, data: st.DataObject) -> None:
    m = t + extra
    xs = data.draw(st.lists(st.integers(1, 10_000), min_size=m, max_size=m, unique=True))
    shares = shamir.split(random_elements(300), xs, t)
    bad = data.draw(st.integers(0, len(xs) - 1))
    column = data.draw(st.integers(0, 299))
    shares[bad, column] = (shares[bad, column] + data.draw(st.integers(1, P - 1))) % P
    with pytest.raises(shamir.InconsistentSharesError, match=f"x={xs[bad]}") as err:
        shamir.check_consistency(xs, list(shares), t)
    assert err.value.suspect_x == xs[bad]
    assert err.value.bad_coordinates == 1


def test_with_t_plus_1_shares_corruption_is_detected_but_not_attributed() -> None:
    xs = [1, 2, 3, 4]
    shares = shamir.split(random_elements(50), xs, 3)
    shares[0, :] = (shares[0, :] + 1) % P
    with pytest.raises(shamir.InconsistentSharesError, match="cannot be singled out") as err:
        shamir.check_consistency(xs, list(shares), 3)
    assert err.value.suspect_x is None and err.value.bad_coordinates == 50


def test_with_exactly_t_shares_there_is_nothing_to_check() -> None:
    shares = random_elements((3, 20))  # any t points fit some degree-(t−1) polynomial
    shamir.check_consistency([1, 2, 3], list(shares), 3)


@pytest.mark.parametrize(
    ("xs", "t", "message"),
    [
        ([1, 1, 2], 2, "distinct"),
        ([0, 1, 2], 2, r"\[1, 2\^31 − 1\)"),
        ([1, P, 2], 2, r"\[1, 2\^31 − 1\)"),
        ([1, 2, 3], 0, r"threshold must be in \[1, 3\]"),
        ([1, 2, 3], 4, r"threshold must be in \[1, 3\]"),
    ],
)
def test_bad_points_or_threshold_are_refused(xs: list[int], t: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shamir.split(random_elements(4), xs, t)


def test_secret_outside_the_field_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        shamir.split(np.array([P], dtype=np.int64), [1, 2], 2)
    with pytest.raises(ValueError, match="1-D"):
        shamir.split(np.zeros((2, 2), dtype=np.int64), [1, 2], 2)
