"""The Markov chain against peers: retrial closed forms, Ciw, fluid, simulation."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import ciw
import numpy as np
import pytest
from retrystorm import (
    ChainState,
    ErlangA,
    RetryChain,
    parse_scenario,
    simulate_events,
    simulate_fluid,
)
from scipy import stats

DATA = Path(__file__).parent / "data"


def retrial_rows() -> list[dict[str, str]]:
    """Rows of the published M/M/1 retrial values (copied with provenance)."""
    with (DATA / "chain_oracles.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def retrial_chain(arrival: float, service: float, retry: float) -> RetryChain:
    """Classic M/M/1 retrial queue: no waiting room, persistent orbit."""
    return RetryChain(
        arrival_rate=arrival,
        service_rate=service,
        servers=1,
        queue_limit=0,
        retry_rate=retry,
        retry_probability=1.0,
        orbit_limit=400,
    )


def student_half_width(samples: list[float], level: float = 0.99) -> float:
    """Half-width of the t confidence interval of the mean ([LawKelton2000] 9.4.1)."""
    count = len(samples)
    spread = float(np.std(samples, ddof=1)) / math.sqrt(count)
    return float(stats.t.ppf(0.5 + level / 2.0, count - 1)) * spread


# -- retrial queue: published values and the closed form --------------------------


@pytest.mark.parametrize("row", retrial_rows(), ids=lambda row: row["id"])
def test_mm1_retrial_queue_matches_published_values(row: dict[str, str]) -> None:
    """Published M/M/1 retrial values (RT-02: mean orbit; RT-04: P(server busy))."""
    params = json.loads(row["params_json"])
    chain = retrial_chain(params["lambda"], params["mu"], params["gamma"])
    result = chain.stationary()
    value = {
        "mean number in orbit L_o": result.mean_orbit,
        "P(server busy)": result.mean_busy,
    }[row["quantity"]]

    # Tolerance of the source row (an identity instance, 1e-9 absolute).
    assert result.truncation_mass < 1e-13
    assert value == pytest.approx(
        float(row["published_value"]), abs=float(row["tolerance"])
    )


@pytest.mark.parametrize(
    ("arrival", "service", "retry"),
    [(0.3, 1.0, 0.2), (0.5, 1.0, 1.0), (0.8, 2.0, 5.0), (0.9, 1.0, 3.0)],
)
def test_mm1_retrial_mean_orbit_is_the_closed_form(
    arrival: float, service: float, retry: float
) -> None:
    """M/M/1 retrial mean orbit: lam^2 (mu + th) / (mu th (mu - lam))."""
    # [FalinTempleton1997] ch. 1; [GrossHarris2008] sec. 3.5.1, eq. (3.58).
    chain = retrial_chain(arrival, service, retry)
    result = chain.stationary()
    expected = arrival**2 * (service + retry) / (service * retry * (service - arrival))

    assert result.truncation_mass < 1e-12
    assert result.mean_orbit == pytest.approx(expected, rel=1e-9)
    # P(server busy) = rho whatever the retry rate ([GrossHarris2008] eq. 3.55).
    assert result.mean_busy == pytest.approx(arrival / service, rel=1e-9)


# -- Ciw: M/M/c with exponential reneging ----------------------------------------------


def test_ciw_simulation_of_erlang_a_agrees_with_the_chain() -> None:
    """Ciw's M/M/c+M: P(abandon) within its 99 % CI of ErlangA and of the chain."""
    arrival, service, servers, patience_rate = 4.0, 1.0, 4, 0.5
    warmup, end, horizon = 100.0, 1600.0, 1700.0
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(arrival)],
        service_distributions=[ciw.dists.Exponential(service)],
        number_of_servers=[servers],
        reneging_time_distributions=[ciw.dists.Exponential(patience_rate)],
    )
    shares = []
    for seed in range(12):
        # Ciw draws from Python's and numpy's global generators: seeded here.
        ciw.seed(seed)
        simulation = ciw.Simulation(network)
        simulation.simulate_until_max_time(horizon)
        # Arrivals in [warmup, end] have all left by the horizon (patience and
        # service means of 2 s and 1 s): no request is cut off.
        records = [
            r for r in simulation.get_all_records() if warmup <= r.arrival_date <= end
        ]
        reneged = sum(r.record_type == "renege" for r in records)
        shares.append(reneged / len(records))

    exact = ErlangA(
        arrival_rate=arrival,
        service_rate=service,
        servers=servers,
        abandonment_rate=patience_rate,
    ).abandonment_probability
    chain = RetryChain(
        arrival_rate=arrival,
        service_rate=service,
        servers=servers,
        abandonment_rate=patience_rate,
    )
    mean, half_width = float(np.mean(shares)), student_half_width(shares)
    assert abs(mean - exact) <= half_width
    assert chain.stationary().abandonment_probability == pytest.approx(exact, rel=1e-10)


