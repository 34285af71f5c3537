"""GF(2^31 − 1) arithmetic, the CSPRNG sampler and the fixed-point code."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.field import (
    HALF,
    FixedPoint,
    P,
    add_mod,
    fold,
    inverse,
    random_elements,
    redraw_out_of_field,
    reduce,
)

FP = FixedPoint(clip=4.0, frac_bits=20)
residues = st.integers(min_value=0, max_value=P - 1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=64))
def test_reduce_equals_python_modulo_for_any_int64(values: list[int]) -> None:
    got = reduce(np.array(values, dtype=np.int64))
    assert got.tolist() == [v % P for v in values]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=64))
def test_fold_leaves_room_for_one_more_multiply_add(values: list[int]) -> None:
    folded = fold(np.array(values, dtype=np.int64))
    assert folded.max() <= P + 2
    assert ((P + 2) * (P - 1) + (P - 1)) < 2**63
    assert [int(f) % P for f in folded] == [v % P for v in values]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(residues, residues), min_size=1, max_size=32), residues)
def test_vector_ops_match_python_ints(pairs: list[tuple[int, int]], c: int) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    assert add_mod(a, b).tolist() == [(x + y) % P for x, y in pairs]
    assert reduce(a * c).tolist() == [x * c % P for x, _ in pairs]


def test_inverse_and_zero_has_none() -> None:
    for a in (1, 2, 12345, P - 1):
        assert a * inverse(a) % P == 1
    with pytest.raises(ValueError, match="no inverse"):
        inverse(P)


def test_random_elements_cover_the_field_uniformly() -> None:
    values = random_elements((4, 50_000))
    assert values.dtype == np.int64 and values.shape == (4, 50_000)
    assert values.min() >= 0 and values.max() < P
    # 64 equal bins over [0, p): a biased or truncated sampler shows up at once.
    counts = np.bincount((values.ravel() * 64 // P).astype(np.int64), minlength=64)
    expected = values.size / 64
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 150  # 63 degrees of freedom: mean 63, sd ~11
    assert not np.array_equal(random_elements(1000), random_elements(1000))


def test_rejection_sampling_replaces_exactly_the_value_p() -> None:
    raw = np.array([P, 0, P, 5, P - 1, P], dtype=np.uint32)
    out = redraw_out_of_field(raw)
    assert out.max() < P
    assert out[[1, 3, 4]].tolist() == [0, 5, P - 1]


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-4.0, 4.0)))
def test_quantise_round_trip_is_within_half_a_step(x: np.ndarray) -> None:
    q = FP.quantize(x)
    assert q.dtype == np.int64 and q.min() >= 0 and q.max() < P
    assert np.abs(FP.dequantize(q) - x).max() <= 2.0 ** -(FP.frac_bits + 1)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: hnp.arrays(np.float64, (n, 8), elements=st.floats(-4.0, 4.0))
    )
)
def test_field_sum_of_n_values_is_within_max_sum_error(x: np.ndarray) -> None:
    n = x.shape[0]
    fp = FixedPoint.for_parties(n, clip=4.0)
    total = np.zeros(x.shape[1], dtype=np.int64)
    for row in x:
        total = add_mod(total, fp.quantize(row))
    exact = np.array([sum(map(float, col)) for col in x.T])
    assert np.abs(fp.dequantize(total) - exact).max() <= fp.max_sum_error(n) + 1e-12


def test_negative_values_wrap_to_p_minus_magnitude_and_back() -> None:
    step = 2.0**-FP.frac_bits
    q = FP.quantize(np.array([-step, -3 * step, 0.0, step]))
    assert q.tolist() == [P - 1, P - 3, 0, 1]
    assert FP.dequantize(np.array([HALF, HALF + 1])).tolist() == [HALF * step, -HALF * step]


def test_rounding_is_half_to_even() -> None:
    half_step = 2.0 ** -(FP.frac_bits + 1)
    assert FP.quantize(np.array([half_step, 3 * half_step])).tolist() == [0, 2]


def test_values_beyond_clip_are_clipped_not_wrapped() -> None:
    q = FP.quantize(np.array([1e9, -1e9, 4.0, -4.0]))
    assert FP.dequantize(q).tolist() == [4.0, -4.0, 4.0, -4.0]


def test_for_parties_picks_the_finest_code_that_cannot_wrap() -> None:
    for n in (1, 3, 10, 30, 1000):
        fp = FixedPoint.for_parties(n, clip=8.0)
        fp.check_parties(n)
        with pytest.raises(ValueError, match="wrap"):
            FixedPoint(clip=8.0, frac_bits=fp.frac_bits + 1).check_parties(n)


def test_capacity_bound_is_tight_sum_wraps_one_party_beyond_it() -> None:
    fp = FixedPoint(clip=1.0, frac_bits=26)
    n = fp.max_parties
    top = fp.quantize(np.array([1.0]))
    total = np.zeros(1, dtype=np.int64)
    for _ in range(n):
        total = add_mod(total, top)
    assert fp.dequantize(total)[0] == pytest.approx(n * fp.max_level / fp.scale)
    assert fp.dequantize(add_mod(total, top))[0] < 0  # what check_parties protects against
    with pytest.raises(ValueError, match=f"at most {n} parties fit"):
        fp.max_sum_error(n + 1)


@pytest.mark.parametrize(
    ("clip", "frac_bits", "message"),
    [
        (0.0, 10, "clip must be a positive finite number"),
        (float("nan"), 10, "clip must be a positive finite number"),
        (1.0, 31, r"frac_bits must be in \[0, 30\]"),
        (1e-12, 10, "rounds every value to 0"),
        (2.0**30, 1, r"exceeds \(p − 1\)/2"),
    ],
)
def test_invalid_codes_are_refused_with_a_fix(clip: float, frac_bits: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FixedPoint(clip=clip, frac_bits=frac_bits)


def test_for_parties_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="positive int"):
        FixedPoint.for_parties(0)
    with pytest.raises(ValueError, match="lower clip"):
        FixedPoint.for_parties(10, clip=2.0**29)


def test_non_finite_inputs_and_foreign_residues_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        FP.quantize(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="outside"):
        FP.dequantize(np.array([P]))
    with pytest.raises(ValueError, match="integers"):
        FP.dequantize(np.array([0.5]))
