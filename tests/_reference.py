"""Slow, independent references for the steady-state models.

Three kinds, none sharing code with the library:

- mpmath at 50 significant digits: the textbook formulas as sums over the
  states of each birth-death chain, or as quadrature of the offered-wait
  density for the models with abandonment;
- brute force in double precision: the stationary law of a (truncated)
  birth-death chain from its dense generator, and waiting-time tails from the
  transient law of a tagged request (a matrix exponential);
- a discrete-event simulation of the M/M/c+D queue.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import mpmath as mp
import numpy as np
from scipy import linalg

DIGITS = 50
# A state whose weight is below this fraction of the running total is dropped
# from an mpmath sum (the sums are of terms falling faster than geometrically).
_MP_NEGLIGIBLE = mp.mpf(10) ** -(DIGITS + 10)


def relative_error(value: float, reference: mp.mpf) -> float:
    """Return ``|value / reference - 1|`` in mpmath arithmetic."""
    with mp.workdps(DIGITS):
        return float(abs(mp.mpf(value) / reference - 1))


# ---------------------------------------------------------------------------
# Erlang B and C
# ---------------------------------------------------------------------------


def mp_erlang_b(servers: int, offered_load: float) -> mp.mpf:
    """``B(c, a) = 1 / (e^a a^-c Gamma(c + 1, a))`` in 50-digit arithmetic."""
    with mp.workdps(DIGITS):
        a = mp.mpf(offered_load)
        return 1 / (mp.exp(a) * a ** (-servers) * mp.gammainc(servers + 1, a))


def mp_erlang_b_by_sum(servers: int, offered_load: float) -> mp.mpf:
    """``B(c, a) = (a^c / c!) / sum_k a^k / k!``, summed term by term."""
    with mp.workdps(DIGITS):
        a = mp.mpf(offered_load)
        terms = [a**k / mp.factorial(k) for k in range(servers + 1)]
        return terms[-1] / mp.fsum(terms)


def mp_erlang_c(servers: int, offered_load: float) -> mp.mpf:
    """``C = c B / (c - a + a B)`` for ``a < c``."""
    with mp.workdps(DIGITS):
        a = mp.mpf(offered_load)
        b = mp_erlang_b(servers, offered_load)
        return servers * b / (servers - a + a * b)


# ---------------------------------------------------------------------------
# Birth-death chains in mpmath
# ---------------------------------------------------------------------------


def _mp_weights(
    rate_up: Callable[[int], mp.mpf],
    rate_down: Callable[[int], mp.mpf],
    top: int | None,
) -> list[mp.mpf]:
    """Unnormalised ``pi_k`` from detailed balance, to ``top`` or until negligible."""
    weights = [mp.mpf(1)]
    total = mp.mpf(1)
    k = 0
    while top is None or k < top:
        k += 1
        weight = weights[-1] * rate_up(k - 1) / rate_down(k)
        weights.append(weight)
        total += weight
        if top is None and weight < _MP_NEGLIGIBLE * total and weight < weights[-2]:
            break
    return weights


def mp_mmck(
    arrival_rate: float, service_rate: float, servers: int, capacity: int
) -> dict[str, mp.mpf]:
    """Every quantity of M/M/c/K from the explicit stationary law."""
    with mp.workdps(DIGITS):
        lam, mu = mp.mpf(arrival_rate), mp.mpf(service_rate)
        weights = _mp_weights(lambda _: lam, lambda k: min(k, servers) * mu, capacity)
        total = mp.fsum(weights)
        pi = [w / total for w in weights]
        blocking = pi[capacity]
        admitted = 1 - blocking
        throughput = lam * admitted
        queue = mp.fsum((k - servers) * pi[k] for k in range(servers, capacity + 1))
        waiting = mp.fsum(pi[servers:capacity]) / admitted
        return {
            "pi": pi,
            "utilization": lam / (servers * mu),
            "blocking_probability": blocking,
            "throughput": throughput,
            "occupancy": throughput / (servers * mu),
            "wait_probability": waiting,
            "mean_queue_length": queue,
            "mean_wait": queue / throughput,
            "mean_response_time": queue / throughput + 1 / mu,
            "mean_in_system": mp.fsum(k * p for k, p in enumerate(pi)),
        }


def mp_mmck_wait_tail(
    arrival_rate: float, service_rate: float, servers: int, capacity: int, t: float
) -> mp.mpf:
    """``P(W > t)`` of an admitted M/M/c/K request, summed over arrival states."""
    with mp.workdps(DIGITS):
        law = mp_mmck(arrival_rate, service_rate, servers, capacity)
        x = servers * mp.mpf(service_rate) * mp.mpf(t)
        admitted = 1 - law["blocking_probability"]
        total = mp.mpf(0)
        for j in range(capacity - servers):
            poisson_cdf = mp.fsum(
                mp.exp(-x) * x**i / mp.factorial(i) for i in range(j + 1)
            )
            total += law["pi"][servers + j] * poisson_cdf
        return total / admitted


def mp_mmc(arrival_rate: float, service_rate: float, servers: int) -> dict[str, mp.mpf]:
    """Every quantity of a stable M/M/c from the Erlang C formula."""
    with mp.workdps(DIGITS):
        lam, mu = mp.mpf(arrival_rate), mp.mpf(service_rate)
        gap = servers * mu - lam
        wait_probability = mp_erlang_c(servers, lam / mu)
        mean_wait = wait_probability / gap
        return {
            "utilization": lam / (servers * mu),
            "wait_probability": wait_probability,
            "mean_wait": mean_wait,
            "mean_queue_length": lam * mean_wait,
            "mean_response_time": mean_wait + 1 / mu,
            "mean_in_system": lam * (mean_wait + 1 / mu),
            "gap": gap,
        }


def mp_erlang_a(
    arrival_rate: float, service_rate: float, servers: int, abandonment_rate: float
) -> dict[str, mp.mpf]:
    """Every quantity of Erlang-A from its birth-death chain, summed to 60 digits.

    States below ``c`` are summed term by term for ``c <= 2000``; above, their
    two sums come from the incomplete-gamma form of Erlang B (itself checked
    against plain sums in test_erlang). The queue is summed term by term until
    a term is negligible against the queue's own mass.
    """
    with mp.workdps(DIGITS):
        lam, mu = mp.mpf(arrival_rate), mp.mpf(service_rate)
        theta = mp.mpf(abandonment_rate)
        c = servers
        a = lam / mu
        if c <= 2000:
            below = _mp_weights(lambda _: lam, lambda k: k * mu, c)
            below = [w / below[-1] for w in below]  # pi_k / pi_c
            idle_mass = mp.fsum(below[:-1])
            idle_busy = mp.fsum(k * w for k, w in enumerate(below[:-1]))
        else:
            # sum_{k<c} pi_k / pi_c = (c/a) / B(c-1, a); sum_{k<c} k pi_k / pi_c
            # = a sum_{k<c-1} pi_k / pi_c = c (c-1) / (a B(c-2, a)).
            idle_mass = (c / a) / mp_erlang_b(c - 1, arrival_rate / service_rate)
            idle_busy = (
                c * (c - 1) / (a * mp_erlang_b(c - 2, arrival_rate / service_rate))
            )
        queue = _mp_weights(lambda _: lam, lambda j: c * mu + j * theta, None)
        queue_mass = mp.fsum(queue)
        queue_first_moment = mp.fsum(j * w for j, w in enumerate(queue))
        pi_c = 1 / (idle_mass + queue_mass)
        waiting = pi_c * queue_mass
        queue_length = pi_c * queue_first_moment
        busy = pi_c * idle_busy + c * waiting
        return {
            "pi_before_full": pi_c * c / a,
            "utilization": lam / (c * mu),
            "wait_probability": waiting,
            "mean_queue_length": queue_length,
            "abandonment_probability": theta * queue_length / lam,
            "throughput": mu * busy,
            "occupancy": busy / c,
            "mean_wait": queue_length / lam,
            "mean_response_time": queue_length / lam + busy / lam,
            "mean_in_system": queue_length + busy,
        }


def mp_erlang_a_tails(
    arrival_rate: float,
    service_rate: float,
    servers: int,
    abandonment_rate: float,
    t: float,
) -> tuple[mp.mpf, mp.mpf]:
    """``(P(W > t), P(served, W > t))`` by quadrature of the offered-wait density.

    The density of the offered wait is ``lambda pi_(c-1) exp(y (1 - e^(-theta
    x)) - c mu x)`` on ``x > 0`` (its normalisation against the chain is
    checked separately).
    """
    with mp.workdps(DIGITS):
        law = mp_erlang_a(arrival_rate, service_rate, servers, abandonment_rate)
        lam, mu = mp.mpf(arrival_rate), mp.mpf(service_rate)
        theta, start = mp.mpf(abandonment_rate), mp.mpf(t)
        y = lam / theta

        def density(x: mp.mpf) -> mp.mpf:
            return (
                lam
                * law["pi_before_full"]
                * mp.exp(y * (1 - mp.exp(-theta * x)) - servers * mu * x)
            )

        offered = mp.quad(density, [start, start + 1 / (servers * mu), mp.inf])
        served_late = mp.quad(
            lambda x: density(x) * mp.exp(-theta * x),
            [start, start + 1 / (servers * mu), mp.inf],
        )
        return mp.exp(-theta * start) * offered, served_late


def mp_mmcd(
    arrival_rate: float, service_rate: float, servers: int, timeout: float
) -> dict[str, mp.mpf]:
    """Every quantity of M/M/c+D by quadrature of the offered-wait density."""
    with mp.workdps(DIGITS):
        lam, mu, big_t = mp.mpf(arrival_rate), mp.mpf(service_rate), mp.mpf(timeout)
        c = servers
        a = lam / mu
        # pi_k / pi_(c-1) for k < c, from detailed balance below c.
        below = [mp.mpf(1)]
        for k in range(c - 1, 0, -1):
            below.append(below[-1] * k / a)
        idle_ratios = below  # index i is pi_(c-1-i) / pi_(c-1)

        def shape(x: mp.mpf) -> mp.mpf:
            return mp.exp(lam * min(x, big_t) - c * mu * x)

        before = mp.quad(shape, [0, big_t])
        after = mp.quad(shape, [big_t, mp.inf])
        first_moment = mp.quad(lambda x: x * shape(x), [0, big_t])
        pi_before_full = 1 / (mp.fsum(idle_ratios) + lam * (before + after))
        waiting = lam * pi_before_full * (before + after)
        abandonment = lam * pi_before_full * after
        served_wait = lam * pi_before_full * first_moment
        mean_wait = served_wait + big_t * abandonment
        busy_idle = (
            mp.fsum((c - 1 - i) * r for i, r in enumerate(idle_ratios)) * pi_before_full
        )
        busy = busy_idle + c * waiting
        return {
            "pi_before_full": pi_before_full,
            "utilization": lam / (c * mu),
            "wait_probability": waiting,
            "abandonment_probability": abandonment,
            "throughput": mu * busy,
            "occupancy": busy / c,
            "mean_wait": mean_wait,
            "mean_wait_served": served_wait / (1 - abandonment),
            "mean_queue_length": lam * mean_wait,
            "mean_response_time": mean_wait + busy / lam,
            "mean_in_system": lam * mean_wait + busy,
        }


def mp_mmcd_wait_tail(
    arrival_rate: float, service_rate: float, servers: int, timeout: float, t: float
) -> mp.mpf:
    """``P(W > t)`` of M/M/c+D by quadrature of the offered-wait density."""
    with mp.workdps(DIGITS):
        law = mp_mmcd(arrival_rate, service_rate, servers, timeout)
        lam, mu, big_t = mp.mpf(arrival_rate), mp.mpf(service_rate), mp.mpf(timeout)
        if t >= timeout:
            return mp.mpf(0)

        def shape(x: mp.mpf) -> mp.mpf:
            return mp.exp(lam * min(x, big_t) - servers * mu * x)

        mass = mp.quad(shape, [mp.mpf(t), big_t]) + mp.quad(shape, [big_t, mp.inf])
        return lam * law["pi_before_full"] * mass


# ---------------------------------------------------------------------------
# Brute force in double precision
# ---------------------------------------------------------------------------


def stationary_distribution(births: np.ndarray, deaths: np.ndarray) -> np.ndarray:
    """Solve ``pi Q = 0, sum pi = 1`` for the dense generator of a birth-death chain.

    ``births[k]`` is the rate from ``k`` to ``k + 1`` and ``deaths[k]`` the
    rate from ``k + 1`` to ``k``, for ``k = 0..n-2`` (``n`` states). The dense
    generator is reduced state by state with the Grassmann-Taksar-Heyman
    algorithm [Stewart2009] (Sec. 2.5), which never subtracts and so keeps
    every component, however small, to a relative error of about ``n eps``.
    """
    n = len(births) + 1
    generator = np.zeros((n, n))
    generator[np.arange(n - 1), np.arange(1, n)] = births
    generator[np.arange(1, n), np.arange(n - 1)] = deaths
    for k in range(n - 1, 0, -1):
        leaving = generator[k, :k].sum()
        generator[:k, k] /= leaving
        generator[:k, :k] += np.outer(generator[:k, k], generator[k, :k])
    pi = np.zeros(n)
    pi[0] = 1.0
    for k in range(1, n):
        pi[k] = pi[:k] @ generator[:k, k]
    return pi / pi.sum()


def chain(
    arrival_rate: float,
    service_rate: float,
    servers: int,
    top: int,
    abandonment_rate: float = 0.0,
) -> np.ndarray:
    """Stationary law on ``0..top`` of the M/M/c(+M) chain cut at ``top``."""
    k = np.arange(1, top + 1)
    deaths = (
        np.minimum(k, servers) * service_rate
        + np.maximum(k - servers, 0) * abandonment_rate
    )
    births = np.full(top, arrival_rate)
    return stationary_distribution(births, deaths)


def tagged_wait_tail(
    pi: np.ndarray,
    service_rate: float,
    servers: int,
    t: float,
    *,
    abandonment_rate: float = 0.0,
    refused_state: int | None = None,
) -> float:
    """``P(W > t)`` from the transient law of one tagged request.

    A request that arrives to ``c + j`` requests has ``j`` ahead; it is still
    waiting at ``t`` unless ``j + 1`` departures (rate ``c mu + i theta`` with
    ``i`` ahead) or its own abandonment (rate ``theta``) came first. The
    arrival state follows ``pi`` (PASTA), conditioned on admission if
    ``refused_state`` is given.
    """
    ahead = len(pi) - servers
    if refused_state is not None:
        ahead = refused_state - servers
    if ahead <= 0:
        return 0.0
    leave = servers * service_rate + np.arange(ahead) * abandonment_rate
    generator = np.diag(-(leave + abandonment_rate)) + np.diag(leave[1:], -1)
    transient = linalg.expm(generator * t)
    still_waiting = transient.sum(axis=1)
    weights = pi[servers : servers + ahead]
    admitted = 1.0 - pi[refused_state] if refused_state is not None else 1.0
    return float(weights @ still_waiting / admitted)


# ---------------------------------------------------------------------------
# Simulation of M/M/c+D
# ---------------------------------------------------------------------------


def simulate_mmcd(
    arrival_rate: float,
    service_rate: float,
    servers: int,
    timeout: float,
    *,
    arrivals: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(wait, served)`` per arrival of a FCFS M/M/c+D queue from empty.

    With first-come-first-served order and one common patience, a request's
    wait depends only on the requests before it that are served: it reaches a
    server when the earliest of the ``c`` committed servers frees up, and it is
    served iff that happens within ``timeout``.
    """
    gaps = rng.exponential(1.0 / arrival_rate, arrivals)
    services = rng.exponential(1.0 / service_rate, arrivals)
    free_at = [0.0] * servers
    now = 0.0
    wait = np.empty(arrivals)
    served = np.empty(arrivals, dtype=bool)
    for n in range(arrivals):
        now += gaps[n]
        earliest = free_at[0]
        offered = max(0.0, earliest - now)
        if offered <= timeout:
            heapq.heapreplace(free_at, now + offered + services[n])
            wait[n], served[n] = offered, True
        else:
            wait[n], served[n] = timeout, False
    return wait, served


def batch_mean_interval(samples: np.ndarray, batches: int = 40) -> tuple[float, float]:
    """Return (mean, half-width of a 99.9 % confidence interval) by batch means."""
    usable = len(samples) - len(samples) % batches
    means = samples[:usable].reshape(batches, -1).mean(axis=1)
    spread = float(means.std(ddof=1)) / math.sqrt(batches)
    # Student t quantile for 39 degrees of freedom at 0.9995.
    return float(means.mean()), 3.558 * spread
