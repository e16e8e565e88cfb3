"""Model and hardware presets.

Model values are those of the public Hugging Face ``config.json`` files of each checkpoint.
Hardware values are dense bf16 tensor-core peaks and memory bandwidths from the vendors'
datasheets; efficiency values are uncalibrated starting points (see ``trsim calibrate``).
"""
from __future__ import annotations

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

# Efficiency defaults shared by all GPU presets until a calibration file replaces them.
_DEFAULT_EFFICIENCY = dict(
    matmul_efficiency=0.75,        # fraction of peak a large bf16 GEMM reaches
    matmul_half_rows=256.0,        # GEMM rows (tokens in the micro-batch) at which efficiency halves
    attention_efficiency=0.55,     # fraction of peak a long flash-attention forward reaches
    attention_half_keys=512.0,     # keys per query at which attention efficiency halves
    attention_backward_ratio=2.5,  # backward time / forward time of the attention kernel (recompute)
    bandwidth_efficiency=0.8,      # fraction of datasheet bandwidth memory-bound kernels reach
    gather_efficiency=0.5,         # same, for index_select / index_copy of token rows
    layer_overhead_s=60e-6,        # launch and dispatch cost per layer, forward plus backward
    step_overhead_s=2e-3,          # fixed cost per micro-batch (embedding, loss, host work)
    comm_overlap=0.7,              # fraction of gradient communication hidden behind backward
    collective_latency_s=10e-6,    # per ring hop
)

HARDWARE_PRESETS: dict[str, dict] = {
    "a100-sxm-80g": dict(source="NVIDIA A100 SXM4 80GB datasheet", peak_flops=312e12, memory_bandwidth=2.039e12,
                         memory_bytes=80 * _GiB, intranode_bandwidth=300e9, internode_bandwidth=25e9,
                         gpus_per_node=8, **_DEFAULT_EFFICIENCY),
    "h100-sxm": dict(source="NVIDIA H100 SXM5 80GB datasheet", peak_flops=989e12, memory_bandwidth=3.35e12,
                     memory_bytes=80 * _GiB, intranode_bandwidth=450e9, internode_bandwidth=50e9,
                     gpus_per_node=8, **_DEFAULT_EFFICIENCY),
    "h200": dict(source="NVIDIA H200 SXM 141GB datasheet", peak_flops=989e12, memory_bandwidth=4.8e12,
                 memory_bytes=141e9, intranode_bandwidth=450e9, internode_bandwidth=50e9,
                 gpus_per_node=8, **_DEFAULT_EFFICIENCY),
    # A nominal CPU profile so that CPU measurements (tests, CI) can be calibrated like any other device.
    "cpu": dict(source="nominal 2-core AVX2 x86 CPU at 3 GHz, fp32 (2 x 2 FMA x 8 lanes x 2 x 3e9)", peak_flops=192e9, memory_bandwidth=20e9,
                memory_bytes=24 * _GiB, intranode_bandwidth=10e9, internode_bandwidth=10e9, gpus_per_node=1,
                **{**_DEFAULT_EFFICIENCY, "layer_overhead_s": 200e-6, "step_overhead_s": 1e-3,
                   "matmul_half_rows": 32.0, "attention_half_keys": 32.0}),
}
