"""What the steady-state queue models share: parameters, checks and read-outs.

`retrystorm.mmc.MMc`, `retrystorm.mmck.MMcK`, `retrystorm.erlang_a.ErlangA` and
`retrystorm.mmcd.MMcD` take the same three parameters, check them the same way
and report their quantities from one dictionary filled by a vectorised kernel;
that plumbing is written once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

from retrystorm._birth_death import FloatArray
from retrystorm._validation import check_integer, check_positive

__all__ = ["QueueModel", "float_arrays"]


def float_arrays(*values: ArrayLike) -> tuple[FloatArray, ...]:
    """Return ``values`` as float arrays broadcast against each other.

    Parameters
    ----------
    *values
        Scalars or arrays whose shapes broadcast.

    Returns
    -------
    tuple of numpy.ndarray
        One float array of the common shape per value, in order.
    """
    return tuple(np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values)))


@dataclass(frozen=True, kw_only=True)
class QueueModel:
    """Poisson arrivals at ``servers`` exponential servers (a base class).

    A model adds its own parameters, the tuple `_summary_fields` of the
    quantities `summary` reports, and `_quantities`, every scalar quantity by
    name from its kernel. The parameters are documented by each model.
    """

    arrival_rate: float
    service_rate: float
    servers: int

    _summary_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "arrival_rate", check_positive("arrival_rate", self.arrival_rate)
        )
        object.__setattr__(
            self, "service_rate", check_positive("service_rate", self.service_rate)
        )
        object.__setattr__(self, "servers", check_integer("servers", self.servers))

    @property
    def _quantities(self) -> dict[str, FloatArray]:
        """Every scalar quantity by name, from the model's kernel."""
        raise NotImplementedError

    @property
    def offered_load(self) -> float:
        """Offered load ``lambda / mu`` in erlangs."""
        return float(self._quantities["offered_load"])

    @property
    def utilization(self) -> float:
        """Offered utilisation ``lambda / (c mu)``, dimensionless (may exceed 1)."""
        return float(self._quantities["utilization"])

    def summary(self) -> dict[str, float]:
        """Return every scalar quantity by property name."""
        return {name: float(self._quantities[name]) for name in self._summary_fields}
