"""Retry amplification: attempts per request, layers, budgets, throttling, errors."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from retrystorm import (
    InvalidParameterError,
    adaptive_throttle_probability,
    attempts_per_request,
    expected_layered_attempts,
    layered_amplification,
    retry_budget_amplification,
)
from strategies import failure_probabilities, retry_counts


def mp_attempts(p: float, retries: int) -> float:
    """sum_{k=0}^{R} p^k in 50-digit arithmetic (the definition, not the closed"
    " form)."""
    with mp.workdps(50):
        return float(mp.fsum(mp.mpf(p) ** k for k in range(retries + 1)))


# --- attempts per request ------------------------------------------------------


def test_attempts_per_request_known_values() -> None:
    """1 + 1/2 + 1/4 + 1/8 = 1.875; p = 0 gives 1; p = 1 gives R + 1."""
    # exact binary fractions: the sums are exact in double precision
    assert attempts_per_request(0.5, 3) == 1.875
    assert attempts_per_request(0.0, 7) == 1.0
    assert attempts_per_request(1.0, 7) == 8.0
    assert attempts_per_request(0.3, 0) == 1.0


@pytest.mark.parametrize("gap", [1e-3, 1e-8, 1e-12, 2**-52])
@pytest.mark.parametrize("retries", [1, 3, 10, 1000])
def test_attempts_per_request_is_exact_near_certain_failure(
    gap: float, retries: int
) -> None:
    """Near p = 1 the closed form keeps full precision (no 0/0 cancellation)."""
    p = 1.0 - gap
    # reference: the finite sum in 50-digit mpmath; tolerance a few ulps
    assert attempts_per_request(p, retries) == pytest.approx(
        mp_attempts(p, retries), rel=1e-14
    )


@given(p=failure_probabilities, retries=retry_counts)
def test_attempts_per_request_is_the_finite_geometric_sum(
    p: float, retries: int
) -> None:
    """(1 - p^(R+1)) / (1 - p) equals sum_{k<=R} p^k to 1e-14"
    " (proofs/amplification.py)."""
    assert attempts_per_request(p, retries) == pytest.approx(
        mp_attempts(p, retries), rel=1e-14
    )


@given(p=failure_probabilities, q=failure_probabilities, retries=retry_counts)
def test_attempts_per_request_increases_in_p_and_r(
    p: float, q: float, retries: int
) -> None:
    """Nondecreasing in the failure probability and in the retry limit; in [1, R +"
    " 1]."""
    low, high = sorted((p, q))
    assert attempts_per_request(low, retries) <= attempts_per_request(high, retries)
    assert attempts_per_request(high, retries) <= attempts_per_request(
        high, retries + 1
    )
    assert 1.0 <= attempts_per_request(high, retries) <= retries + 1


def test_attempts_per_request_broadcasts() -> None:
    """Arrays broadcast like numpy; scalars give a float, arrays an array."""
    probabilities = np.array([[0.0], [0.5], [1.0]])
    retries = np.array([0, 1, 3])
    result = attempts_per_request(probabilities, retries)
    assert isinstance(result, np.ndarray)
    assert result.shape == (3, 3)
    expected = [[1, 1, 1], [1, 1.5, 1.875], [1, 2, 4]]
    np.testing.assert_array_equal(result, expected)  # exact binary fractions
    assert isinstance(attempts_per_request(0.25, 2), float)


def test_attempts_per_request_emits_no_numpy_warning() -> None:
    """The endpoints p = 0 and p = 1 go through without a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = attempts_per_request([0.0, 1.0], [4, 4])
    np.testing.assert_array_equal(values, [1.0, 5.0])


# --- layers ------------------------------------------------------------------------


def test_layered_amplification_known_values() -> None:
    """(R + 1)^L: three layers of 3 retries give 64; no layer gives 1."""
    assert layered_amplification([3, 3, 3]) == 64
    assert layered_amplification([2, 0, 1]) == 6
    assert layered_amplification([]) == 1


def test_layered_amplification_is_exact_for_deep_stacks() -> None:
    """The product is a Python int: 30 layers of 9 retries give exactly 10^30."""
    assert layered_amplification([9] * 30) == 10**30


@given(layers=st.lists(retry_counts, max_size=8))
def test_worst_case_is_expected_attempts_when_everything_fails(
    layers: list[int],
) -> None:
    """With every p_i = 1 the mean equals the worst case prod (R_i + 1)."""
    everything_fails = [1.0] * len(layers)
    expected = expected_layered_attempts(everything_fails, layers)
    assert expected == pytest.approx(layered_amplification(layers), rel=1e-15)


@given(
    layers=st.lists(
        st.tuples(failure_probabilities, retry_counts), min_size=1, max_size=5
    )
)
def test_expected_layered_attempts_is_the_product_of_layers(
    layers: list[tuple[float, int]],
) -> None:
    """Wald's identity layer by layer: the product of the per-layer means."""
    probabilities = [p for p, _ in layers]
    retries = [r for _, r in layers]
    product = math.prod(mp_attempts(p, r) for p, r in layers)
    assert expected_layered_attempts(probabilities, retries) == pytest.approx(
        product, rel=1e-13
    )


def test_expected_layered_attempts_matches_a_seeded_simulation() -> None:
    """Two layers with independent failures: simulation mean within 4 standard"
    " errors."""
    rng = np.random.default_rng(20250916)
    top_own, bottom_fail, retries = 0.3, 0.6, (2, 1)
    runs = 20_000

    def call_below() -> tuple[int, bool]:
        for attempt in range(retries[1] + 1):
            if rng.random() >= bottom_fail:
                return attempt + 1, True
        return retries[1] + 1, False

    totals = np.empty(runs)
    for run in range(runs):
        total = 0
        for _ in range(retries[0] + 1):
            count, ok = call_below()
            total += count
            if ok and rng.random() >= top_own:
                break
        totals[run] = total
    # a top try fails if its call below fails or, independently, on its own
    top_fail = 1 - (1 - top_own) * (1 - bottom_fail ** (retries[1] + 1))
    expected = expected_layered_attempts([top_fail, bottom_fail], list(retries))
    standard_error = totals.std(ddof=1) / math.sqrt(runs)
    assert abs(totals.mean() - expected) < 4 * standard_error


# --- budgets and throttling -----------------------------------------------------------


def test_retry_budget_amplification_known_values() -> None:
    """A 10 % budget bounds attempts at 1.1 per request [SREBook2016]."""
    assert retry_budget_amplification(0.1) == pytest.approx(1.1, rel=1e-15)
    assert retry_budget_amplification(0.0) == 1.0
    assert retry_budget_amplification(math.inf) == math.inf
    assert retry_budget_amplification(math.inf, max_retries=3) == 4.0
    assert retry_budget_amplification(0.5, max_retries=3) == 1.5


@given(
    budget=st.floats(min_value=0.0, max_value=10.0),
    retries=retry_counts,
    p=failure_probabilities,
)
def test_budget_bound_covers_the_retry_limit(
    budget: float, retries: int, p: float
) -> None:
    """min(1 + b, R + 1) never undercuts what R retries alone can produce when b >="
    " R."""
    bound = retry_budget_amplification(budget, max_retries=retries)
    assert bound <= retries + 1
    if budget >= retries:
        assert attempts_per_request(p, retries) <= bound


def test_adaptive_throttle_known_values() -> None:
    """max(0, (requests - k accepts) / (requests + 1)) [SREBook2016, ch. 21]."""
    assert adaptive_throttle_probability(1000, 400) == pytest.approx(
        200 / 1001, rel=1e-15
    )
    assert adaptive_throttle_probability(100, 90) == 0.0
    assert adaptive_throttle_probability(0, 0) == 0.0
    assert adaptive_throttle_probability(1000, 0, k=2.0) == pytest.approx(1000 / 1001)


@given(
    requests=st.floats(min_value=0.0, max_value=1e7),
    share=st.floats(min_value=0.0, max_value=1.0),
    k=st.floats(min_value=1.0, max_value=5.0),
)
def test_throttle_keeps_forwarded_requests_within_k_accepts(
    requests: float, share: float, k: float
) -> None:
    """P in [0, 1); while throttling, requests (1 - P) < 1 + k accepts."""
    accepts = share * requests
    probability = adaptive_throttle_probability(requests, accepts, k)
    assert 0.0 <= probability < 1.0
    if probability > 0.0:
        assert requests * (1.0 - probability) <= (1.0 + k * accepts) * (1 + 1e-12)


# --- validation: one test per rule ----------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, [0.5, 2.0]])
def test_failure_probability_must_lie_in_the_unit_interval(bad: object) -> None:
    """Probabilities outside [0, 1] (or NaN) are refused."""
    with pytest.raises(
        InvalidParameterError, match=r"`failure_probability` must lie in \[0, 1\]"
    ):
        attempts_per_request(bad, 3)


def test_failure_probability_must_be_numeric() -> None:
    """A string is not a probability."""
    with pytest.raises(
        InvalidParameterError, match="`failure_probability` must be a number"
    ):
        attempts_per_request("half", 3)


@pytest.mark.parametrize("bad", [2.5, math.inf, [1, 2.5]])
def test_max_retries_must_be_whole(bad: object) -> None:
    """Retry counts are whole numbers."""
    with pytest.raises(
        InvalidParameterError, match="`max_retries` must contain only integers"
    ):
        attempts_per_request(0.5, bad)


def test_max_retries_must_be_non_negative() -> None:
    """A negative retry count is refused."""
    with pytest.raises(
        InvalidParameterError, match="`max_retries` must be non-negative"
    ):
        attempts_per_request(0.5, -1)


def test_max_retries_must_not_be_boolean() -> None:
    """True is not a retry count."""
    with pytest.raises(InvalidParameterError, match="`max_retries` must be an integer"):
        attempts_per_request(0.5, True)


def test_shapes_must_broadcast() -> None:
    """Arrays of incompatible shapes are refused with the shapes named."""
    with pytest.raises(InvalidParameterError, match="`max_retries` must broadcast"):
        attempts_per_request([0.1, 0.2], [1, 2, 3])


def test_layers_must_be_a_sequence() -> None:
    """A string or a number is not a list of layers."""
    with pytest.raises(
        InvalidParameterError, match="`max_retries_per_layer` must be a sequence"
    ):
        layered_amplification("333")


@pytest.mark.parametrize("bad", [[3, -1], [3, 1.5]])
def test_layer_retries_must_be_non_negative_integers(bad: list[float]) -> None:
    """Each layer's retry count is a non-negative integer, named by its index."""
    with pytest.raises(
        InvalidParameterError, match=r"`max_retries_per_layer\[1\]` must be"
    ):
        layered_amplification(bad)


def test_layer_probabilities_must_match_the_layers() -> None:
    """One failure probability per layer."""
    with pytest.raises(
        InvalidParameterError, match="`failure_probabilities` must have one entry"
    ):
        expected_layered_attempts([0.5], [1, 2])


def test_layer_probabilities_must_be_a_sequence() -> None:
    """A bare number is not a list of probabilities."""
    with pytest.raises(
        InvalidParameterError, match="`failure_probabilities` must be a sequence"
    ):
        expected_layered_attempts(0.5, [1])  # type: ignore[arg-type]


def test_layer_probabilities_must_lie_in_the_unit_interval() -> None:
    """Per-layer probabilities are checked like the scalar one."""
    with pytest.raises(
        InvalidParameterError, match=r"`failure_probabilities` must lie in"
    ):
        expected_layered_attempts([0.5, 1.2], [1, 2])


@pytest.mark.parametrize("bad", [-0.1, math.nan])
def test_budget_must_be_non_negative(bad: float) -> None:
    """A retry budget is a non-negative share (inf allowed)."""
    with pytest.raises(InvalidParameterError, match="`budget` must be"):
        retry_budget_amplification(bad)


def test_budget_retry_limit_must_be_a_non_negative_integer() -> None:
    """The optional retry limit is validated too."""
    with pytest.raises(
        InvalidParameterError, match="`max_retries` must be an integer >= 0"
    ):
        retry_budget_amplification(0.1, max_retries=-2)


@pytest.mark.parametrize(
    ("name", "args"), [("requests", (-1, 0)), ("accepts", (10, -1))]
)
def test_throttle_counts_must_be_non_negative(
    name: str, args: tuple[float, float]
) -> None:
    """Request and accept counts are non-negative."""
    with pytest.raises(InvalidParameterError, match=f"`{name}` must be non-negative"):
        adaptive_throttle_probability(*args)


def test_throttle_counts_must_be_finite() -> None:
    """An infinite count is refused."""
    with pytest.raises(InvalidParameterError, match="`requests` must be finite"):
        adaptive_throttle_probability(math.inf, 1)


def test_accepts_cannot_exceed_requests() -> None:
    """A backend cannot accept more requests than were sent."""
    with pytest.raises(
        InvalidParameterError, match="`accepts` must not exceed requests"
    ):
        adaptive_throttle_probability(10, 11)


@pytest.mark.parametrize("bad", [0.0, -2.0, math.inf])
def test_throttle_multiplier_must_be_positive_and_finite(bad: float) -> None:
    """k is a positive finite multiplier."""
    with pytest.raises(InvalidParameterError, match="`k` must be"):
        adaptive_throttle_probability(10, 5, k=bad)
