"""Published values for the steady-state models, each with its source and tolerance.

The rows of ``data/published_steady_state.csv`` are copied with their
provenance: where each value was printed, its printed tolerance (half a unit
in the last printed digit, or the source's own test tolerance, or a
confidence margin for simulated values), an independent 40-digit
recomputation of the exact formula, and whether the printed value agrees
with it. Rows marked ``agrees = no`` are documented disagreements (a
widely copied ITU-style Erlang B table, a 2 % Lucent table with typos, a
service-level table of unknown provenance, a slide typo): for them the test
asserts that we reproduce the exact value and that the printed one really
lies outside its tolerance.

Units: several sources state rates per minute or per hour. The library works
in seconds, so each rate is converted to per second and each time to seconds
before the call, and results are converted back to the printed unit.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from retrystorm import (
    ErlangA,
    MMc,
    MMcD,
    MMcK,
    erlang_b,
    erlang_c,
    offered_load_for_blocking,
    servers_for_abandonment,
    servers_for_blocking,
)

DATA = Path(__file__).resolve().parent / "data" / "published_steady_state.csv"
ROWS = list(csv.DictReader(DATA.open(encoding="utf-8")))
MINUTE = 60.0
HOUR = 3600.0
Params = dict[str, object]


def number(value: object) -> float:
    """Parse a number written as a float, an int or a fraction such as "10/3"."""
    return float(Fraction(str(value)))


# ---------------------------------------------------------------------------
# Erlang A rows: "demo" rows give c, rho, mu and a mean patience per minute;
# pyworkforce rows give lambda, mu, theta per minute.
# ---------------------------------------------------------------------------


def erlang_a_model(p: Params) -> ErlangA:
    """The Erlang-A model of a row, rates converted from per minute to per second."""
    c = int(number(p["c"]))
    mu = number(p.get("mu_per_min", p.get("mu"))) / MINUTE
    if "rho" in p:
        lam = number(p["rho"]) * c * mu
        theta = 1.0 / (number(p["mean_patience_min"]) * MINUTE)
    elif "lambda_per_min" in p:
        lam = number(p["lambda_per_min"]) / MINUTE
        theta = 1.0 / (5.0 * MINUTE)  # "Exp mean 5 min"
    else:
        lam = number(p["lambda"]) / MINUTE
        theta = number(p["theta"]) / MINUTE
    return ErlangA(arrival_rate=lam, service_rate=mu, servers=c, abandonment_rate=theta)


def erlang_a_staffing(p: Params) -> float:
    """Fewest servers keeping P(abandon) at or below the target."""
    mu = number(p["mu_per_min"]) / MINUTE
    return servers_for_abandonment(
        arrival_rate=number(p["A"]) * mu,
        service_rate=mu,
        abandonment_rate=1.0 / (number(p["mean_patience_min"]) * MINUTE),
        max_abandonment=number(p["max_Pab"]),
    )


# ---------------------------------------------------------------------------
# Erlang C and M/M/c rows.
# ---------------------------------------------------------------------------


def mmc_model(p: Params) -> MMc:
    """The M/M/c of a row, in seconds."""
    c = int(number(p.get("c", 1)))
    if "rho" in p:
        mu = number(p["mu_per_min"]) / MINUTE
        return MMc(arrival_rate=number(p["rho"]) * c * mu, service_rate=mu, servers=c)
    if "lambda_per_s" in p:
        mu = 1.0 / number(p["aht_s"])
        return MMc(arrival_rate=number(p["lambda_per_s"]), service_rate=mu, servers=c)
    if "aht_s" in p:
        mu = 1.0 / number(p["aht_s"])
        return MMc(arrival_rate=number(p["A"]) * mu, service_rate=mu, servers=c)
    if "aht_min" in p:
        mu = 1.0 / (number(p["aht_min"]) * MINUTE)
        return MMc(arrival_rate=number(p["A"]) * mu, service_rate=mu, servers=c)
    if "A" in p:
        return MMc(arrival_rate=number(p["A"]), service_rate=1.0, servers=c)
    return MMc(
        arrival_rate=number(p["lambda"]), service_rate=number(p["mu"]), servers=c
    )


def erlang_c_value(p: Params) -> float:
    """C(c, A) from whichever of A, lambda/aht or lambda/mu the row gives."""
    return mmc_model(p).wait_probability


def service_level(p: Params) -> float:
    """P(W <= t) with t in the row's unit."""
    t = number(p["t_s"]) if "t_s" in p else number(p["t_min"]) * MINUTE
    return 1.0 - mmc_model(p).wait_tail(t)


