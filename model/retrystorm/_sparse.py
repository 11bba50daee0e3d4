"""Sparse linear algebra for continuous-time Markov chains (private).

Every function takes a generator ``Q`` as a ``scipy.sparse`` CSR matrix with
rows summing to zero (``Q[i, j]`` the rate from state ``i`` to state ``j``)
and solves one of the standard problems on it [Stewart2009]:

- the stationary distribution, ``pi Q = 0`` with ``sum(pi) = 1``;
- expected hitting times of a target set, ``Q_BB h = -1`` on the rest;
- the transient distribution, ``p(t) = p(0) exp(Q t)``;
- the slowest decay rate, the spectral gap of ``Q``.

The linear systems are solved in one of two ways:

- ``"direct"``: sparse LU (SuperLU), with a minimum-degree ordering on
  ``A + A^T`` or a nested-dissection order of the lattice of states
  [George1973]. On chains whose states form a two-dimensional grid (queue x
  orbit) the fill-in grows like ``n log n``: a million states factor in
  seconds. On grids of three dimensions it grows like ``n^(4/3)``, which
  limits LU to a few hundred thousand states.
- ``"iterative"``: restarted GMRES preconditioned by one symmetric
  Gauss-Seidel sweep (two triangular solves, no fill-in). It needs a few
  dozen iterations on the higher-dimensional chains, where LU is out of
  reach, but converges slowly on long two-dimensional grids.

The chains of retrystorm have one recurrent class (every state can reach the
empty system), so ``Q`` has a one-dimensional null space and the systems
below are non-singular.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray
from scipy.sparse import csgraph

from retrystorm.errors import ConvergenceError

__all__ = [
    "DENSE_LIMIT",
    "Method",
    "expected_hitting_times",
    "linear_solver",
    "nested_dissection",
    "propagate",
    "restrict_order",
    "slowest_decay_rate",
    "stationary_distribution",
    "total_variation",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
Method = Literal["direct", "iterative"]
Solver = Callable[[FloatArray], FloatArray]

# Up to this many states the eigenvalues are found by dense LAPACK routines
# (a non-symmetric problem of 500 states takes ~0.1 s; ARPACK is faster above).
DENSE_LIMIT = 500

# Relative size of a negative stationary entry still blamed on round-off.
_ROUNDOFF = 1e-10
# GMRES: relative residual, Krylov space per restart, restarts.
_GMRES_TOLERANCE = 1e-12
_GMRES_RESTART = 100
_GMRES_RESTARTS = 60


def linear_solver(
    matrix: sp.spmatrix, method: Method, order: IntArray | None = None
) -> Solver:
    """Return a function that solves ``matrix x = b`` for a given ``b``.

    Parameters
    ----------
    matrix
        A square non-singular sparse matrix (a generator with states removed
        or shifted, so an M-matrix up to sign).
    method
        ``"direct"`` factors once with sparse LU; ``"iterative"`` runs GMRES
        with a symmetric Gauss-Seidel preconditioner on each call.
    order
        For ``"direct"``: an elimination order of the unknowns (from
        `nested_dissection`); ``None``: SuperLU's minimum degree on
        ``A + A^T``.

    Raises
    ------
    ConvergenceError
        (From the returned function) GMRES stopped above its tolerance.
    """
    csc = sp.csc_matrix(matrix)
    if method == "iterative":
        return _gmres_solver(csc)
    if order is None:
        # Minimum degree on A^T + A: on two-dimensional (queue, orbit) grids
        # about half the fill-in of COLAMD.
        factor = spla.splu(csc, permc_spec="MMD_AT_PLUS_A")
        return lambda rhs: np.asarray(factor.solve(rhs), dtype=np.float64)
    permuted = csc[order][:, order].tocsc()
    factor = spla.splu(permuted, permc_spec="NATURAL")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)

    def solve(rhs: FloatArray) -> FloatArray:
        return np.asarray(factor.solve(rhs[order])[inverse], dtype=np.float64)

    return solve


def nested_dissection(coordinates: IntArray, leaf: int = 64) -> IntArray:
    """Return an elimination order of lattice states: halves first, separators last.

    Parameters
    ----------
    coordinates
        ``(states, dimensions)`` integer coordinates such that every
        transition changes each coordinate by at most 1.
    leaf
        Sets of at most this many states are not split further.

    Returns
    -------
    numpy.ndarray
        A permutation of ``0..states-1``.

    Notes
    -----
    Removing the states whose widest coordinate equals its median leaves
    two halves with no transition between them (a coordinate moves by at
    most 1); ordering each half recursively before the separator confines
    the LU fill to the separators [George1973]. On the three-dimensional
    chains with orphans this gives several times less fill and time than
    minimum degree.
    """
    pieces: list[IntArray] = []
    stack: list[tuple[IntArray, bool]] = [(np.arange(coordinates.shape[0]), False)]
    while stack:
        states, done = stack.pop()
        if done or states.size <= leaf:
            pieces.append(states)
            continue
        points = coordinates[states]
        low, high = points.min(axis=0), points.max(axis=0)
        axis = int(np.argmax(high - low))
        if high[axis] == low[axis]:
            pieces.append(states)
            continue
        column = points[:, axis]
        middle = max(int(np.median(column)), int(low[axis]) + 1)
        # Last in, first out: the lower half is ordered first, the separator last.
        stack.append((states[column == middle], True))
        stack.append((states[column > middle], False))
        stack.append((states[column < middle], False))
    return np.concatenate(pieces)


def restrict_order(order: IntArray | None, keep: BoolArray) -> IntArray | None:
    """Return ``order`` restricted to the kept states, renumbered among them."""
    if order is None:
        return None
    renumbered = np.cumsum(keep) - 1
    return np.asarray(renumbered[order[keep[order]]], dtype=np.int64)


def _gmres_solver(matrix: sp.csc_matrix) -> Solver:
    """GMRES with one symmetric Gauss-Seidel sweep as the preconditioner."""
    # The triangles of the matrix factor without fill-in: solving with them
    # is one forward and one backward Gauss-Seidel sweep.
    lower = spla.splu(sp.tril(matrix, format="csc"), permc_spec="NATURAL",
                      diag_pivot_thresh=0.0)  # fmt: skip
    upper = spla.splu(sp.triu(matrix, format="csc"), permc_spec="NATURAL",
                      diag_pivot_thresh=0.0)  # fmt: skip
    diagonal = matrix.diagonal()
    preconditioner = spla.LinearOperator(
        matrix.shape, lambda v: upper.solve(diagonal * lower.solve(v))
    )

    def solve(rhs: FloatArray) -> FloatArray:
        iterations = 0

        def count(_: object) -> None:
            nonlocal iterations
            iterations += 1

        solution, info = spla.gmres(
            matrix, rhs, M=preconditioner, rtol=_GMRES_TOLERANCE, atol=0.0,
            restart=_GMRES_RESTART, maxiter=_GMRES_RESTARTS, callback=count,
            callback_type="pr_norm",
        )  # fmt: skip
        if info != 0:
            residual = float(np.linalg.norm(matrix @ solution - rhs))
            scale = max(float(np.linalg.norm(rhs)), np.finfo(float).tiny)
            raise ConvergenceError("GMRES (Gauss-Seidel)", iterations, residual / scale)
        return np.asarray(solution, dtype=np.float64)

    return solve


def _reduced_system(
    generator: sp.csr_matrix, reference: int
) -> tuple[sp.csc_matrix, FloatArray, BoolArray]:
    """Return ``(A, b, keep)``: ``pi Q = 0`` with ``pi[reference] = 1`` moved right.

    Deleting the reference state's balance equation and fixing its
    probability leaves a non-singular system for the other states; the
    transposed generator is column diagonally dominant, so LU needs little
    pivoting.
    """
    transposed = generator.T.tocsc()
    keep = np.ones(generator.shape[0], dtype=bool)
    keep[reference] = False
    matrix = transposed[keep][:, keep].tocsc()
    rhs = -transposed[:, [reference]].toarray().ravel()[keep]
    return matrix, rhs, keep


def _assemble(solution: FloatArray, keep: BoolArray, reference: int) -> FloatArray:
    """Insert the reference state's 1 and normalise.

    A reference state of tiny probability makes the others huge: where they
    overflow, the vector comes back unnormalised, with its infinite entries
    marking the probable states that the caller takes as the next reference.
    A sum that is not positive gives NaN throughout.
    """
    full = np.empty(keep.size)
    full[keep] = solution
    full[reference] = 1.0
    if not np.all(np.isfinite(full)):
        return full
    with np.errstate(over="ignore"):
        total = float(full.sum())
    if math.isinf(total):
        return full * math.inf
    if total <= 0.0:
        return np.full(keep.size, np.nan)
    return full / total


def stationary_distribution(
    generator: sp.csr_matrix,
    *,
    method: Method = "direct",
    order: IntArray | None = None,
) -> FloatArray:
    """Return the stationary distribution ``pi`` of a generator.

    Parameters
    ----------
    generator
        CSR generator with zero row sums and one recurrent class.
    method
        ``"direct"`` or ``"iterative"`` (module docstring).
    order
        Elimination order of the states for ``"direct"`` (`linear_solver`).

    Returns
    -------
    numpy.ndarray
        ``pi``, non-negative, summing to 1.

    Raises
    ------
    ConvergenceError
        The iterative method stopped above its tolerance, or no reference
        state gave a finite solution.

    Notes
    -----
    One balance equation is dropped and the probability of its state, the
    *reference*, fixed to 1. The system left is non-singular, but its
    conditioning is about ``max(pi) / pi_ref``: elimination cancels in the
    pivots of states that rarely reach the reference, and with ``pi_ref``
    near 1e-20 (an empty system at high load) LU returns noise. So the
    reference is a probable state: the end of the most likely path from
    state 0 (`_probable_state`), then, if the solution shows a state more
    than a thousand times as probable, that state [Stewart2009].
    """
    if generator.shape[0] == 1:
        return np.ones(1)
    reference = _probable_state(generator)
    tried: set[int] = set()
    result = np.full(generator.shape[0], np.nan)
    for _ in range(_REFERENCE_ATTEMPTS):
        tried.add(reference)
        result = _solve_with_reference(generator, reference, method, order)
        if not np.all(np.isfinite(result)):
            following = _next_reference(generator, result, tried)
            if following is None:
                break
            reference = following
            continue
        best = int(np.argmax(result))
        if result[reference] >= _REFERENCE_SHARE * result[best] or best in tried:
            return _clean_probabilities(result)
        reference = best
    if np.all(np.isfinite(result)):
        return _clean_probabilities(result)
    raise ConvergenceError(
        f"stationary solve relative to state {reference}", len(tried), math.nan
    )


# A reference state this much less probable than the most probable one costs
# about three digits; beyond it the solve is repeated relative to the latter.
_REFERENCE_SHARE = 1e-3
_REFERENCE_ATTEMPTS = 4


def _probable_state(generator: sp.csr_matrix, start: int = 0) -> int:
    """Return a state of high probability: the end of the most likely path.

    From ``start`` the walk takes, state after state, the transition of the
    largest rate until it closes a cycle; it then returns the state of that
    cycle with the smallest exit rate (where the chain stays longest). In a
    birth-death chain the cycle straddles the mode of ``pi`` (where the birth
    rate falls below the death rate); in general it ends near a stable point
    of the mean drift, a well of ``pi``.
    """
    indptr, indices, data = generator.indptr, generator.indices, generator.data
    diagonal = generator.diagonal()
    seen: dict[int, int] = {}
    path: list[int] = []
    state = start
    while state not in seen:
        seen[state] = len(path)
        path.append(state)
        row = slice(indptr[state], indptr[state + 1])
        rates = np.where(indices[row] == state, -np.inf, data[row])
        if rates.size == 0 or not np.any(rates > 0.0):
            return state
        state = int(indices[row][int(np.argmax(rates))])
    cycle = np.array(path[seen[state] :])
    return int(cycle[np.argmin(np.abs(diagonal[cycle]))])


def _next_reference(
    generator: sp.csr_matrix, failed: FloatArray, tried: set[int]
) -> int | None:
    """Return another reference after a solve that failed, or None.

    An overflowed solve marks far more probable states with infinite
    entries: the first untried one. A solve with nothing to go by (a pivot
    that vanished, NaN throughout) tries the state left most slowly, the
    smallest exit rate, which in a chain with a strong drift is where the
    drift ends.
    """
    for state in np.flatnonzero(np.isposinf(failed)).tolist():
        if state not in tried:
            return int(state)
    slowest = int(np.argmin(np.abs(generator.diagonal())))
    return None if slowest in tried else slowest


def _solve_with_reference(
    generator: sp.csr_matrix, reference: int, method: Method, order: IntArray | None
) -> FloatArray:
    """Return ``pi`` solved relative to ``reference`` (NaN where that failed)."""
    matrix, rhs, keep = _reduced_system(generator, reference)
    try:
        raw = linear_solver(matrix, method, restrict_order(order, keep))(rhs)
    except RuntimeError:
        # SuperLU met an exactly zero pivot: the same cancellation, worse.
        return np.full(generator.shape[0], np.nan)
    result = _assemble(raw, keep, reference)
    if np.any(result < -_ROUNDOFF * np.abs(result).max()):
        # Clearly negative probabilities: the solution is noise.
        return np.full(generator.shape[0], np.nan)
    return result


def _clean_probabilities(result: FloatArray) -> FloatArray:
    """Clip round-off negatives to zero and renormalise; warn about real ones."""
    lowest = float(result.min())
    if lowest < -_ROUNDOFF * float(result.max()):
        warnings.warn(
            f"the stationary solution has a negative entry ({lowest:.3g}) beyond "
            "round-off: the chain is badly conditioned and summaries may be "
            "inaccurate",
            RuntimeWarning,
            stacklevel=3,
        )
    clipped = np.clip(result, 0.0, None)
    return np.asarray(clipped / clipped.sum(), dtype=np.float64)


def _reaches(adjacency: sp.csr_matrix, sources: BoolArray) -> BoolArray:
    """Return the states from which a path in ``adjacency`` leads into ``sources``."""
    size = adjacency.shape[0]
    if not np.any(sources):
        return np.zeros(size, dtype=bool)
    # One breadth-first search on the reversed graph from an extra hub node
    # (index ``size``) with an edge to every source: linear in the edges.
    edges = adjacency.tocoo()
    targets = np.flatnonzero(sources)
    rows = np.concatenate([edges.col, np.full(targets.size, size)])
    cols = np.concatenate([edges.row, targets])
    graph = sp.csr_matrix(
        (np.ones(rows.size), (rows, cols)), shape=(size + 1, size + 1)
    )
    order = csgraph.breadth_first_order(
        graph, size, directed=True, return_predecessors=False
    )
    reached = np.zeros(size + 1, dtype=bool)
    reached[order] = True
    return reached[:size]


def expected_hitting_times(
    generator: sp.csr_matrix,
    target: BoolArray,
    *,
    method: Method = "direct",
    order: IntArray | None = None,
) -> FloatArray:
    """Return the expected time to reach ``target`` from every state.

    Parameters
    ----------
    generator
        CSR generator with zero row sums.
    target
        Boolean mask of the target states.
    method
        ``"direct"`` or ``"iterative"`` (module docstring).
    order
        Elimination order of the states for ``"direct"`` (`linear_solver`).

    Returns
    -------
    numpy.ndarray
        ``h[i]``: 0 on the target, ``inf`` where the target is missed with
        positive probability, else the solution of ``Q_BB h_B = -1`` on the
        other states ``B``.
    """
    times = np.zeros(generator.shape[0])
    adjacency = generator.copy()
    adjacency.setdiag(0.0)
    adjacency.eliminate_zeros()
    # States that cannot reach the target, and every state that can reach one
    # of those, miss the target with positive probability: infinite mean.
    stuck = ~_reaches(adjacency, target)
    infinite = _reaches(adjacency, stuck) & ~target
    rest = ~target & ~infinite
    times[infinite] = math.inf
    if np.any(rest):
        block = generator[rest][:, rest]
        solve = linear_solver(block, method, restrict_order(order, rest))
        times[rest] = solve(-np.ones(int(rest.sum())))
    return times


def propagate(
    generator: sp.csr_matrix, initial: FloatArray, times: FloatArray
) -> Iterator[FloatArray]:
    """Yield ``p(t) = p(0) exp(Q t)`` at each of the increasing ``times``.

    Each step multiplies by the exponential of the increment with
    `scipy.sparse.linalg.expm_multiply` (a truncated Taylor series with
    scaling [AlMohyHigham2011]), so no matrix exponential is ever formed.
    """
    transposed = generator.T.tocsr()
    current = np.asarray(initial, dtype=np.float64)
    now = 0.0
    for time in times:
        step = float(time) - now
        if step > 0.0:
            current = spla.expm_multiply(transposed * step, current)
            # Round-off leaves entries of order -1e-17: keep a probability law.
            current = np.clip(current, 0.0, None)
            current = current / current.sum()
        now = float(time)
        yield current


def total_variation(first: FloatArray, second: FloatArray) -> float:
    """Return the total-variation distance ``sum |p - q| / 2``."""
    return 0.5 * float(np.abs(first - second).sum())


def slowest_decay_rate(
    generator: sp.csr_matrix,
    stationary: FloatArray,
    *,
    method: Method = "direct",
    order: IntArray | None = None,
) -> float:
    """Return the spectral gap: ``-Re`` of the non-zero eigenvalue nearest zero.

    Parameters
    ----------
    generator
        CSR generator with zero row sums and one recurrent class.
    stationary
        Its stationary distribution ``pi``.
    method, order
        The linear solver of the shift-invert step (`linear_solver`).

    Returns
    -------
    float
        The gap, in the generator's rate unit.

    Notes
    -----
    The eigenvalue ``0`` of the generator belongs to ``pi``; every other
    eigenvalue has a negative real part, and the one with the largest real
    part sets the slowest exponential decay of ``p(t) - pi``.

    A queue's generator is far from normal (a birth-death chain of load 0.7
    and 1,400 states has eigenvector condition numbers beyond 1e100, and a
    dense eigensolver returns a gap four times too small), so the
    eigenvalues are computed on the balanced generator ``S = D Q D^-1``,
    ``D = diag(sqrt(pi))``: the same eigenvalues, and a symmetric matrix when
    the chain is reversible (every birth-death queue) [Stewart2009]. Its
    entries ``sqrt(pi_i / pi_j) Q_ij`` join neighbouring states only, so
    they stay moderate. States with ``pi < 1e-250`` (beyond double range
    once balanced) are dropped first, with the rates into them: the gap is
    then that of the chain cut where ``pi`` falls below 1e-250 (a birth-death
    queue of load 0.7 cut at 1,615 instead of 2,000 states: a relative change
    of 4e-5).

    Small chains use a dense eigensolver (the symmetric one when ``S`` is
    symmetric). Large ones use ARPACK in shift-invert mode around a small
    shift ``s > 0`` on ``P (S - s I)^-1 P`` with ``P = I - sqrt(pi)
    sqrt(pi)^T``: the projection removes the stationary direction, whose
    eigenvalue ``-1/s`` would swamp the others, so the largest eigenvalues
    ``1 / (lambda - s)`` found belong to the non-zero ``lambda`` nearest 0.
    """
    kept = stationary > _NEGLIGIBLE_MASS
    if int(kept.sum()) < 2:
        return math.inf
    balanced, root = _balanced(generator, stationary, kept)
    if balanced.shape[0] <= DENSE_LIMIT:
        values = _dense_nonzero_eigenvalues(balanced)
    else:
        values = _eigenvalues_near_zero(
            balanced, root, method, restrict_order(order, kept)
        )
    return max(0.0, -float(np.max(values.real)))


# States less likely than this are dropped before balancing (sqrt(1e-250)
# leaves room for the ratios of neighbours within double range).
_NEGLIGIBLE_MASS = 1e-250


def _balanced(
    generator: sp.csr_matrix, stationary: FloatArray, kept: BoolArray
) -> tuple[sp.csr_matrix, FloatArray]:
    """Return ``S = D Q D^-1`` on the kept states, and ``sqrt(pi)`` there."""
    block = generator[kept][:, kept].tocsr()
    # Rates into dropped states go: the rows of the kept block sum to 0 again.
    block.setdiag(0.0)
    block.eliminate_zeros()
    exits = np.asarray(block.sum(axis=1)).ravel()
    block = (block - sp.diags(exits)).tocsr()
    law = stationary[kept] / stationary[kept].sum()
    root = np.sqrt(law)
    balanced = sp.diags(root) @ block @ sp.diags(1.0 / root)
    return sp.csr_matrix(balanced), root


def _dense_nonzero_eigenvalues(balanced: sp.csr_matrix) -> NDArray[np.complex128]:
    """Return every eigenvalue of a small balanced generator but the stationary 0."""
    dense = balanced.toarray()
    asymmetry = np.abs(dense - dense.T).max()
    if asymmetry <= 1e-12 * np.abs(dense).max():
        values = scipy.linalg.eigvalsh(0.5 * (dense + dense.T)).astype(complex)
    else:
        values = scipy.linalg.eigvals(dense)
    # The eigenvalue of smallest modulus, dropped, is the stationary 0.
    return np.asarray(values[np.argsort(np.abs(values))][1:], dtype=np.complex128)


def _eigenvalues_near_zero(
    balanced: sp.csr_matrix,
    root: FloatArray,
    method: Method,
    order: IntArray | None,
) -> NDArray[np.complex128]:
    """Return the non-zero eigenvalues of a large balanced generator nearest 0."""
    size = balanced.shape[0]
    # A shift just right of 0 keeps S - shift I non-singular (similar to a
    # strictly diagonally dominant matrix) with the gap among the nearest.
    shift = 1e-9 * float(np.abs(balanced.diagonal()).max())
    solve = linear_solver(balanced - shift * sp.identity(size), method, order)

    def project(vector: FloatArray) -> FloatArray:
        return np.asarray(vector - root * float(root @ vector), dtype=np.float64)

    inverse = spla.LinearOperator(
        (size, size), matvec=lambda v: project(solve(project(v))), dtype=float
    )
    count = min(6, size - 2)
    try:
        values = spla.eigs(
            inverse, k=count, which="LM", return_eigenvectors=False, tol=1e-10,
            maxiter=2000,
        )  # fmt: skip
    except spla.ArpackNoConvergence as exc:
        values = exc.eigenvalues
        if values.size < 1:
            raise ConvergenceError("ARPACK (shift-invert)", 2000, math.nan) from None
    # The projected-out stationary direction has eigenvalue ~0: skip it.
    values = values[np.abs(values) > 1e-6 * np.abs(values).max()]
    return np.asarray(shift + 1.0 / values, dtype=np.complex128)
