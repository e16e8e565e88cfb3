"""Model and hardware presets.

Model values are those of the public Hugging Face ``config.json`` files of each checkpoint.
Hardware values are dense bf16 tensor-core peaks (and dense fp8 peaks where the GPU has fp8 tensor
cores) and memory bandwidths from the vendors'
datasheets. GEMM and attention efficiencies are derived from public kernel benchmarks by
``python -m trsim.validate.derive_presets`` (see ``trsim.simulator.efficiency`` for the model); the
remaining terms are uncalibrated starting points (see ``trsim calibrate``).
"""
from __future__ import annotations

from .efficiency import GPU_TILES

# name -> (source checkpoint, fields)
MODEL_PRESETS: dict[str, dict] = {
    "llama-2-7b": dict(source="meta-llama/Llama-2-7b-hf (VILA-U 7B backbone)", num_layers=32, hidden_size=4096,
                       num_attention_heads=32, num_key_value_heads=32, head_dim=128, intermediate_size=11008,
                       mlp="swiglu", vocab_size=32000, tie_word_embeddings=False),
    "llama-3.2-3b": dict(source="meta-llama/Llama-3.2-3B", num_layers=28, hidden_size=3072,
                         num_attention_heads=24, num_key_value_heads=8, head_dim=128, intermediate_size=8192,
                         mlp="swiglu", vocab_size=128256, tie_word_embeddings=True),
    "llama-3-8b": dict(source="meta-llama/Meta-Llama-3-8B", num_layers=32, hidden_size=4096,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336,
                       mlp="swiglu", vocab_size=128256, tie_word_embeddings=False),
    "qwen2.5-7b": dict(source="Qwen/Qwen2.5-7B", num_layers=28, hidden_size=3584,
                       num_attention_heads=28, num_key_value_heads=4, head_dim=128, intermediate_size=18944,
                       mlp="swiglu", vocab_size=152064, tie_word_embeddings=False),
    "gemma-7b": dict(source="google/gemma-7b", num_layers=28, hidden_size=3072,
                     num_attention_heads=16, num_key_value_heads=16, head_dim=256, intermediate_size=24576,
                     mlp="geglu", vocab_size=256000, tie_word_embeddings=True),
    "phi-1.5": dict(source="microsoft/phi-1_5 (Show-o backbone)", num_layers=24, hidden_size=2048,
                    num_attention_heads=32, num_key_value_heads=32, head_dim=64, intermediate_size=8192,
                    mlp="gelu", vocab_size=51200, tie_word_embeddings=False),
    "deepseek-llm-7b": dict(source="deepseek-ai/deepseek-llm-7b-base (Janus-Pro-7B backbone)", num_layers=30,
                            hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, head_dim=128,
                            intermediate_size=11008, mlp="swiglu", vocab_size=102400, tie_word_embeddings=False),
    "chameleon-7b": dict(source="facebook/chameleon-7b", num_layers=32, hidden_size=4096,
                         num_attention_heads=32, num_key_value_heads=32, head_dim=128, intermediate_size=11008,
                         mlp="swiglu", vocab_size=65536, tie_word_embeddings=False),
    "emu3-8b": dict(source="BAAI/Emu3-Gen", num_layers=32, hidden_size=4096,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336,
                    mlp="swiglu", vocab_size=184622, tie_word_embeddings=False),
}

_GiB = 2**30

#: NCCL's latency per ring step over the network (NCCL 2.8-era src/graph/tuning.cc,
#: hwLat[NET][Ring][Simple] = 9.6 us): the default of every profile, GPU presets included
NCCL_NETWORK_STEP_S = 9.6e-6

