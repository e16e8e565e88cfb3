"""How fast a GEMM or an attention kernel of a given shape runs: shape-aware efficiency, numpy only.

Both models are physically motivated parametric forms with a few constants per GPU; every constant in
``presets.py`` is derived from public kernel benchmarks by ``python -m trsim.validate.derive_presets``
(see that module for the derivation, and README "Efficiency model").

GEMM ``[M, K] x [K, N]`` (output M x N, reduction K), FLOPs 2MNK:

    compute time = 2MNK / (peak x ceiling x shape(M, N) x K / (K + half_k))
    shape(M, N)  = max over the tile shapes (tm, tn) the library can pick of
                   tile_quality(tm, tn) x M N / (waves x units x tm x tn),
                   waves = ceil(ceil(M / tm) ceil(N / tn) / units)
    memory time  = (MK + KN + MN) x bytes / (bandwidth x bandwidth_efficiency)
    time         = max(compute time, memory time) + fixed time per kernel        (a roofline)
    time        >= 2MNK / (measured maximum rate x sustained fraction)           (the cap)

``M N / (waves x units x tm x tn)`` is the useful fraction of the output tiles the GPU's ``units``
(streaming multiprocessors) compute in ``waves`` rounds: tile quantisation (partial edge tiles) and wave
quantisation (a last, partly idle wave) in one expression. ``tile_quality`` is the relative speed of a
tile: its arithmetic intensity tm tn / (tm + tn) against on-chip bandwidth, I / (I + 16), normalised to
the best tile, so small tiles that avoid a partial wave are not free. ``K / (K + half_k)`` is the fixed
pipeline prologue and epilogue of each tile, amortised over the reduction. ``ceiling`` is what the best
shape reaches (below the datasheet peak: clocks under load, instruction issue, epilogue).

Attention (fused kernels; FLOPs counted as the FlashAttention benchmarks do: forward 4 x pairs x heads x
head_dim over the pairs the kernel executes, backward 2.5 x forward):

    efficiency = attention_efficiency x head_dim_factor(head_dim) x n / (n + half_keys + causal x causal_half_keys)

with ``n`` the sequence length the kernel sees (keys per query; twice that for a causal mask, whose
queries see half the keys on average). ``half_keys`` is the per-row start-up and the softmax rescaling
amortised over the key loop; ``causal_half_keys`` the diagonal blocks and the load imbalance of a
causal mask. Explicitly masked attention (an arbitrary boolean mask: the memory-efficient kernel)
runs at ``attention_masked_factor`` of the non-causal curve.
"""
from __future__ import annotations

import functools

import numpy as np

#: Tile shapes (rows x cols of the output) that cuBLAS/CUTLASS pick among on tensor-core GPUs.
GPU_TILES = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64))
#: Arithmetic-intensity constant of ``tile_quality`` (elements): a tile whose intensity tm tn / (tm + tn)
#: equals it runs at half its core rate. The same for every tensor-core GPU (shared-memory bandwidth
#: and tensor-core rate grew together from A100 to B200).
TILE_INTENSITY_HALF = 16.0
#: Head dims at which the attention head-dim factors are given; others interpolate in log2(head_dim).
HEAD_DIMS = (64, 128, 256)
ATTENTION_BACKWARD_FLOPS = 2.5   # backward FLOPs / forward FLOPs (FlashAttention benchmark convention)

DTYPE_BYTES = {"fp8": 1, "bf16": 2, "fp16": 2, "fp32": 4}


@functools.lru_cache(maxsize=64)
def tile_quality(tiles: tuple) -> tuple[float, ...]:
    """Relative speed of each tile: intensity tm tn / (tm + tn) over (intensity + TILE_INTENSITY_HALF),
    normalised to the best candidate."""
    t = np.asarray(tiles, dtype=float)
    inten = t[:, 0] * t[:, 1] / (t[:, 0] + t[:, 1])
    q = inten / (inten + TILE_INTENSITY_HALF)
    return tuple(float(x) for x in q / q.max())


def tile_capacity(M, N, units: int, tiles=GPU_TILES) -> np.ndarray:
    """Output elements the GPU computes (at full tile quality) for an M x N output with the best tile:
    units x min over tiles of waves x tm x tn / quality. Written for speed on [P, L] arrays (the sweep
    benchmark): the row-tile counts are computed once per tile height and scalar operands stay scalars."""
    row_tiles = {tm: np.ceil(M / tm) for tm in {t[0] for t in tiles}}
    best = None
    for (tm, tn), q in zip(tiles, tile_quality(tiles)):
        f = np.ceil(row_tiles[tm] * np.ceil(N / tn) / units) * (tm * tn / q)
        best = f if best is None else np.minimum(best, f)
    return units * best