# -- the fluid model and the discrete-event simulation ---------------------------------

# An overloaded pool with a queue cap and no binding timeout: 4 connections of
# rate 1, 6 requests per second, 20 places; from empty the queue fills at
# about 2 per second and stays full. The chain is exactly this system.
_OVERLOADED = {
    "scenario": {"name": "chain-check", "horizon": 30.0, "time_step": 0.25},
    "clients": {"request_rate": 6.0, "timeout": 1.0e4, "max_retries": 0},
    "web": {"pods": 1},
    "proxy": {"pool_size": 4, "queue_timeout": 1.0e4, "queue_limit": 20},
    "database": {"service_time": 1.0},
}


def overloaded_chain(scale: int) -> RetryChain:
    """The overloaded system with servers, rates and queue cap times ``scale``."""
    return RetryChain(
        arrival_rate=6.0 * scale,
        service_rate=1.0,
        servers=4 * scale,
        queue_limit=20 * scale,
    )


def test_chain_mean_trajectories_approach_the_fluid_model_as_the_system_grows() -> None:
    """Scaled by N, the chain's mean queue / N tends to the fluid queue (~1/sqrt N)."""
    fluid = simulate_fluid(parse_scenario(_OVERLOADED))
    times = np.arange(1.0, 30.0, 1.0)
    fluid_queue = np.interp(times, fluid.time, fluid.queue)
    fluid_busy = np.interp(times, fluid.time, fluid.in_service)

    errors = []
    for scale in (1, 4, 16, 64):
        run = overloaded_chain(scale).transient(ChainState(busy=0), times)
        gap_queue = np.abs(run.mean_queue / scale - fluid_queue).max()
        gap_busy = np.abs(run.mean_busy / scale - fluid_busy).max()
        errors.append(max(gap_queue, gap_busy))

    # Each fourfold scale-up should at least halve the distance (1/sqrt(N)).
    assert all(later < 0.6 * earlier for earlier, later in itertools.pairwise(errors))
    # Largest at the kink where the queue reaches its cap (t = 11 s): 3.9 at
    # N = 1, so about 3.9 / sqrt(64) = 0.49 at N = 64.
    assert errors[-1] < 0.5


def test_chain_transient_means_agree_with_the_discrete_event_simulation() -> None:
    """Queue and busy connections from empty: chain means within the 99 % CIs."""
    scenario = parse_scenario(_OVERLOADED)
    runs = [
        simulate_events(scenario, seed=seed, sample_interval=1.0) for seed in range(60)
    ]
    chain = overloaded_chain(1)
    checked = [1, 2, 4, 7, 10, 15, 29]  # indices into the 1 s samples
    times = runs[0].time[checked]
    exact = chain.transient(ChainState(busy=0), times)

    for column, chain_means in (
        ("queue", exact.mean_queue),
        ("in_service", exact.mean_busy),
    ):
        for position, index in enumerate(checked):
            samples = [float(getattr(run, column)[index]) for run in runs]
            if np.std(samples) == 0.0:
                # Every replication at one value: the chance of any other is at
                # most 4.6 / R at 99 % (rule of three), each off by at most the
                # variable's range (the cap of 20 or the 4 connections).
                spread = 20.0 if column == "queue" else 4.0
                bound = 4.6 / len(samples) * spread
                assert abs(chain_means[position] - samples[0]) <= bound
                continue
            gap = abs(float(np.mean(samples)) - float(chain_means[position]))
            assert gap <= student_half_width(samples), (column, float(times[position]))