# Attention-kernel curves per GPU family and kernel: derived from the FlashAttention kernel tables by
# `python -m trsim.validate.derive_presets` (do not edit by hand; `--check` verifies these numbers).
ATTENTION_KERNELS: dict[str, dict[str, dict]] = {
    "A100-SXM4-80GB": {
        "flash1": dict(attention_efficiency=0.2743, attention_head_dim_factors=(1.2142, 1.0, 1.0),
                 attention_half_keys=89.7, attention_causal_half_keys=221.1, attention_causal_factor=0.9337),
        "flash2": dict(attention_efficiency=0.6503, attention_head_dim_factors=(0.8861, 1.0, 1.0),
                 attention_half_keys=181.1, attention_causal_half_keys=313.5, attention_causal_factor=0.9651),
        "math": dict(attention_efficiency=0.2653, attention_head_dim_factors=(0.5774, 1.0, 1.0),
                 attention_half_keys=211.5, attention_causal_half_keys=0.0, attention_causal_factor=0.4075),
        "mem_efficient": dict(attention_efficiency=0.3127, attention_head_dim_factors=(0.7948, 1.0, 1.0),
                 attention_half_keys=76.4, attention_causal_half_keys=170.9, attention_causal_factor=0.9343),
    },
    "H100-SXM5-80GB": {
        "cudnn": dict(attention_efficiency=0.5764, attention_head_dim_factors=(0.676, 1.0, 0.9508),
                 attention_half_keys=221.2, attention_causal_half_keys=301.8, attention_causal_factor=0.9441),
        "flash1": dict(attention_efficiency=0.139, attention_head_dim_factors=(1.1798, 1.0, 1.0),
                 attention_half_keys=36.6, attention_causal_half_keys=189.8, attention_causal_factor=0.9538),
        "flash2": dict(attention_efficiency=0.3488, attention_head_dim_factors=(0.8716, 1.0, 1.0),
                 attention_half_keys=196.3, attention_causal_half_keys=342.5, attention_causal_factor=0.9699),
        "flash3": dict(attention_efficiency=0.6567, attention_head_dim_factors=(0.7102, 1.0, 1.0741),
                 attention_half_keys=388.3, attention_causal_half_keys=515.9, attention_causal_factor=0.987),
        "math": dict(attention_efficiency=0.1637, attention_head_dim_factors=(0.5667, 1.0, 1.0),
                 attention_half_keys=281.5, attention_causal_half_keys=0.0, attention_causal_factor=0.3938),
        "mem_efficient": dict(attention_efficiency=0.1684, attention_head_dim_factors=(0.8716, 1.0, 1.0),
                 attention_half_keys=196.3, attention_causal_half_keys=342.5, attention_causal_factor=0.9699),
    },
}
ATTENTION_MASKED_FACTOR = 0.4827  # memory-efficient kernel / FlashAttention-2, A100

# GPU preset -> the attention-kernel family its curves come from (B200: no public kernel table; the H100
# fractions of peak, an extrapolation stated in README "Efficiency model").
ATTENTION_FAMILY = {"a100-sxm-80g": "A100-SXM4-80GB", "h100-sxm": "H100-SXM5-80GB", "h200": "H100-SXM5-80GB",
                    "b200": "H100-SXM5-80GB"}
DEFAULT_ATTENTION_KERNEL = "flash2"

# Terms no kernel table pins down; shared by the GPU presets until a calibration file replaces them.
_DEFAULT_EFFICIENCY = dict(
    attention_backward_ratio=2.5,  # backward / forward FLOPs of the attention kernel (the benchmarks' convention)
    bandwidth_efficiency=0.8,      # fraction of datasheet bandwidth memory-bound kernels reach (h200: measured)
    gather_efficiency=0.5,         # same, for index_select / index_copy of token rows
    layer_overhead_s=60e-6,        # device-side gaps between a layer's kernels (launch latency), fwd + bwd
    step_overhead_s=2e-3,          # fixed cost per micro-batch (embedding, loss, host work)
    # host dispatch of one layer, forward + backward: the ~200 operators an eager PyTorch layer dispatches
    # (counted on this project's executor: tests/test_profiler.py) at 10 µs of host work each (5-25 µs is
    # the range usually quoted; a third of them are views that launch no kernel). A stack that captures
    # CUDA graphs or fuses more dispatches less: set it lower
    host_layer_s=2e-3,
    comm_overlap=0.7,              # fraction of gradient communication hidden behind backward
    # a ring collective's latency (collectives.py, NCCL's structure): once per collective, per ring step
    # inside a node, per ring step between nodes. The first two fitted to NCCL all-reduces measured on
    # 2-8 A100s (vTrain's look-up table, validate/data/a100_nvlink_allreduce.csv: 6% median error; b200:
    # its own), the third NCCL's own model constant for a network step (python -m trsim.validate.derive_presets)
    collective_base_latency_s=3.508e-05,
    collective_latency_s=2.46e-06,
    internode_latency_s=NCCL_NETWORK_STEP_S,
    # NCCL bus bandwidth over NVLink's per-direction bandwidth for large ring collectives, fitted with the
    # latency to the A100 all-reduce table (b200: SimuMax's in-training gathers and reduce-scatters, 0.723)
    collective_efficiency=0.675,
)