def shape_factor(M, N, units: int, tiles=GPU_TILES) -> np.ndarray:
    """Useful fraction of the GPU for an M x N output: tile and wave quantisation times tile quality."""
    M = np.maximum(np.asarray(M, dtype=float), 1.0)
    N = np.maximum(np.asarray(N, dtype=float), 1.0)
    return M * N / tile_capacity(M, N, units, tiles)


def matmul_ceiling(hw, precision: str = "bf16") -> float:
    if precision == "fp8":
        fp8 = getattr(hw, "matmul_efficiency_fp8", None)
        return fp8 if fp8 is not None else hw.matmul_efficiency
    return hw.matmul_efficiency


def max_shape_factor(hw, precision: str = "bf16") -> float:
    """The largest rate any GEMM reaches, as a fraction of ``peak x ceiling`` (``inf``: no cap): the
    measured maximum achievable rate of a brute-force shape search (mamf), its fixed time per kernel
    included. The ceiling is derived so that the model reproduces the maximum at the shape that reached
    it; wave quantisation makes the model pessimistic there (GEMM libraries soften it with stream-K and
    split-K schedules), so without the cap other shapes would come out faster than anything the shape
    search measured. As a factor of the ceiling, the cap moves with a calibrated ceiling."""
    cap = getattr(hw, "matmul_max_shape_factor_fp8", None) if precision == "fp8" else None
    cap = cap if cap is not None else getattr(hw, "matmul_max_shape_factor", None)
    return float("inf") if cap is None else cap


def gemm_efficiency(M, N, K, hw, precision: str = "bf16") -> np.ndarray:
    """Fraction of the peak the compute part of an [M,K]x[K,N] GEMM runs at: the tile model and the K
    fall-off under the ceiling (no memory roofline, no fixed time per kernel, no cap)."""
    K = np.maximum(np.asarray(K, dtype=float), 1.0)
    shape = shape_factor(M, N, hw.compute_units, hw.matmul_tiles) * K / (K + hw.matmul_half_k)
    return matmul_ceiling(hw, precision) * shape * hw.sustained_compute_fraction


def gemm_time(M, N, K, hw, peak: float | None = None, precision: str = "bf16", elem_bytes: float = 2.0):
    """Seconds of one [M, K] x [K, N] GEMM: the roofline of compute at the shape's efficiency and of its
    traffic, plus a fixed time per kernel (``matmul_overhead_s``: ramp-up, the first tiles' loads, the
    epilogue). 2MNK / (peak x ceiling x shape x K / (K + half_k)) simplifies to 2 x capacity x (K + half_k)
    / (peak x ceiling); the cap bounds the whole from below by 2MNK / (peak x sustained x ceiling x
    max_shape_factor), the measured maximum rate at the sustained fraction. A GEMM with an empty
    dimension launches nothing and costs nothing."""
    empty = np.asarray(M) * np.asarray(N) * np.asarray(K) <= 0
    M = np.maximum(M, 1.0)
    N = np.maximum(N, 1.0)
    K = np.maximum(K, 1.0)
    # numpy scalars: where the smallest positive inputs multiply to a rate of zero (underflow), the time is inf,
    # which callers refuse as a price beyond float64 (trsim.cli.check_finite), not a ZeroDivisionError
    rate = np.float64(hw.peak_flops if peak is None else peak) * hw.sustained_compute_fraction * matmul_ceiling(
        hw, precision)
    cap = tile_capacity(M, N, hw.compute_units, hw.matmul_tiles)
    compute = cap * (K + hw.matmul_half_k) * (2.0 / rate)
    memory = ((M + N) * K + M * N) * (elem_bytes / (np.float64(hw.memory_bandwidth) * hw.bandwidth_efficiency))
    t = np.maximum(compute, memory) + hw.matmul_overhead_s
    top = max_shape_factor(hw, precision)
    if top != float("inf"):
        t = np.maximum(t, M * N * K * (2.0 / (rate * top)))
    return np.where(empty, 0.0, t) if np.any(empty) else t


def head_dim_factor(head_dim, factors) -> np.ndarray:
    x = np.log2(np.asarray(head_dim, dtype=float))
    return np.interp(x, np.log2(HEAD_DIMS), np.asarray(factors, dtype=float))


def attention_efficiency(seq_len, head_dim, causal, hw, masked=False) -> np.ndarray:
    """Fraction of the peak a fused attention kernel runs at, forward+backward (FLOPs 3.5 x forward).

    seq_len: the sequence length the kernel sees (keys per query row for a full mask; 2 x that, the
    sequence, for a causal one)."""
    n = np.maximum(np.asarray(seq_len, dtype=float), 1.0)
    causal = np.asarray(causal, dtype=bool)
    half = hw.attention_half_keys + np.where(causal, hw.attention_causal_half_keys, 0.0)
    eff = (hw.attention_efficiency * hw.sustained_compute_fraction
           * head_dim_factor(head_dim, hw.attention_head_dim_factors) * n / (n + half))
    return np.where(masked, eff * hw.attention_masked_factor, eff)