def mmc_in_hours(p: Params) -> float:
    """Mean response time of an M/M/c whose rates are per hour, in hours."""
    q = MMc(
        arrival_rate=number(p["lambda"]) / HOUR,
        service_rate=number(p["mu"]) / HOUR,
        servers=int(number(p["c"])),
    )
    return q.mean_response_time / HOUR


# ---------------------------------------------------------------------------
# M/M/c/K and M/M/c+D rows.
# ---------------------------------------------------------------------------


def mmck_model(p: Params) -> MMcK:
    """The M/M/c/K of a row (rates in the row's unit; only ratios are printed)."""
    return MMcK(
        arrival_rate=number(p["lambda"]),
        service_rate=number(p["mu"]),
        servers=int(number(p.get("c", 1))),
        capacity=int(number(p["K"])),
    )


def mmcd_model(p: Params) -> MMcD:
    """The M/M/c+D of a row, converted from per minute to per second."""
    return MMcD(
        arrival_rate=number(p["lambda_per_min"]) / MINUTE,
        service_rate=number(p["mu_per_min"]) / MINUTE,
        servers=int(number(p["c"])),
        timeout=number(p["D_min"]) * MINUTE,
    )


COMPUTE: dict[tuple[str, str], Callable[[Params], float]] = {
    ("ErlangA", "P(abandon)"): lambda p: erlang_a_model(p).abandonment_probability,
    ("ErlangA", "P(abandon) (simulated)"): lambda p: (
        erlang_a_model(p).abandonment_probability
    ),
    ("ErlangA", "utilisation per server"): lambda p: erlang_a_model(p).occupancy,
    ("ErlangA", "occupancy"): lambda p: erlang_a_model(p).occupancy,
    ("ErlangA", "occupancy lambda(1-Pab)/(c mu)"): lambda p: (
        erlang_a_model(p).occupancy
    ),
    ("ErlangA", "P(wait>0)"): lambda p: erlang_a_model(p).wait_probability,
    ("ErlangA", "E[Wq] all arrivals (min)"): lambda p: (
        erlang_a_model(p).mean_wait / MINUTE
    ),
    ("ErlangA", "E[Wq] all arrivals (ASA, minutes)"): (
        lambda p: erlang_a_model(p).mean_wait / MINUTE
    ),
    ("ErlangA", "SL = P(served and Wq<=t)"): (
        lambda p: erlang_a_model(p).served_within(number(p["t"]) * MINUTE)
    ),
    ("ErlangA", "min servers c with P(abandon)<=target"): erlang_a_staffing,
    ("ErlangB", "min servers c with B(c,A)<=target"): (
        lambda p: servers_for_blocking(number(p["A"]), number(p["max_blocking"]))
    ),
    ("ErlangB", "max offered load A with B(c,A)=target (inverse)"): (
        lambda p: offered_load_for_blocking(int(number(p["c"])), number(p["B"]))
    ),
    ("ErlangB", "blocking probability B(c,A)"): (
        lambda p: erlang_b(int(number(p["c"])), number(p["A"]))
    ),
    ("ErlangC", "P(wait>0)"): erlang_c_value,
    ("ErlangC", "P(wait>0) = C(c,A)"): lambda p: erlang_c(
        int(number(p["c"])), number(p["A"])
    ),
    ("ErlangC", "service level P(Wq<=t)"): service_level,
    ("ErlangC", "P(Wq<=t)"): service_level,
    ("ErlangC", "occupancy A/c"): lambda p: mmc_model(p).utilization,
    ("ErlangC", "E[Wq] (minutes)"): lambda p: mmc_model(p).mean_wait / MINUTE,
    ("ErlangC", "E[Wq] (seconds)"): lambda p: mmc_model(p).mean_wait,
    ("M/M/c", "p0"): lambda p: mmc_model(p).state_probability(0),
    ("M/M/c", "W (response time)"): lambda p: mmc_model(p).mean_response_time,
    ("M/M/c", "Lq"): lambda p: mmc_model(p).mean_queue_length,
    ("M/M/c", "W (hours)"): mmc_in_hours,
    ("M/M/c", "W (minutes)"): lambda p: mmc_model(p).mean_response_time,
    ("M/M/1", "E[Wq]"): lambda p: mmc_model(p).mean_wait,
    ("M/M/c/K", "p0"): lambda p: mmck_model(p).state_probability(0),
    ("M/M/c/K", "W (response time of admitted)"): lambda p: (
        mmck_model(p).mean_response_time
    ),
    ("M/M/c/K", "pK (blocking probability)"): lambda p: (
        mmck_model(p).blocking_probability
    ),
    ("M/M/c/K", "L (mean number in system)"): lambda p: mmck_model(p).mean_in_system,
    ("M/M/1/K", "p0"): lambda p: mmck_model(p).state_probability(0),
    ("M/M/1/K", "pK (blocking probability)"): lambda p: (
        mmck_model(p).blocking_probability
    ),
    ("M/M/c+D", "P(abandon)"): lambda p: mmcd_model(p).abandonment_probability,
    ("M/M/c+D", "E[Wq] all arrivals (min)"): lambda p: mmcd_model(p).mean_wait / MINUTE,
}


