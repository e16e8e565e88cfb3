"""Derive the efficiency constants of the hardware presets from public kernel benchmarks, reproducibly.

    python -m trsim.validate.derive_presets            # print the derived constants and the fit quality
    python -m trsim.validate.derive_presets --check    # exit 1 if presets.py differs from the derivation

Inputs (read from ``../shared/data/published/`` beside the repository, or ``$TRSIM_PUBLISHED_DATA``):

* ``mamf_gemm_peak_ml_engineering.csv`` (stas00/ml-engineering, "Maximum Achievable Matmul FLOPS"): the
  best bf16 / fp8 GEMM rate each GPU reached and the shape that reached it. The GEMM ceiling is that
  rate over the peak and over the shape factor the model gives that shape (tile and wave quantisation,
  K fall-off), the fixed time per kernel taken out first, so the model reproduces the measured maximum at
  its own shape exactly; the measured rate over peak x ceiling caps every GEMM's whole time
  (``matmul_max_shape_factor``), since the table's shape search found nothing faster.
* ``validate/data/h200/partial/llama*.json`` (this project's own H200 profile, see below) for the GEMM
  model's fixed time per kernel, ``matmul_overhead_s`` (device time inside each GEMM kernel whatever its
  size: ramp-up, the first tiles' loads, the epilogue's stores), which the mamf maximum cannot show: a least-squares fit in log time of the matmul
  class time the profiler measured (cuBLAS under PyTorch, forward and backward of 52 cases with 100-7,000
  token rows) to the model's, the ceiling re-derived from mamf inside the fit (the mamf rate is a
  wall-clock mean that includes the fixed time). 3.38 us; every GPU preset takes it (the H100, A100
  and B200 as an extrapolation: a fixed cost in time rather than in cycles, from the library training
  stacks use). ``matmul_half_k`` stays stated physics (below).
* ``validate/data/h100_gemm_xla.csv`` (transcribed from OpenXLA's default matmul performance table, cited
  there): bf16 GEMM kernel times measured with CUPTI over every shape with m, n, k in 256-4096 on an H100.
  A check of the model's form, not a source of preset values: with its two fixed constants fitted to the
  table (robust loss: a few split-K shapes the tile model does not have) the model prices its 125
  unbatched rows at a 2.8% median. XLA's own GEMM kernels carry a larger fixed time (about 5.5 us) and
  reduction fall-off than cuBLAS does in this project's profile, so the constants are the library's, not
  the GPU's, and are not carried over.
* ``flashattention_kernel_tflops.csv`` (Dao-AILab/flash-attention benchmark figures): kernel TFLOP/s by
  sequence length, head dim, causal mask and implementation. For each GPU and kernel, the attention
  curve (ceiling, head-dim factors, half_keys, causal_half_keys) is a least-squares fit in log space to
  the forward+backward rows. Kernels with forward-only rows (H100 FlashAttention-3 and cuDNN) get their
  forward+backward rate as their forward rate times FlashAttention-2's forward+backward / forward ratio on
  the same GPU, head dim, mask and length (head dim 256, which has no backward row, uses head dim 128's).
  The masked-attention factor is the memory-efficient kernel's (xformers) rate over FlashAttention-2's on
  the A100 without a causal mask, the only table with both.

* ``validate/data/b200_gemm_in_training.csv`` (transcribed from SimuMax's B200 system file, cited there):
  bf16 GEMM efficiencies measured inside Megatron-LM training steps on B200. Their median ratio to the
  shape model (with the mamf-derived ceiling and cap) is the b200 preset's ``sustained_compute_fraction``:
  under continuous training load a B200 holds about two thirds of the microbenchmark's rate (its 1,000 W
  budget limits clocks), which scales every GEMM and attention rate of the preset. The other GPUs have no
  in-training kernel table; their fraction stays 1 (the mamf rates are taken as sustained).

* ``validate/data/a100_nvlink_allreduce.csv`` (transcribed from vTrain's all-reduce look-up table, cited
  there): NCCL all-reduce times on 2, 4 and 8 A100s of one NVLink node, 1-256 MiB. The collective
  latency (``collective_base_latency_s`` once per collective, ``collective_latency_s`` per ring step inside
  a node) and bus efficiency (``collective_efficiency``) of the A100, H100 and H200 presets are a
  least-squares fit in log space of the simulator's own all-reduce (collectives.py) to that table; the
  H100 and H200 (NVLink 4) have no table and take the A100's. The B200's come from SimuMax's in-training
  fits on its B200 node (``validate/data/b200_collectives_in_training.csv``): the all-gather and
  reduce-scatter efficiency restated over 900 GB/s (SimuMax divides by GiB/s), the latency fitted to its
  per-op latencies at 2-8 ranks. Outside 1-256 MiB (the cross-entropy's KB-sized all-reduces, small
  sends) the latency is extrapolated. A ring step between nodes costs ``internode_latency_s``, the
  constant of NCCL 2.8-era src/graph/tuning.cc (hwLat[NET][Ring][Simple] = 9.6 us; later releases use
  14): no table here measures it.

* ``validate/data/h200/partial/llama*.json`` (this project's own H200 profile, its GPU campaign): the
  memory-bound kernels' measured time over 52 cases (one depth, micro-batch 1-8), fitted as bytes over
  bandwidth plus a fixed time for each kernel (``memory_bound_kernel_s``; the kernels counted by the model,
  ``costs.executor_layer_kernels``, 85 a layer at the median). Eager PyTorch elementwise and normalisation
  kernels reach 0.59 of the H200's 4.8 TB/s and pay about 2.5 us each; bytes alone, with one scale, miss
  the small-batch cases by half. The fixed time goes to every GPU preset, like the GEMM's. The efficiency
  is not carried to the other GPUs: the H200 has the H100's SMs and 43% more bandwidth, and kernels that
  cannot keep that much traffic in flight reach a smaller share of it than they would of the H100's; the
  others keep 0.8 (no table).

Nothing here reads a training run: the training-run sources are the validation suite's, and tuning to
them is what this derivation avoids.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from trsim.simulator import efficiency as E
from trsim.simulator.presets import HARDWARE_PRESETS, NCCL_NETWORK_STEP_S  # NCCL_NETWORK_STEP_S: one network ring step

DATA_ENV = "TRSIM_PUBLISHED_DATA"

# GPU preset -> (row of the mamf table for bf16, row for fp8, streaming multiprocessors, attention family)
GPUS = {
    "a100-sxm-80g": ("NVIDIA A100 SXM", None, 108, "A100-SXM4-80GB"),
    "h100-sxm": ("NVIDIA H100 SXM", "NVIDIA H100 SXM", 132, "H100-SXM5-80GB"),
    # the mamf table notes "H200 is the same" on the H100 bf16 row; same SM count and clocks
    "h200": ("NVIDIA H100 SXM", "NVIDIA H200 SXM", 132, "H100-SXM5-80GB"),
    # no public attention-kernel table for B200: the H100 fractions of peak, an extrapolation (README)
    "b200": ("NVIDIA B200 SXM", "NVIDIA B200 SXM", 148, "H100-SXM5-80GB"),
}
# datasheet dense peaks (FLOP/s) the mamf percentages are quoted against
PEAKS = {"a100-sxm-80g": (312e12, None), "h100-sxm": (989e12, 1979e12), "h200": (989e12, 1979e12),
         "b200": (2250e12, 4500e12)}

# Stated physics, not fitted: a tile's pipeline prologue plus epilogue costs about two K-steps of 16-32
# elements each, so half_k = 32 elements (the mamf best shapes include K = 1024, where this costs 3%).
PHYSICS = {"matmul_half_k": 32.0}
# An H100 GEMM kernel table over 125 shapes (OpenXLA's perf table): the check of the GEMM model's form
XLA_H100_GEMMS = Path(__file__).resolve().parent / "data" / "h100_gemm_xla.csv"

# attention implementations in the kernel table -> trsim kernel names
KERNELS = {"flashattention1": "flash1", "flashattention2": "flash2", "flashattention3": "flash3", "cudnn": "cudnn",
           "xformers": "mem_efficient", "pytorch_standard": "math"}


def data_dir() -> Path:
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "published"


def read_table(path: Path) -> list[dict]:
    """The rows of a CSV whose leading ``#`` lines cite its source."""
    with open(path) as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def read_csv(name: str, directory: Path | None = None) -> list[dict]:
    return read_table((directory or data_dir()) / name)


