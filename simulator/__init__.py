"""trsim's analytic simulator: token-reduction schedules to FLOPs, memory, step time and budget.

    from trsim.simulator import load_scenario, simulate
    result = simulate(load_scenario("scenarios/paper_vila_u_3b.yaml"))
"""
from .config import ModelSpec, HardwareSpec, Scenario, load_scenario, scenario_from_dict
from .errors import ScenarioError
from .plan import FULL, KV_ONLY, SKIP, Layout, Plan, compile_points, compile_schedule, select_layers
from .simulate import SimulationResult, ScheduleResult, evaluate, simulate

__all__ = ["load_scenario", "scenario_from_dict", "simulate", "evaluate", "Scenario", "ModelSpec", "HardwareSpec",
           "ScenarioError", "Plan", "Layout", "compile_points", "compile_schedule", "select_layers",
           "FULL", "KV_ONLY", "SKIP", "SimulationResult", "ScheduleResult"]
