"""Benchmark (not a timed test): single-thread fp32 GEMM rate on this CPU by shape, forward and both
backward products, against what the CPU grid's calibration says of GEMMs.

    python tests/bench_cpu_gemm.py [--calibration CAL.json]

Each shape is timed as the profiler times a step (one torch thread, the thread's CPU clock, the fastest of
20 samples of 5 calls). The forward product is x @ w.T ([M, K] x [K, N]), the input gradient g @ w
([M, N] x [N, K]) and the weight gradient g.T @ x ([N, M] x [M, K], a reduction over the M rows). With a
calibration (``trsim calibrate validate/data/cpu_grid/*.json --out CAL.json``), each row also shows the
rate the fitted time model gives the forward product: ``matmul_efficiency`` x peak x K / (K + ``matmul_half_k``)
and the fixed ``matmul_overhead_s`` a call, so the two can be compared shape by shape.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

ROWS = (16, 48, 176, 352, 1728)                  # token rows: the CPU grid's from HiMix's text-only rows up
SHAPES = ((128, 256), (256, 512), (512, 256))   # (K, N): the grid's projection and MLP widths


def fastest(fn, samples: int = 20, calls: int = 5) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(samples):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - t0) / calls)
    return best


def model_rate(cal: dict | None, M: int, N: int, K: int) -> float | None:
    """GFLOP/s the calibrated time model gives an [M, K] x [K, N] GEMM on the CPU preset (compute part)."""
    if cal is None:
        return None
    from trsim.simulator.efficiency import gemm_time
    from trsim.validate.fit import base_hardware
    vals = {k: (v["value"] if isinstance(v, dict) else v) for k, v in cal["parameters"].items()}
    hw = base_hardware(cal.get("hardware_preset", "cpu")).model_copy(update=vals)
    return 2 * M * N * K / float(gemm_time(M, N, K, hw, elem_bytes=4.0)) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", help="a CPU calibration file to compare with")
    args = ap.parse_args(argv)
    cal = json.loads(open(args.calibration).read()) if args.calibration else None
    torch.set_num_threads(1)
    print(f"{'M':>5} {'K':>4} {'N':>4}  forward  dgrad  wgrad  (GFLOP/s)" + ("   model, forward" if cal else ""))
    for M in ROWS:
        for K, N in SHAPES:
            x, w, g = torch.randn(M, K), torch.randn(N, K), torch.randn(M, N)
            flops = 2 * M * N * K
            rates = [flops / fastest(f) / 1e9 for f in (lambda: x @ w.t(), lambda: g @ w, lambda: g.t() @ x)]
            m = model_rate(cal, M, N, K)
            print(f"{M:>5} {K:>4} {N:>4}  " + "  ".join(f"{r:6.1f}" for r in rates)
                  + (f"   {m:6.1f}" if m is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
