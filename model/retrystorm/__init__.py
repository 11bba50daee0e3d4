"""Queueing models that say whether a short stall becomes a lasting outage.

Queueing models of retries, timeouts and backpressure, for capacity planning
and design reviews. Time is in seconds and rates are per second throughout.
"""

from __future__ import annotations

from retrystorm.chain import (
    ChainState,
    HittingTime,
    PhaseApproximation,
    Region,
    RetryChain,
    StationaryResult,
    TransientResult,
    chain_from_scenario,
)
from retrystorm.equilibria import (
    Equilibrium,
    EquilibriumReport,
    bad_equilibrium_exists,
    boundary_wait,
    find_equilibria,
    good_equilibrium_exists,
    saturated_attempt_rate,
)
from retrystorm.erlang import (
    erlang_b,
    erlang_c,
    offered_load_for_blocking,
    servers_for_blocking,
)
from retrystorm.erlang_a import ErlangA, servers_for_abandonment
from retrystorm.errors import (
    ConvergenceError,
    InvalidParameterError,
    RetrystormError,
    ScenarioError,
    StateSpaceTooLargeError,
    UnstableSystemError,
)
from retrystorm.escape import EscapeEstimate, escape_time
from retrystorm.fluid import FluidTrajectory, simulate_fluid
from retrystorm.graph import (
    GraphAnalysis,
    GraphSpec,
    ServiceGraph,
    analyze_graph,
    blast_radius,
    default_graph,
    find_cycles,
    graph_from_file,
    graph_from_scenario,
    graph_to_dot,
    load_graph,
    node_loads,
    plot_graph,
    single_tier_graph,
    stacked_retries,
    timeout_violations,
)
from retrystorm.graph_replay import GraphReplay, replay_graph
from retrystorm.limits import Limit, Limits, compute_limits, survives_trigger
from retrystorm.mmc import MMc
from retrystorm.mmcd import MMcD
from retrystorm.mmck import MMcK
from retrystorm.retries import (
    adaptive_throttle_probability,
    attempts_per_request,
    expected_layered_attempts,
    layered_amplification,
    retry_budget_amplification,
)
from retrystorm.review import Review, judge, review_scenario
from retrystorm.scenario import (
    Scenario,
    default_scenario,
    embedded_scenario_names,
    load_scenario,
    parse_scenario,
)
from retrystorm.simulation import (
    Estimate,
    ReplicationSummary,
    SimulationTrajectory,
    goodput_by_phase,
    phase_windows,
    replicate,
    simulate_events,
)

__version__ = "0.1.0"

__all__ = [
    "ChainState",
    "ConvergenceError",
    "Equilibrium",
    "EquilibriumReport",
    "ErlangA",
    "EscapeEstimate",
    "Estimate",
    "FluidTrajectory",
    "GraphAnalysis",
    "GraphReplay",
    "GraphSpec",
    "HittingTime",
    "InvalidParameterError",
    "Limit",
    "Limits",
    "MMc",
    "MMcD",
    "MMcK",
    "PhaseApproximation",
    "Region",
    "ReplicationSummary",
    "RetryChain",
    "RetrystormError",
    "Review",
    "Scenario",
    "ScenarioError",
    "ServiceGraph",
    "SimulationTrajectory",
    "StateSpaceTooLargeError",
    "StationaryResult",
    "TransientResult",
    "UnstableSystemError",
    "__version__",
    "adaptive_throttle_probability",
    "analyze_graph",
    "attempts_per_request",
    "bad_equilibrium_exists",
    "blast_radius",
    "boundary_wait",
    "chain_from_scenario",
    "compute_limits",
    "default_graph",
    "default_scenario",
    "embedded_scenario_names",
    "erlang_b",
    "erlang_c",
    "escape_time",
    "expected_layered_attempts",
    "find_cycles",
    "find_equilibria",
    "good_equilibrium_exists",
    "goodput_by_phase",
    "graph_from_file",
    "graph_from_scenario",
    "graph_to_dot",
    "judge",
    "layered_amplification",
    "load_graph",
    "load_scenario",
    "node_loads",
    "offered_load_for_blocking",
    "parse_scenario",
    "phase_windows",
    "plot_graph",
    "replay_graph",
    "replicate",
    "retry_budget_amplification",
    "review_scenario",
    "saturated_attempt_rate",
    "servers_for_abandonment",
    "servers_for_blocking",
    "simulate_events",
    "simulate_fluid",
    "single_tier_graph",
    "stacked_retries",
    "survives_trigger",
    "timeout_violations",
]