class _Shape:
    """The GEMM attributes efficiency.gemm_time reads: a ceiling of 1 unless set, no memory roofline
    unless a bandwidth is set."""
    def __init__(self, units, half_k=0.0, overhead=0.0, peak=1.0, bandwidth=np.inf):
        self.compute_units, self.matmul_tiles, self.sustained_compute_fraction = units, E.GPU_TILES, 1.0
        self.matmul_efficiency, self.matmul_half_k, self.matmul_overhead_s = 1.0, half_k, overhead
        self.matmul_max_shape_factor, self.peak_flops = None, peak
        self.memory_bandwidth, self.bandwidth_efficiency = bandwidth, 1.0


def _mamf_row(preset: str, dtype: str, directory: Path | None = None) -> dict | None:
    bf16_row, fp8_row = GPUS[preset][:2]
    name = bf16_row if dtype == "bf16" else fp8_row
    if name is None:
        return None
    return next(r for r in read_csv("mamf_gemm_peak_ml_engineering.csv", directory)
                if r["accelerator"] == name and r["dtype"] == dtype)


def mamf_ceiling(row: dict, units: int, peak: float, half_k: float, overhead: float) -> tuple[float, float]:
    """(ceiling, cap) that make the model reproduce a mamf maximum at its own shape: the mamf rate is a
    mean wall-clock rate, fixed time per kernel included, so the compute part is the rest; the cap
    (``matmul_max_shape_factor``) is the measured rate over peak x ceiling."""
    M, N, K = (int(x) for x in row["best_shape_MxNxK"].split("x"))
    shape = float(E.gemm_efficiency(M, N, K, _Shape(units, half_k)))
    total_s = 2.0 * M * N * K / (float(row["mamf_tflops"]) * 1e12)
    if not 0.0 <= overhead < total_s:
        raise ValueError(f"a fixed time per GEMM kernel of {overhead} s leaves no compute in the mamf kernel "
                         f"({total_s} s)")
    return 2.0 * M * N * K / ((total_s - overhead) * peak * shape), shape * (total_s - overhead) / total_s


