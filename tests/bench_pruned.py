"""Benchmark (not a timed test): how much of a schedule's ideal speedup the executor realises on this CPU.

    python tests/bench_pruned.py [--rounds 9]                  # prints the table
    pytest tests/bench_pruned.py --benchmark-enable            # the same, under pytest-benchmark

ideal = (forward + backward FLOPs of the baseline) / (those of the schedule), from the simulator's
analytic counts (which both FLOP counters match exactly); realised = baseline step time / schedule step
time, each the median of ``rounds`` forward+backward steps, the models' steps interleaved so that a
disturbance hits all of them alike. share = realised / ideal (1 = every FLOP saved is time saved).
"""
from __future__ import annotations

import argparse
import statistics
import time

import pytest
import torch

from trsim.simulator import scenario_from_dict
from trsim.simulator.plan import compile_schedule
from trsim.profiler.model import Decoder, init_weights
from trsim.profiler.run import analytic_counts

SCENARIO = dict(
    name="bench-pruned",
    model=dict(num_layers=8, hidden_size=256, num_attention_heads=8, num_key_value_heads=2, intermediate_size=704,
               vocab_size=512),
    hardware=dict(preset="cpu", num_gpus=1),
    training=dict(micro_batch_size=2, global_batch_size=2, zero_stage=0, activation_bytes=4),
    tasks=dict(understanding=dict(samples=1, segments=[dict(name="system", kind="text", tokens=32),
                                                      dict(name="image", kind="image", tokens=256),
                                                      dict(name="answer", kind="text", tokens=96, target=True)]),
               generation=dict(samples=1, segments=[dict(name="prompt", kind="text", tokens=96),
                                                    dict(name="image", kind="image", tokens=256, target=True)])),
    schedules=dict(baseline={},
                   himix={"understanding": {"method": "himix", "from_layer": 2}},
                   hmgen={"generation": {"method": "hmgen", "shallow": 2}},
                   drop={"understanding": {"method": "drop", "from_layer": 2, "keep": 0.5}},
                   pyramid={"understanding": {"method": "pyramid", "stages": [[2, 0.5], [4, 0.25], [6, 0.125]]}},
                   pyramid_ranked={"understanding": {"method": "pyramid", "stages": [[2, 0.5], [4, 0.25], [6, 0.125]],
                                                     "selection": "attention"}}),
)
CASES = [("himix", "understanding"), ("drop", "understanding"), ("pyramid", "understanding"),
         ("pyramid_ranked", "understanding"), ("hmgen", "generation")]


def measure(rounds: int = 9, micro_batch: int = 2) -> list[dict]:
    scn = scenario_from_dict(SCENARIO)
    models, flops = {}, {}
    for s, t in CASES + [("baseline", "understanding"), ("baseline", "generation")]:
        plan = compile_schedule(scn, s, t)
        torch.manual_seed(0)
        m = Decoder(scn.model, plan)
        init_weights(m)
        ids, labels = m.make_batch(micro_batch, "cpu", generator=torch.Generator().manual_seed(1))
        models[(s, t)] = (m, ids, labels)
        a = analytic_counts(plan, scn.model, micro_batch, "causal", "all")
        flops[(s, t)] = a["forward"] + a["backward"]
    times = {k: [] for k in models}
    for r in range(rounds + 2):  # two warm-up rounds
        for k, (m, ids, labels) in models.items():
            m.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            m(ids, labels).backward()
            if r >= 2:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for s, t in CASES:
        ideal = flops[("baseline", t)] / flops[(s, t)]
        realised = med[("baseline", t)] / med[(s, t)]
        rows.append({"schedule": s, "task": t, "ideal": ideal, "realised": realised, "share": realised / ideal,
                     "baseline_ms": med[("baseline", t)] * 1e3, "schedule_ms": med[(s, t)] * 1e3})
    return rows


def table(rows) -> str:
    out = [f"{'schedule':<15} {'task':<13} {'ideal':>6} {'realised':>8} {'share':>6} {'baseline ms':>11} {'schedule ms':>11}"]
    for r in rows:
        out.append(f"{r['schedule']:<15} {r['task']:<13} {r['ideal']:>6.2f} {r['realised']:>8.2f} {r['share']:>6.2f} "
                   f"{r['baseline_ms']:>11.1f} {r['schedule_ms']:>11.1f}")
    return "\n".join(out)


def test_realised_share_of_ideal_speedup(benchmark):
    if benchmark.disabled:
        pytest.skip("a benchmark: run with --benchmark-enable")
    rows = benchmark.pedantic(measure, rounds=1, iterations=1)
    print("\n" + table(rows))
    for r in rows:
        benchmark.extra_info[f"{r['schedule']}/{r['task']}"] = round(r["share"], 3)
        assert r["ideal"] > 1 and r["realised"] > 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(table(measure(a.rounds)))