def ours(row: dict[str, str]) -> float:
    """Our value for a row."""
    params = json.loads(row["params_json"])
    return float(COMPUTE[row["model"], row["quantity"]](params))


def printed_tolerance(row: dict[str, str], reference: float) -> float:
    """The row's tolerance as an absolute number ("0.10 (relative)" is relative)."""
    text = row["tolerance"]
    if text.endswith("(relative)"):
        return float(text.split()[0]) * abs(reference)
    return float(text)


def recomputed_tolerance(text: str) -> float:
    """One unit in the last digit of the recomputed value, plus 1e-12 relative."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return unit + 1e-12 * abs(float(text))


def row_id(row: dict[str, str]) -> str:
    """Test id: the row's stable id."""
    return row["id"]


AGREEING = [row for row in ROWS if row["agrees"] == "yes"]
DISAGREEING = [row for row in ROWS if row["agrees"] == "no"]


def test_every_row_has_a_model_and_a_source() -> None:
    """Each copied row is computed by some model and names where it was printed."""
    for row in ROWS:
        assert (row["model"], row["quantity"]) in COMPUTE, row["id"]
        assert row["source"], row["id"]


@pytest.mark.parametrize("row", AGREEING, ids=row_id)
def test_published_value_is_reproduced_within_its_printed_tolerance(
    row: dict[str, str],
) -> None:
    """|ours - published| <= the tolerance of the printed value."""
    published = number(row["published_value"])
    assert abs(ours(row) - published) <= printed_tolerance(row, published)


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_independent_recomputation_is_matched_to_its_printed_digits(
    row: dict[str, str],
) -> None:
    """|ours - 40-digit recomputation| <= one unit in its last printed digit."""
    recomputed = row["recomputed_value"]
    assert abs(ours(row) - float(recomputed)) <= recomputed_tolerance(recomputed)


@pytest.mark.parametrize("row", DISAGREEING, ids=row_id)
def test_documented_disagreement_is_real(row: dict[str, str]) -> None:
    """The printed value lies outside its tolerance of the exact value we compute."""
    published = number(row["published_value"])
    assert abs(ours(row) - published) > printed_tolerance(row, published)