def gemm_table_rows(path: Path) -> np.ndarray:
    """(m, n, k, seconds) of a GEMM kernel table's unbatched rows (b = 1: the simulator's GEMMs are plain
    2-D products; batched rows share no weights, so their traffic is not a linear layer's)."""
    return np.array([(int(r["m"]), int(r["n"]), int(r["k"]),
                      2.0 * int(r["m"]) * int(r["n"]) * int(r["k"]) / (float(r["tflops"]) * 1e12))
                     for r in read_table(path) if int(r["b"]) == 1])


def gemm_table_model(rows: np.ndarray, preset: str, half_k: float, overhead: float,
                     directory: Path | None = None) -> np.ndarray:
    """The simulator's GEMM time (efficiency.gemm_time) for each table row, with the ceiling and cap
    re-derived from the mamf maximum for these two constants; the datasheet bandwidth at the unmeasured
    0.8 for the memory roofline."""
    units, peak = GPUS[preset][2], PEAKS[preset][0]
    hw = _Shape(units, half_k, overhead, peak, HARDWARE_PRESETS[preset]["memory_bandwidth"])
    hw.bandwidth_efficiency = 0.8
    hw.matmul_efficiency, hw.matmul_max_shape_factor = mamf_ceiling(_mamf_row(preset, "bf16", directory), units,
                                                                    peak, half_k, overhead)
    return E.gemm_time(rows[:, 0], rows[:, 1], rows[:, 2], hw)


def xla_gemm_check(directory: Path | None = None) -> dict:
    """The GEMM model's form against the XLA H100 table: its two fixed constants fitted to the table, and
    the absolute error of every unbatched row at the fit (the split-K shapes included)."""
    rows = gemm_table_rows(XLA_H100_GEMMS)

    def resid(p):
        return np.log(gemm_table_model(rows, "h100-sxm", p[0], p[1] * 1e-6, directory) / rows[:, 3])

    fit = least_squares(resid, [64.0, 5.0], bounds=([0.0, 0.0], [4096.0, 100.0]), loss="soft_l1", f_scale=0.1)
    err = np.abs(np.expm1(resid(fit.x))) * 100
    return {"matmul_half_k": round(float(fit.x[0]), 1), "matmul_overhead_s": round(float(fit.x[1]) * 1e-6, 8),
            "rows": int(len(rows)), "median_abs_pct": round(float(np.median(err)), 2),
            "p90_abs_pct": round(float(np.percentile(err, 90)), 2), "max_abs_pct": round(float(err.max()), 2)}


def derive_gemm_fixed(directory: Path | None = None) -> dict:
    """``matmul_overhead_s`` from this project's H200 profile: the matmul class time measured per case
    against the model's (half_k stated physics, the ceiling re-derived from mamf for each trial value)."""
    from trsim.validate.fit import base_hardware
    cases = h200_profile()
    base = base_hardware("h200")
    measured = np.array([c.measured["classes_s"]["matmul"] for c in cases])
    half_k, row = PHYSICS["matmul_half_k"], _mamf_row("h200", "bf16", directory)

    def priced(overhead):
        ceiling, cap = mamf_ceiling(row, GPUS["h200"][2], PEAKS["h200"][0], half_k, overhead)
        hw = base.model_copy(update=dict(matmul_half_k=half_k, matmul_overhead_s=overhead,
                                         matmul_efficiency=ceiling, matmul_max_shape_factor=cap))
        return np.array([c.predict(hw)["time_s"]["matmul"] for c in cases])

    fit = least_squares(lambda p: np.log(priced(p[0] * 1e-6) / measured), [2.0], bounds=([0.0], [100.0]))
    overhead = round(float(fit.x[0]) * 1e-6, 8)
    err = np.abs(priced(overhead) / measured - 1) * 100
    before = np.abs(priced(0.0) / measured - 1) * 100
    return {"matmul_overhead_s": overhead, "cases": int(len(cases)), "median_abs_pct": round(float(np.median(err)), 2),
            "max_abs_pct": round(float(err.max()), 2), "without_median_abs_pct": round(float(np.median(before)), 2),
            "without_max_abs_pct": round(float(before.max()), 2)}