# streaming multiprocessors an NCCL collective holds while it runs (one CTA per channel): 24, as an Nsight
# Systems trace of an all-gather beside a cuBLAS GEMM on an H100 shows (NVIDIA developer forum, "Compute-
# communication overlap causes severe GEMM performance degradation because of tail effect", 2025; the order
# of DeepSeek-V3's report, which gives its communication kernels 20 of an H800's 132 SMs). The channel count
# follows the links, not the SMs, so every GPU preset takes the same count; compute overlapping a collective
# runs on the rest (collectives.contention)
COLLECTIVE_COMPUTE_UNITS = 24

# fixed device time of each memory-bound kernel (norms, elementwise ops, casts), whatever its bytes: fitted
# with the bandwidth to this project's H200 profile (python -m trsim.validate.derive_presets) and carried to
# every GPU preset, as the GEMM's fixed time is (launch, ramp-up and tail are the GPU's, not the kernel's)
MEMORY_BOUND_KERNEL_S = 2.45e-06


def _gpu(preset: str, *, compute_units: int, matmul_efficiency: float, matmul_half_k: float,
         matmul_overhead_s: float, matmul_max_shape_factor: float, matmul_efficiency_fp8: float | None = None,
         matmul_max_shape_factor_fp8: float | None = None, sustained_compute_fraction: float = 1.0,
         measured: dict | None = None, **datasheet) -> dict:
    """A GPU preset: datasheet rates, the GEMM constants derived from the mamf table and the default
    attention kernel's curve (python -m trsim.validate.derive_presets); ``measured``: terms of
    _DEFAULT_EFFICIENCY that a table measured on this GPU replaces."""
    kernel = ATTENTION_KERNELS[ATTENTION_FAMILY[preset]][DEFAULT_ATTENTION_KERNEL]
    return dict(**datasheet, compute_units=compute_units, matmul_tiles=GPU_TILES, matmul_efficiency=matmul_efficiency,
                matmul_efficiency_fp8=matmul_efficiency_fp8, matmul_half_k=matmul_half_k, matmul_overhead_s=matmul_overhead_s,
                matmul_max_shape_factor=matmul_max_shape_factor, matmul_max_shape_factor_fp8=matmul_max_shape_factor_fp8,
                sustained_compute_fraction=sustained_compute_fraction,
                memory_bound_kernel_s=MEMORY_BOUND_KERNEL_S, collective_compute_units=COLLECTIVE_COMPUTE_UNITS,
                attention_kernel=DEFAULT_ATTENTION_KERNEL, **kernel, attention_masked_factor=ATTENTION_MASKED_FACTOR,
                **{**_DEFAULT_EFFICIENCY, **(measured or {})})


