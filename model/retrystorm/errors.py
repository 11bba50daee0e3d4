"""The exception family of retrystorm.

Every error the library raises on purpose derives from `RetrystormError`, so a
caller can catch the project's errors without catching numpy's or Python's.
Each exception carries the data that explains it.
"""

from __future__ import annotations

__all__ = [
    "ConvergenceError",
    "InvalidParameterError",
    "RetrystormError",
    "ScenarioError",
    "StateSpaceTooLargeError",
    "UnstableSystemError",
]


class RetrystormError(Exception):
    """Root of every error raised on purpose by retrystorm."""


class InvalidParameterError(RetrystormError, ValueError):
    """A parameter broke a rule; the message names the parameter, rule and value.

    Parameters
    ----------
    name
        The parameter's public name (``servers``, ``arrival_rate``, ...).
    rule
        What the parameter must be, phrased to follow the name
        ("must be a positive integer").
    value
        The value received.
    """

    def __init__(self, name: str, rule: str, value: object) -> None:
        self.name = name
        self.rule = rule
        self.value = value
        super().__init__(f"`{name}` {rule} (got {value!r})")


class UnstableSystemError(RetrystormError, ArithmeticError):
    """A steady-state quantity was asked of a system that has no steady state.

    Parameters
    ----------
    utilization
        The offered utilisation ``arrival_rate / (servers * service_rate)``.
    quantity
        The quantity that does not exist at this utilisation.
    """

    def __init__(self, utilization: float, quantity: str) -> None:
        self.utilization = utilization
        self.quantity = quantity
        super().__init__(
            f"`{quantity}` does not exist: the system is unstable at utilisation "
            f"{utilization:.6g} (it must be below 1)"
        )


class ConvergenceError(RetrystormError, ArithmeticError):
    """A numerical method stopped before meeting its tolerance.

    Parameters
    ----------
    method
        Which method failed.
    iterations
        How many iterations it ran.
    residual
        The residual (or bracket width) when it stopped.
    """

    def __init__(self, method: str, iterations: int, residual: float) -> None:
        self.method = method
        self.iterations = iterations
        self.residual = residual
        super().__init__(
            f"{method} did not converge after {iterations} iterations "
            f"(residual {residual:.3g})"
        )


class StateSpaceTooLargeError(RetrystormError, MemoryError):
    """A Markov chain would need more states or memory than allowed.

    Parameters
    ----------
    states
        The number of states the request needs.
    limit
        The largest number of states allowed.
    bytes_needed
        An estimate of the memory the request would need, in bytes.
    """

    def __init__(self, states: int, limit: int, bytes_needed: int) -> None:
        self.states = states
        self.limit = limit
        self.bytes_needed = bytes_needed
        super().__init__(
            f"the chain would have {states:,} states (about "
            f"{bytes_needed / 2**30:.1f} GiB), more than the limit of {limit:,}"
        )


class ScenarioError(RetrystormError, ValueError):
    """A scenario file is invalid; ``problems`` lists (field path, message) pairs.

    Parameters
    ----------
    source
        Where the scenario came from (a file path or ``<embedded: NAME>``).
    problems
        One ``(path, message)`` pair per broken rule; the path is dotted
        (``proxy.queue_timeout``).
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "; ".join(
            f"{path}: {message}" if path else message for path, message in problems
        )
        super().__init__(f"invalid scenario {source}: {lines}")