def derive_gemm(directory: Path | None = None, fixed: dict | None = None) -> dict[str, dict]:
    fixed = fixed if fixed is not None else derive_gemm_fixed(directory)
    out = {}
    for preset, (_, _, units, _) in GPUS.items():
        half_k, overhead = PHYSICS["matmul_half_k"], fixed["matmul_overhead_s"]
        res = {"compute_units": units, "matmul_half_k": half_k, "matmul_overhead_s": overhead}
        for key, dtype, peak in (("matmul_efficiency", "bf16", PEAKS[preset][0]),
                                 ("matmul_efficiency_fp8", "fp8_e4m3fn", PEAKS[preset][1])):
            row = _mamf_row(preset, dtype, directory)
            if row is None:
                continue
            ceiling, cap = mamf_ceiling(row, units, peak, half_k, overhead)
            res[key] = round(ceiling, 4)
            res[key.replace("matmul_efficiency", "matmul_max_shape_factor")] = round(cap, 4)
        out[preset] = res
    return out


IN_TRAINING_GEMMS = {"b200": Path(__file__).resolve().parent / "data" / "b200_gemm_in_training.csv"}


def derive_sustained(gemm: dict[str, dict]) -> dict[str, dict]:
    """preset -> sustained_compute_fraction (the median of measured / modelled over the in-training GEMM
    table) with the table's size and spread; 1.0 where no table exists."""
    out = {}
    for preset, (_, _, units, _) in GPUS.items():
        path = IN_TRAINING_GEMMS.get(preset)
        if path is None:
            out[preset] = {"sustained_compute_fraction": 1.0}
            continue
        rows = read_table(path)
        hw = _Shape(units, gemm[preset]["matmul_half_k"], gemm[preset]["matmul_overhead_s"], PEAKS[preset][0])
        hw.matmul_efficiency = gemm[preset]["matmul_efficiency"]
        hw.matmul_max_shape_factor = gemm[preset]["matmul_max_shape_factor"]
        m, n, k = (np.array([float(r[c]) for r in rows]) for c in ("m", "n", "k"))
        modelled = 2.0 * m * n * k / (E.gemm_time(m, n, k, hw) * hw.peak_flops)  # fixed time per kernel included
        ratio = np.array([float(r["efficiency"]) for r in rows]) / modelled
        out[preset] = {"sustained_compute_fraction": round(float(np.median(ratio)), 4), "rows": len(rows),
                       "ratio_min": round(float(ratio.min()), 4), "ratio_max": round(float(ratio.max()), 4)}
    return out


ALLREDUCE_TABLE = Path(__file__).resolve().parent / "data" / "a100_nvlink_allreduce.csv"


def _allreduce_rows() -> np.ndarray:
    """(ranks, bytes, seconds) of the measured A100 all-reduces."""
    return np.array([(int(r["ranks"]), float(r["bytes"]), float(r["time_ns"]) * 1e-9)
                     for r in read_table(ALLREDUCE_TABLE)])


def allreduce_model(rows: np.ndarray, base: float, step: float, efficiency: float) -> np.ndarray:
    """The simulator's all-reduce time (collectives.all_reduce) for each measured row."""
    from types import SimpleNamespace

    from trsim.simulator import collectives as C
    link = HARDWARE_PRESETS["a100-sxm-80g"]["intranode_bandwidth"]  # the NVLink the all-reduces ran on
    hw = SimpleNamespace(collective_base_latency_s=base, collective_latency_s=step, internode_latency_s=0.0,
                         collective_efficiency=efficiency)
    return np.array([float(C.all_reduce(nbytes, C.Ring(int(n), 1, link), hw)) for n, nbytes, _ in rows])


B200_COLLECTIVES = Path(__file__).resolve().parent / "data" / "b200_collectives_in_training.csv"
GIB = 2 ** 30  # SimuMax divides by its bandwidth figure in GiB/s: its efficiencies are over 900 GiB/s


