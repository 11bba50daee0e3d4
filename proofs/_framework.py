"""A small framework for stating theorems and checking them with sympy.

A `Theorem` is a statement with its assumptions, its sources (keys of
``REFERENCES.md``), the package functions that rely on it, and a tuple of
`Check` objects. Each check says how it was established:

* ``proved symbolically``: every step is an identity or a sign that sympy
  confirms for symbolic parameters under the stated assumptions;
* ``proved by induction on n``: a sequence defined by a recurrence equals a
  closed form for every ``n >= n0``; the base case and the inductive step
  ``f(n) = closed(n)  =>  f(n + 1) = closed(n + 1)`` are both confirmed
  symbolically, with ``n`` a symbol;
* ``checked exhaustively``: exact (rational) arithmetic over a finite list of
  cases; only ever an addition to a proof, never a replacement;
* ``checked numerically``: floating-point or high-precision evaluation at
  stated points; the label says how, and such a check is never called a proof.

A check raises `ProofError` naming the step that sympy could not confirm.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

import sympy as sp

__all__ = [
    "Check",
    "Method",
    "Outcome",
    "ProofError",
    "Theorem",
    "branch",
    "exhaustive",
    "induction",
    "numeric",
    "report",
    "show_equal",
    "show_nonnegative",
    "show_positive",
    "show_true",
    "show_zero",
    "symbolic",
    "verify",
]


class Method(enum.Enum):
    """How a check was established."""

    SYMBOLIC = "proved symbolically"
    INDUCTION = "proved by induction"
    EXHAUSTIVE = "checked exhaustively"
    NUMERIC = "checked numerically"


class ProofError(AssertionError):
    """A step that could not be confirmed; carries the step and what was left."""

    def __init__(self, step: str, detail: str) -> None:
        self.step = step
        self.detail = detail
        super().__init__(f"{step}: {detail}")


# --- steps -----------------------------------------------------------------


def _simplified(expr: sp.Expr) -> sp.Expr:
    """Apply, in turn, the simplifications that settle the identities used here.

    Stops at the first one that reaches 0; otherwise returns the last residual.
    """
    current = sp.sympify(expr)
    transforms: tuple[Callable[[sp.Expr], sp.Expr], ...] = (
        sp.cancel,
        sp.simplify,
        sp.gammasimp,
        lambda e: sp.simplify(sp.expand(sp.powsimp(sp.expand_power_exp(e)))),
    )
    for transform in transforms:
        if current == 0:
            break
        current = transform(current)
    return current


def show_zero(expr: sp.Expr, step: str) -> None:
    """Confirm that ``expr`` simplifies to 0, or raise `ProofError` for ``step``."""
    residual = _simplified(expr)
    if residual != 0:
        raise ProofError(step, f"residual {residual} does not simplify to 0")


def show_equal(lhs: sp.Expr, rhs: sp.Expr, step: str) -> None:
    """Confirm ``lhs == rhs`` symbolically."""
    show_zero(sp.sympify(lhs) - sp.sympify(rhs), step)


def show_positive(expr: sp.Expr, step: str) -> None:
    """Confirm ``expr > 0`` from the assumptions carried by its symbols."""
    simplified = sp.factor(sp.simplify(expr))
    if simplified.is_positive is not True:
        raise ProofError(step, f"{simplified} is not known to be positive")


def show_nonnegative(expr: sp.Expr, step: str) -> None:
    """Confirm ``expr >= 0`` from the assumptions carried by its symbols."""
    simplified = sp.factor(sp.simplify(expr))
    if simplified.is_nonnegative is not True:
        raise ProofError(step, f"{simplified} is not known to be non-negative")


def show_true(statement: sp.Basic | bool, step: str) -> None:
    """Confirm that a sympy relation or boolean reduces to ``True``."""
    result = sp.simplify(statement) if isinstance(statement, sp.Basic) else statement
    if result is not sp.true and result is not True:
        raise ProofError(step, f"{statement} reduces to {result}, not True")


def branch(expr: sp.Expr, condition: sp.Basic, step: str) -> sp.Expr:
    """Replace each ``Piecewise`` in ``expr`` by its piece valid under ``condition``.

    sympy returns a convergent series as ``Piecewise((value, condition), ...)``.
    A piece is taken only if its condition is literally ``condition`` (the
    assumption the proof states; ``True`` for a series that always converges);
    anything else is a failed step.
    """

    def pick(piecewise: sp.Piecewise) -> sp.Expr:
        for value, cond in piecewise.args:
            if cond == condition:
                return value
        raise ProofError(step, f"no piece of {piecewise} holds under {condition}")

    return expr.replace(lambda e: isinstance(e, sp.Piecewise), pick)


# --- checks ----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One claim inside a theorem and the routine that establishes it.

    Attributes
    ----------
    claim
        What is established, in words.
    method
        How it is established.
    run
        Raises `ProofError` if a step fails; returns None otherwise.
    how
        For induction: the variable and starting value; for exhaustive and
        numeric checks: the cases or points and the arithmetic used.
    """

    claim: str
    method: Method
    run: Callable[[], None]
    how: str = ""

    @property
    def label(self) -> str:
        """The method as printed, with its detail."""
        if self.how:
            return f"{self.method.value} ({self.how})"
        return self.method.value