# compute_units, matmul_efficiency(_fp8), matmul_max_shape_factor(_fp8), matmul_half_k and matmul_overhead_s:
# derived by python -m trsim.validate.derive_presets (the fixed time per GEMM kernel from this project's H200 profile).
HARDWARE_PRESETS: dict[str, dict] = {
    "a100-sxm-80g": _gpu("a100-sxm-80g", source="NVIDIA A100 SXM4 80GB datasheet", peak_flops=312e12,
                         memory_bandwidth=2.039e12, memory_bytes=80 * _GiB, intranode_bandwidth=300e9,
                         internode_bandwidth=25e9, gpus_per_node=8,
                         compute_units=108, matmul_efficiency=0.8932, matmul_max_shape_factor=0.9731,
                         matmul_half_k=32.0, matmul_overhead_s=3.38e-06),
    "h100-sxm": _gpu("h100-sxm", source="NVIDIA H100 SXM5 80GB datasheet", peak_flops=989e12, peak_flops_fp8=1979e12,
                     memory_bandwidth=3.35e12,
                     memory_bytes=80 * _GiB, intranode_bandwidth=450e9, internode_bandwidth=50e9, gpus_per_node=8,
                     compute_units=132, matmul_efficiency=0.8509, matmul_efficiency_fp8=0.8633, matmul_half_k=32.0, matmul_overhead_s=3.38e-06,
                     matmul_max_shape_factor=0.9441, matmul_max_shape_factor_fp8=0.821),
    "h200": _gpu("h200", source="NVIDIA H200 SXM 141GB datasheet", peak_flops=989e12, peak_flops_fp8=1979e12,
                 memory_bandwidth=4.8e12,
                 memory_bytes=141e9, intranode_bandwidth=450e9, internode_bandwidth=50e9, gpus_per_node=8,
                 compute_units=132, matmul_efficiency=0.8509, matmul_efficiency_fp8=0.9149, matmul_half_k=32.0, matmul_overhead_s=3.38e-06,
                 matmul_max_shape_factor=0.9441, matmul_max_shape_factor_fp8=0.8027,
                 # memory-bound kernels measured on this GPU by this project's campaign (validate/data/h200):
                 # 0.59 of 4.8 TB/s beside the fixed time a kernel, where the other presets keep the unmeasured 0.8
                 measured=dict(bandwidth_efficiency=0.593)),
    "b200": _gpu("b200", source="NVIDIA DGX B200 datasheet (per GPU: 2.25 PFLOP/s dense bf16, 8 TB/s HBM3e, "
                 "180 GB, NVLink 5 900 GB/s per direction; dense fp8 4.5 PFLOP/s)", peak_flops=2250e12, peak_flops_fp8=4500e12,
                 memory_bandwidth=8.0e12,
                 memory_bytes=180e9, intranode_bandwidth=900e9, internode_bandwidth=50e9, gpus_per_node=8,
                 compute_units=148, matmul_efficiency=0.8161, matmul_efficiency_fp8=0.7962, matmul_half_k=32.0, matmul_overhead_s=3.38e-06,
                 matmul_max_shape_factor=0.9504, matmul_max_shape_factor_fp8=0.958,
                 # in-training GEMM rates / the microbenchmark's (validate/data/b200_gemm_in_training.csv)
                 sustained_compute_fraction=0.628,
                 # collective latency and efficiency from SimuMax's in-training NVLink 5 collectives on this
                 # node (validate/data/b200_collectives_in_training.csv)
                 measured=dict(collective_base_latency_s=2.9e-05, collective_latency_s=6.04e-06,
                               collective_efficiency=0.723)),
    # A nominal CPU profile so that CPU measurements (tests, CI) can be calibrated like any other device. Its
    # peak and bandwidth are estimates, not datasheet maxima (nominal_peak), so fitted efficiencies may exceed 1.
    "cpu": dict(source="nominal 2-core AVX2 x86 CPU at 3 GHz, fp32 (2 x 2 FMA x 8 lanes x 2 x 3e9)", peak_flops=192e9,
                memory_bandwidth=20e9, memory_bytes=24 * _GiB, intranode_bandwidth=10e9, internode_bandwidth=10e9,
                gpus_per_node=1, nominal_peak=True, compute_units=2, matmul_tiles=((8, 16),), matmul_efficiency=0.75,
                matmul_half_k=16.0, attention_kernel="math", attention_efficiency=0.55,
                attention_head_dim_factors=(1.0, 1.0, 1.0), attention_half_keys=64.0, attention_causal_half_keys=0.0,
                attention_causal_factor=1.0, attention_masked_factor=1.0,
                # host and device are the same processor: dispatch adds (layer_overhead_s), never overlaps
                **{**_DEFAULT_EFFICIENCY, "layer_overhead_s": 200e-6, "step_overhead_s": 1e-3,
                   "matmul_overhead_s": 20e-6, "host_layer_s": 0.0}),
}