def derive_collectives() -> dict:
    """Collective constants per GPU preset, with the fits' quality. A100, H100, H200: latency and bus
    efficiency fitted together to the measured A100 all-reduce table (no table for NVLink 4: the H100 and
    H200 take the A100's). B200: SimuMax's in-training fits on its B200 node, its gather / reduce-scatter
    efficiency restated over 900 GB/s, its latency fitted to their per-op latencies at 2-8 ranks. A network
    ring step: NCCL's constant."""
    rows = _allreduce_rows()

    def resid(p):
        return np.log(allreduce_model(rows, p[0] * 1e-6, p[1] * 1e-6, p[2]) / rows[:, 2])

    fit = least_squares(resid, [20.0, 5.0, 0.7], bounds=([0, 0, 0.05], [1e3, 1e3, 1.0]))
    base, step, eff = float(fit.x[0]) * 1e-6, float(fit.x[1]) * 1e-6, float(fit.x[2])
    err = np.abs(np.expm1(fit.fun)) * 100
    a100 = {"collective_base_latency_s": round(base, 8), "collective_latency_s": round(step, 8),
            "collective_efficiency": round(eff, 3), "rows": int(len(rows)),
            "median_abs_pct": round(float(np.median(err)), 2), "max_abs_pct": round(float(err.max()), 2)}
    ops = {o["op"]: o for o in read_table(B200_COLLECTIVES)}
    n = np.arange(2, 9, dtype=float)
    laps = np.concatenate([np.full(n.size, float(o["scale"])) for o in ops.values()])
    want = np.concatenate([float(o["scale"]) * (n + float(o["offset"])) * float(o["latency_per_step_us"])
                           + float(o["fixed_latency_us"]) for o in ops.values()])
    nn = np.tile(n, len(ops))
    bfit = least_squares(lambda p: np.log((p[0] + laps * (nn - 1) * p[1]) / want), [20.0, 5.0],
                         bounds=([0, 0], [1e3, 1e3]))
    berr = np.abs(np.expm1(bfit.fun)) * 100
    gather_eff = np.mean([float(ops[k]["efficiency"]) for k in ("all_gather", "reduce_scatter")]) * GIB / 1e9
    b200 = {"collective_base_latency_s": round(float(bfit.x[0]) * 1e-6, 8),
            "collective_latency_s": round(float(bfit.x[1]) * 1e-6, 8), "collective_efficiency": round(gather_eff, 3),
            "points": int(want.size), "median_abs_pct": round(float(np.median(berr)), 2),
            "max_abs_pct": round(float(berr.max()), 2)}
    keys = ("collective_base_latency_s", "collective_latency_s", "collective_efficiency")
    presets = {p: {k: v[k] for k in keys} | {"internode_latency_s": NCCL_NETWORK_STEP_S}
               for p, v in (("a100-sxm-80g", a100), ("h100-sxm", a100), ("h200", a100), ("b200", b200))}
    return {"a100_all_reduce_table": a100, "b200_in_training": b200, "presets": presets}


H200_PROFILE = Path(__file__).resolve().parent / "data" / "h200" / "partial"


@functools.lru_cache(maxsize=1)
def h200_profile() -> tuple:
    """The profiled cases of this project's H200 campaign (read once: the GEMM fixed cost and the memory
    bandwidth are both derived from them)."""
    from trsim.validate.commands import _load
    return tuple(_load(sorted(str(p) for p in H200_PROFILE.glob("llama*.json")))[1])


def derive_memory_bound() -> dict:
    """The memory-bound kernels' two constants from this project's H200 profile: measured class time =
    bytes / (bandwidth x ``bandwidth_efficiency``) + ``memory_bound_kernel_s`` x kernels, the kernels
    counted per case by the model (costs.executor_layer_kernels, which tests hold to the counted
    executor), least squares on the log ratio as for the GEMM fixed time. Beside it, the scale alone
    (no fixed time per kernel) for comparison."""
    from trsim.validate.fit import base_hardware
    cases = h200_profile()
    base = base_hardware("h200")
    measured = np.array([c.measured["classes_s"]["memory_bound"] for c in cases])

    def priced(kernel_s):
        hw = base.model_copy(update=dict(memory_bound_kernel_s=kernel_s))
        return np.array([c.predict(hw)["time_s"]["memory_bound"] for c in cases])

    by_bytes = priced(0.0)
    kernels = (priced(1e-6) - by_bytes) / 1e-6
    fit = least_squares(lambda p: np.log((p[0] * by_bytes + p[1] * 1e-6 * kernels) / measured), [1.0, 2.0],
                        bounds=([1e-3, 0.0], [1e3, 100.0]), x_scale=[1.0, 1.0], xtol=1e-12, ftol=1e-12)
    scale, kernel_s = float(fit.x[0]), round(float(fit.x[1]) * 1e-6, 8)
    efficiency = round(base.bandwidth_efficiency / scale, 3)
    err = np.abs((by_bytes * base.bandwidth_efficiency / efficiency + kernel_s * kernels) / measured - 1) * 100
    alone = float(np.exp(np.median(np.log(measured / by_bytes))))
    before = np.abs(alone * by_bytes / measured - 1) * 100
    return {"h200": {"bandwidth_efficiency": efficiency, "memory_bound_kernel_s": kernel_s, "cases": int(len(cases)),
                     "kernels_per_layer_median": round(float(np.median(kernels / [c.model.num_layers for c in cases])), 1),
                     "median_abs_pct": round(float(np.median(err)), 2), "max_abs_pct": round(float(err.max()), 2),
                     "scale_only_median_abs_pct": round(float(np.median(before)), 2),
                     "scale_only_max_abs_pct": round(float(before.max()), 2)}}


