"""Benchmark (not a timed test): a 10,000-point keep sweep on llama-3.2-3b, simulated end to end.

    pytest tests/bench_sweep.py --benchmark-enable
"""
import numpy as np

from trsim.simulator import load_scenario
from trsim.simulator.simulate import run_sweep

POINTS = 10_000


def test_sweep_10k_points_llama_3_2_3b(benchmark):
    scn = load_scenario("scenarios/llava_fastv_pyramid.yaml")
    scn = scn.with_overrides(model=load_scenario("scenarios/paper_vila_u_3b.yaml").model,
                             sweep=scn.sweep.model_copy(update={"range": None,
                                                                "values": list(np.linspace(0, 1, POINTS))}))
    out = benchmark(run_sweep, scn)
    assert len(out["speedup"]) == POINTS
    if benchmark.stats is not None:  # None when run with --benchmark-disable (the default here)
        benchmark.extra_info["points_per_second"] = POINTS / benchmark.stats.stats.median