def symbolic(claim: str) -> Callable[[Callable[[], None]], Check]:
    """Decorate a routine of symbolic steps as a check."""

    def wrap(run: Callable[[], None]) -> Check:
        return Check(claim, Method.SYMBOLIC, run)

    return wrap


def exhaustive(claim: str, how: str) -> Callable[[Callable[[], None]], Check]:
    """Decorate an exact check over finitely many cases."""

    def wrap(run: Callable[[], None]) -> Check:
        return Check(claim, Method.EXHAUSTIVE, run, how)

    return wrap


def numeric(claim: str, how: str) -> Callable[[Callable[[], None]], Check]:
    """Decorate a numerical check; ``how`` says at which points and how."""

    def wrap(run: Callable[[], None]) -> Check:
        return Check(claim, Method.NUMERIC, run, how)

    return wrap


def induction(
    claim: str,
    variable: sp.Symbol,
    *,
    start: int,
    initial: sp.Expr,
    recurrence: Callable[[sp.Expr, sp.Symbol], sp.Expr],
    closed: Callable[[sp.Expr], sp.Expr],
    definitions: Callable[[sp.Expr, sp.Symbol], sp.Expr] | None = None,
) -> Check:
    """A sequence given by a recurrence equals a closed form for all n >= start.

    The sequence is ``f(start) = initial`` and ``f(n + 1) = recurrence(f(n), n)``.
    Base case: ``initial == closed(start)``. Inductive step, with ``n`` the
    symbol ``variable`` (an integer ``>= start``): assuming ``f(n) = closed(n)``,
    ``recurrence(closed(n), n) == closed(n + 1)``. Both are symbolic identities.
    ``definitions(expr, n)``, if given, unfolds definitions the closed form
    uses (a partial sum at ``n + 1`` in terms of the sum at ``n``, say); it is
    applied to both sides of both identities.
    """

    def unfold(expr: sp.Expr, n: sp.Expr) -> sp.Expr:
        return definitions(expr, n) if definitions is not None else expr

    def run() -> None:
        n0 = sp.Integer(start)
        show_equal(
            unfold(initial, n0),
            unfold(closed(n0), n0),
            f"base case {variable} = {start}",
        )
        show_equal(
            unfold(recurrence(closed(variable), variable), variable),
            unfold(closed(variable + 1), variable),
            f"inductive step {variable} -> {variable} + 1",
        )

    return Check(claim, Method.INDUCTION, run, f"on {variable} >= {start}")


# --- theorems --------------------------------------------------------------


@dataclass(frozen=True)
class Theorem:
    """A statement, what it rests on, who relies on it, and its checks.

    Attributes
    ----------
    key
        A short stable name, ``group.name``.
    title
        One line.
    statement
        The statement in words and symbols.
    assumptions
        Each assumption the checks use.
    sources
        Keys of ``REFERENCES.md``.
    used_by
        The package functions whose formula this theorem justifies.
    checks
        The checks, in the order of the argument.
    """

    key: str
    title: str
    statement: str
    assumptions: tuple[str, ...]
    sources: tuple[str, ...]
    used_by: tuple[str, ...]
    checks: tuple[Check, ...] = field(default=())


@dataclass(frozen=True)
class Outcome:
    """The result of running a theorem's checks: failures as (check, message)."""

    theorem: Theorem
    failures: tuple[tuple[Check, str], ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.failures


def verify(theorem: Theorem) -> Outcome:
    """Run every check of ``theorem`` and collect the failed steps."""
    failures = []
    for check in theorem.checks:
        try:
            check.run()
        except ProofError as error:
            failures.append((check, str(error)))
        except Exception as error:
            failures.append(
                (check, f"the check raised {type(error).__name__}: {error}")
            )
    return Outcome(theorem, tuple(failures))


def report(theorems: Iterable[Theorem], stream: TextIO) -> bool:
    """Verify each theorem, print it with ``checked`` or its failed step.

    Returns True when every theorem was checked.
    """
    all_ok = True
    for theorem in theorems:
        outcome = verify(theorem)
        status = "checked" if outcome.ok else "FAILED"
        stream.write(f"{theorem.key}: {theorem.title} ... {status}\n")
        failed = {id(check): message for check, message in outcome.failures}
        for check in theorem.checks:
            mark = "failed at " + failed[id(check)] if id(check) in failed else "ok"
            stream.write(f"    [{check.label}] {check.claim}: {mark}\n")
        stream.flush()
        all_ok = all_ok and outcome.ok
    return all_ok