def _kernel_rows(directory: Path | None = None):
    """(gpu, pass, kernel) -> arrays of (seq_len, head_dim, causal, tflops)."""
    table: dict[tuple, list] = {}
    for r in read_csv("flashattention_kernel_tflops.csv", directory):
        try:
            v = float(r["tflops_per_s"])
        except ValueError:  # OOM
            continue
        key = (r["gpu"], r["pass"], r["implementation"])
        table.setdefault(key, []).append((int(r["seq_len"]), int(r["head_dim"]), r["causal"] == "True", v))
    return {k: np.array(v, dtype=float) for k, v in table.items()}


def forward_backward_rows(directory: Path | None = None) -> dict[tuple[str, str], np.ndarray]:
    """(gpu family, trsim kernel) -> rows (seq_len, head_dim, causal, fwd+bwd TFLOP/s), measured or
    converted from forward-only rows as the module docstring says."""
    t = _kernel_rows(directory)
    out = {}
    for (gpu, pas, impl), rows in t.items():
        if impl in KERNELS and pas == "fwd+bwd":
            out[(gpu, KERNELS[impl])] = rows
    for (gpu, pas, impl), rows in t.items():
        if pas != "fwd" or impl not in ("flashattention3", "cudnn"):
            continue
        fa2_f, fa2_fb = t[(gpu, "fwd", "flashattention2")], t[(gpu, "fwd+bwd", "flashattention2")]
        conv = []
        for n, hd, c, v in rows:
            hd_fb = hd if np.any(fa2_fb[:, 1] == hd) else 128
            f = fa2_f[(fa2_f[:, 0] == n) & (fa2_f[:, 1] == hd) & (fa2_f[:, 2] == c), 3]
            fb = fa2_fb[(fa2_fb[:, 0] == n) & (fa2_fb[:, 1] == hd_fb) & (fa2_fb[:, 2] == c), 3]
            fref = fa2_f[(fa2_f[:, 0] == n) & (fa2_f[:, 1] == hd_fb) & (fa2_f[:, 2] == c), 3]
            if f.size and fb.size and fref.size:
                conv.append((n, hd, c, v * fb[0] / fref[0]))
        out[(gpu, KERNELS[impl])] = np.array(conv)
    return out


def attention_curve(p, rows) -> np.ndarray:
    """Model fraction of peak for p = (ceiling, f64, f256, half_keys, causal_half_keys, causal_factor)."""
    eff, f64, f256, h, hc, cf = p
    n, hd, c = rows[:, 0], rows[:, 1], rows[:, 2].astype(bool)
    fac = E.head_dim_factor(hd, (f64, 1.0, f256))
    return eff * fac * np.where(c, cf, 1.0) * n / (n + h + np.where(c, hc, 0.0))


def fit_attention(rows: np.ndarray, peak: float) -> dict:
    meas = rows[:, 3] * 1e12 / peak
    has256 = bool(np.any(rows[:, 1] == 256))
    has64 = bool(np.any(rows[:, 1] == 64))

    def resid(p):
        q = [p[0], p[1] if has64 else 1.0, p[2] if has256 else 1.0, p[3], p[4], p[5]]
        return np.log(attention_curve(q, rows) / meas)
    sol = least_squares(resid, [meas.max(), 1.0, 1.0, 200.0, 500.0, 0.9],
                        bounds=([1e-3, 0.1, 0.1, 0.0, 0.0, 0.2], [1.5, 3.0, 3.0, 1e5, 1e5, 1.0]))
    p = sol.x
    f64 = p[1] if has64 else 1.0
    # head dims not measured for this kernel take the nearest measured one's factor
    f256 = p[2] if has256 else 1.0
    return {"attention_efficiency": round(float(p[0]), 4),
            "attention_head_dim_factors": [round(float(f64), 4), 1.0, round(float(f256), 4)],
            "attention_half_keys": round(float(p[3]), 1), "attention_causal_half_keys": round(float(p[4]), 1),
            "attention_causal_factor": round(float(p[5]), 4)}


def derive_attention(directory: Path | None = None) -> dict[str, dict]:
    """gpu family -> kernel -> curve constants, plus the masked-attention factor."""
    rows = forward_backward_rows(directory)
    peaks = {"A100-SXM4-80GB": 312e12, "H100-SXM5-80GB": 989e12}
    out: dict[str, dict] = {}
    for (gpu, kernel), r in sorted(rows.items()):
        out.setdefault(gpu, {})[kernel] = fit_attention(r, peaks[gpu])
    a = rows[("A100-SXM4-80GB", "mem_efficient")]
    b = rows[("A100-SXM4-80GB", "flash2")]
    ratios = [x[3] / y[3] for x in a for y in b if not x[2] and not y[2] and x[0] == y[0] and x[1] == y[1]]
    masked = round(float(np.median(ratios)), 4)
    for gpu in out:
        if "mem_efficient" not in out[gpu]:  # same penalty against the GPU's own FlashAttention-2
            out[gpu]["mem_efficient"] = {**out[gpu]["flash2"], "attention_efficiency":
                                         round(out[gpu]["flash2"]["attention_efficiency"] * masked, 4)}
    return {"kernels": out, "attention_masked_factor": masked}


def fit_quality(directory: Path | None = None) -> list[dict]:
    """Per GPU and kernel: median and max absolute error (%) of the fitted curve on its table rows."""
    rows = forward_backward_rows(directory)
    att = derive_attention(directory)["kernels"]
    peaks = {"A100-SXM4-80GB": 312e12, "H100-SXM5-80GB": 989e12}
    out = []
    for (gpu, kernel), r in sorted(rows.items()):
        c = att[gpu][kernel]
        p = [c["attention_efficiency"], c["attention_head_dim_factors"][0], c["attention_head_dim_factors"][2],
             c["attention_half_keys"], c["attention_causal_half_keys"], c["attention_causal_factor"]]
        pred = attention_curve(p, r) * peaks[gpu] / 1e12
        err = np.abs(pred / r[:, 3] - 1) * 100
        out.append({"gpu": gpu, "kernel": kernel, "rows": int(len(r)), "median_abs_pct": float(np.median(err)),
                    "max_abs_pct": float(err.max())})
    return out


def derive(directory: Path | None = None) -> dict:
    fixed = derive_gemm_fixed(directory)
    gemm = derive_gemm(directory, fixed)
    return {"gemm_fixed_cost": fixed, "gemm_form_check": xla_gemm_check(directory), "gemm": gemm,
            "sustained": derive_sustained(gemm),
            "attention": derive_attention(directory),
            "collectives": derive_collectives(), "memory_bound": derive_memory_bound()}


def check(derived: dict) -> list[str]:
    """Differences between the derivation and presets.py (empty when they agree)."""
    from trsim.simulator.presets import ATTENTION_KERNELS, ATTENTION_MASKED_FACTOR
    bad = []
    for preset, vals in derived["gemm"].items():
        for k, v in vals.items():
            have = HARDWARE_PRESETS.get(preset, {}).get(k)
            if have is None or not np.isclose(have, v, rtol=1e-3, atol=0.0):
                bad.append(f"HARDWARE_PRESETS[{preset!r}][{k!r}] = {have}, derived {v}")
    for preset, vals in derived["sustained"].items():
        have = HARDWARE_PRESETS.get(preset, {}).get("sustained_compute_fraction", 1.0)
        if not np.isclose(have, vals["sustained_compute_fraction"], rtol=1e-3):
            bad.append(f"HARDWARE_PRESETS[{preset!r}]['sustained_compute_fraction'] = {have}, derived "
                       f"{vals['sustained_compute_fraction']}")
    for gpu, kernels in derived["attention"]["kernels"].items():
        for kernel, vals in kernels.items():
            have = ATTENTION_KERNELS.get(gpu, {}).get(kernel)
            if have is None or any(not np.allclose(np.asarray(have[k], float), np.asarray(v, float), rtol=1e-3)
                                   for k, v in vals.items()):
                bad.append(f"ATTENTION_KERNELS[{gpu!r}][{kernel!r}] = {have}, derived {vals}")
    for preset, vals in derived["memory_bound"].items():
        have = HARDWARE_PRESETS[preset]["bandwidth_efficiency"]
        if not np.isclose(have, vals["bandwidth_efficiency"], atol=0.002):
            bad.append(f"HARDWARE_PRESETS[{preset!r}]['bandwidth_efficiency'] = {have}, derived {vals['bandwidth_efficiency']}")
        for gpu in GPUS:  # the fixed time per kernel is carried to every GPU preset, like the GEMM's
            have = HARDWARE_PRESETS[gpu].get("memory_bound_kernel_s", 0.0)
            if not np.isclose(have, vals["memory_bound_kernel_s"], rtol=1e-3):
                bad.append(f"HARDWARE_PRESETS[{gpu!r}]['memory_bound_kernel_s'] = {have}, derived "
                           f"{vals['memory_bound_kernel_s']}")
    for preset, vals in derived["collectives"]["presets"].items():
        for k, v in vals.items():
            have = HARDWARE_PRESETS[preset].get(k, np.nan)
            if not np.isclose(have, v, rtol=1e-3):
                bad.append(f"HARDWARE_PRESETS[{preset!r}][{k!r}] = {have}, derived {v}")
    if not np.isclose(ATTENTION_MASKED_FACTOR, derived["attention"]["attention_masked_factor"], rtol=1e-3):
        bad.append(f"ATTENTION_MASKED_FACTOR = {ATTENTION_MASKED_FACTOR}, derived "
                   f"{derived['attention']['attention_masked_factor']}")
    return bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trsim.validate.derive_presets", description=__doc__.split("\n")[0])
    p.add_argument("--data", help=f"folder of the published CSVs (default ${DATA_ENV} or ../shared/data/published)")
    p.add_argument("--check", action="store_true", help="exit 1 if presets.py differs from the derivation")
    args = p.parse_args(argv)
    directory = Path(args.data) if args.data else None
    try:
        derived = derive(directory)
    except FileNotFoundError as exc:
        print(f"trsim: error: {exc.filename}: <file>: the published kernel tables (set --data or ${DATA_ENV})",
              file=sys.stderr)
        return 2
    if args.check:
        bad = check(derived)
        for b in bad:
            print(b)
        print("presets.py agrees with the derivation" if not bad else f"{len(bad)} difference(s)")
        return 1 if bad else 0
    print(json.dumps(derived, indent=1))
    print("attention curve fit to its kernel table (abs % error):", file=sys.stderr)
    for q in fit_quality(directory):
        print(f"  {q['gpu']:16s} {q['kernel']:14s} rows {q['rows']:3d}  median {q['median_abs_pct']:5.1f}%  "
              f"max {q['max_abs_pct']:5.1f}%", file=sys.stderr)
    g, x = derived["gemm_fixed_cost"], derived["gemm_form_check"]
    print(f"H200 profile's GEMM time ({g['cases']} cases) priced with the fitted fixed cost: median "
          f"{g['median_abs_pct']:.1f}%  max {g['max_abs_pct']:.1f}% (without it: {g['without_median_abs_pct']:.1f}% / "
          f"{g['without_max_abs_pct']:.1f}%)", file=sys.stderr)
    print(f"XLA H100 GEMM table ({x['rows']} rows), the model's form with its own two constants "
          f"(half_k {x['matmul_half_k']}, {x['matmul_overhead_s'] * 1e6:.2f} us): median {x['median_abs_pct']:.1f}%  "
          f"90th percentile {x['p90_abs_pct']:.1f}%  max {x['max_abs_pct']:.1f}%", file=sys.stderr)
    m = derived["memory_bound"]["h200"]
    print(f"H200 profile's memory-bound time ({m['cases']} cases) priced with {m['memory_bound_kernel_s'] * 1e6:.2f} us "
          f"a kernel at {m['bandwidth_efficiency']} of the bandwidth: median {m['median_abs_pct']:.1f}%  max "
          f"{m['max_abs_pct']:.1f}% (bytes alone, one scale: {m['scale_only_median_abs_pct']:.1f}% / "
          f"{m['scale_only_max_abs_pct']:.1f}%)", file=sys.stderr)
    c, b = derived["collectives"]["a100_all_reduce_table"], derived["collectives"]["b200_in_training"]
    print(f"A100 all-reduce table ({c['rows']} rows) priced by the fitted constants: median {c['median_abs_pct']:.1f}%  "
          f"max {c['max_abs_pct']:.1f}%", file=sys.stderr)
    print(f"B200 in-training collective latencies ({b['points']} points) by the fitted latency: median "
          f"{b['median_abs_pct']:.1f}%  max {b['max_abs_pct']:.1f}%", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
