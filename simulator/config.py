"""Scenario schema (a user-facing contract) and its loading.

Everything a user writes is validated here; every failure becomes one ``ScenarioError`` that
names the file, the dotted field path and what was expected.
"""
from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from .errors import ScenarioError, describe
from .presets import HARDWARE_PRESETS, MODEL_PRESETS, NCCL_NETWORK_STEP_S
from .reader import UnreadableFile, read_document as _read_document
from .strict import error_from_validation, refuse_coercions, validate  # noqa: F401  (error_from_validation re-exported)


class _Strict(BaseModel):
    """Every user-facing model: unknown keys refused, values finite. Booleans and strings are not taken as
    numbers anywhere (``refuse_coercions`` checks every validated document against its raw input)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Bounded generic types. The bounds are far beyond any real run and keep every count a float64 can hold
# exactly, so no product in the cost model can overflow or lose its meaning.
def _count(hi: int, lo: int = 1):
    return Annotated[int, Field(ge=lo, le=hi)]


def _real(lo: float | None = None, hi: float | None = None, gt: float | None = None):
    return Annotated[float, Field(ge=lo, le=hi, gt=gt, allow_inf_nan=False)]


Width = _count(2**18)                # hidden_size
Heads = _count(2**14)                # attention heads, key/value heads, head_dim
Ffn = _count(2**20)                  # intermediate_size
Layers = _count(2**12)
Vocab = _count(2**24)
Tokens = _count(10**9)               # tokens of one segment
MicroBatch = _count(2**20)           # samples in a micro-batch
Samples = _count(10**15, lo=0)
Name = Annotated[str, Field(min_length=1, max_length=200)]
MAX_SEGMENTS = 1024
MAX_SWEEP_VALUES = 100_000       # an explicit list of values is parsed whole
MAX_SWEEP_POINTS = 2_000_000     # a range: evaluated in chunks (simulate.run_sweep), about 100 bytes a point


# ----------------------------------------------------------------------------------------- model
class ModelSpec(_Strict):
    """A decoder-only transformer, LLaMA-style unless ``mlp`` says otherwise."""
    name: Annotated[str, Field(max_length=200)] = "custom"
    num_layers: Layers
    hidden_size: Width
    num_attention_heads: Heads
    num_key_value_heads: Heads
    head_dim: Heads
    intermediate_size: Ffn
    mlp: Literal["swiglu", "geglu", "gelu"] = "swiglu"
    vocab_size: Vocab
    tie_word_embeddings: bool = False
    # Layers that attend within a sliding window of keys (Mistral 7B v0.1, Gemma 2/3, Phi-3, Starcoder2):
    # recorded, not priced. trsim prices every layer's attention over the whole causal prefix (the plan has
    # token counts per segment, not the positions a window needs), so where a sequence is longer than the
    # window a result says its attention is an upper bound (simulate's warnings). Layers: how many of the
    # model's layers use the window (None: all of them).
    sliding_window: Optional[Annotated[int, Field(ge=1, le=2**40)]] = None
    sliding_window_layers: Optional[Annotated[int, Field(ge=0, le=2**12)]] = None

    @field_validator("sliding_window_layers")
    @classmethod
    def _window_layers_fit(cls, v, info):
        """Named by the field wherever a ModelSpec is read whole (a results file's model), as a scenario's are."""
        if v is None:
            return v
        layers = info.data.get("num_layers")
        if isinstance(layers, int) and v > layers:
            raise ValueError(f"at most num_layers ({layers}), got {v}")
        if "sliding_window" not in info.data:
            return v   # a bad window: its own error names it
        if info.data["sliding_window"] is None:
            raise ValueError(f"a count only beside sliding_window (the window in tokens, here none), got {v}")
        return v

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        return self

    @property
    def windowed_layers(self) -> int:
        """How many layers attend within ``sliding_window`` (0 without one)."""
        if self.sliding_window is None:
            return 0
        return self.num_layers if self.sliding_window_layers is None else self.sliding_window_layers

    @property
    def mlp_matrices(self) -> int:
        return 2 if self.mlp == "gelu" else 3


class ModelInput(_Strict):
    preset: Optional[str] = None
    hf_config: Optional[Annotated[str, Field(min_length=1, max_length=4096)]] = None
    name: Optional[Annotated[str, Field(max_length=200)]] = None
    num_layers: Optional[Layers] = None
    hidden_size: Optional[Width] = None
    num_attention_heads: Optional[Heads] = None
    num_key_value_heads: Optional[Heads] = None
    head_dim: Optional[Heads] = None
    intermediate_size: Optional[Ffn] = None
    mlp: Optional[Literal["swiglu", "geglu", "gelu"]] = None
    vocab_size: Optional[Vocab] = None
    tie_word_embeddings: Optional[bool] = None
    sliding_window: Optional[Annotated[int, Field(ge=1, le=2**40)]] = None
    sliding_window_layers: Optional[Annotated[int, Field(ge=0, le=2**12)]] = None

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v):
        if v is not None and v not in MODEL_PRESETS:
            raise ValueError(f"one of {', '.join(MODEL_PRESETS)}, got {v!r}")
        return v


def resolve_model(inp: ModelInput, base_dir: Path) -> ModelSpec:
    fields: dict[str, Any] = {}
    if inp.preset:
        fields.update({k: v for k, v in MODEL_PRESETS[inp.preset].items() if k != "source"}, name=inp.preset)
    hf = None
    if inp.hf_config:
        from .hf_config import read_hf_config
        hf = read_hf_config(base_dir / inp.hf_config)
        fields.update(hf.fields)
    fields.update({k: v for k, v in inp.model_dump().items()
                   if v is not None and k not in ("preset", "hf_config")})
    if hf is not None:
        missing = [(name, key) for name, key in hf.missing.items() if name not in fields]
        if missing:  # named all at once, so that filling them in takes one edit, not one run each
            (name, key), rest = missing[0], [k for _, k in missing[1:]]
            kind = describe(hf.model_type) if hf.model_type else "unknown"
            also = f"; also missing: {', '.join(rest)}" if rest else ""
            raise ScenarioError(hf.file, key, f"a value (model type {kind} has no default for it{also}; or give "
                                f"model.{name} in the scenario), got none")

    def from_file(*names) -> bool:  # every one of these values is the config file's, none the scenario's
        return hf is not None and all(n in hf.fields and fields.get(n) == hf.fields[n] for n in names)
    heads, kv = fields.get("num_attention_heads"), fields.get("num_key_value_heads")
    if from_file("num_attention_heads", "num_key_value_heads") and isinstance(heads, int) and isinstance(kv, int) \
            and kv > 0 and heads % kv:
        raise ScenarioError(hf.file, f"{hf.prefix}num_key_value_heads", f"a divisor of num_attention_heads "
                            f"({heads}), got {kv}")
    if "head_dim" not in fields and "hidden_size" in fields and "num_attention_heads" in fields:
        if fields["hidden_size"] % fields["num_attention_heads"]:
            if from_file("hidden_size", "num_attention_heads"):
                raise ScenarioError(hf.file, f"{hf.prefix}head_dim", f"a value, since hidden_size "
                                    f"({fields['hidden_size']}) is not a multiple of num_attention_heads "
                                    f"({fields['num_attention_heads']}) (or give model.head_dim in the scenario), "
                                    f"got none")
            raise ScenarioError(None, "model.head_dim", f"a value given explicitly, since hidden_size "
                                f"({fields['hidden_size']}) is not a multiple of num_attention_heads "
                                f"({fields['num_attention_heads']})")
        fields["head_dim"] = fields["hidden_size"] // fields["num_attention_heads"]
    layers, windowed = fields.get("num_layers"), fields.get("sliding_window_layers")
    if hf is not None and hf.window_rule is not None and from_file("sliding_window_layers") \
            and isinstance(layers, int) and not from_file("num_layers"):
        # the scenario changed the depth: the model type's rule counts the windowed layers of this depth
        fields["sliding_window_layers"] = windowed = hf.window_rule(layers)
    if windowed is not None and fields.get("sliding_window") is None:
        raise ScenarioError(None, "model.sliding_window", f"a window in tokens, since sliding_window_layers "
                            f"({windowed}) is given, got none")
    return validate(ModelSpec, fields, prefix="model")


# -------------------------------------------------------------------------------------- hardware
AttentionKernel = Literal["flash1", "flash2", "flash3", "cudnn", "mem_efficient", "math"]
#: An efficiency is a fraction of a datasheet peak (at most 1); against a nominal, estimated peak
#: (``nominal_peak``, e.g. the CPU preset) it may exceed 1, up to this cap.
NOMINAL_EFFICIENCY_CAP = 20.0
_Eff = Annotated[float, Field(gt=0, le=NOMINAL_EFFICIENCY_CAP)]
# SMs of a GPU and the GEMM library's output tiles: counts that the tile model divides into float64 sizes, so
# bounded far beyond any GPU (an unbounded integer, 10**400, does not convert to a float at all); at least one tile
Units = _count(2**20)
CollectiveUnits = _count(2**20, lo=0)  # SMs a running collective holds: none at all is allowed
Tiles = Annotated[tuple[tuple[Units, Units], ...], Field(min_length=1, max_length=64)]
EFFICIENCY_FIELDS = ("matmul_efficiency", "matmul_efficiency_fp8", "attention_efficiency", "bandwidth_efficiency",
                     "gather_efficiency")


class HardwareSpec(_Strict):
    """One device: datasheet rates plus the efficiency terms of the time model (``trsim.simulator.efficiency``
    and README "Efficiency model"). Defaults of the shape terms are neutral (no quantisation, no fall-off)."""
    name: str = "custom"
    peak_flops: PositiveFloat
    peak_flops_fp8: Optional[PositiveFloat] = None  # dense fp8 tensor-core peak; None: the GPU has no fp8
    memory_bandwidth: PositiveFloat
    memory_bytes: PositiveFloat
    intranode_bandwidth: PositiveFloat
    internode_bandwidth: PositiveFloat
    gpus_per_node: _count(2**24) = 8      # at most num_gpus' bound
    nominal_peak: bool = False            # peak/bandwidth are estimates, not datasheet maxima (efficiency may exceed 1)
    # GEMMs
    compute_units: Units = 1              # streaming multiprocessors (wave quantisation)
    matmul_tiles: Tiles = ((1, 1),)       # output tiles the GEMM library picks among
    matmul_efficiency: _Eff               # fraction of peak a GEMM of ideal shape reaches (bf16/fp16)
    matmul_efficiency_fp8: Optional[_Eff] = None  # the same at fp8 (fraction of the fp8 peak)
    # the measured maximum achievable GEMM rate (a brute-force shape search) over peak x ceiling (x the
    # sustained fraction): no GEMM, its fixed time included, runs faster than that maximum. None: no cap
    matmul_max_shape_factor: Optional[float] = Field(default=None, gt=0, le=1)
    matmul_max_shape_factor_fp8: Optional[float] = Field(default=None, gt=0, le=1)
    # fraction of the kernel benchmarks' rates the GPU sustains through a training step (power- and
    # thermal-limited clocks under continuous load); scales every GEMM and attention rate
    sustained_compute_fraction: float = Field(default=1.0, gt=0, le=1)
    matmul_half_k: float = Field(default=0.0, ge=0)        # reduction length at which a tile's efficiency halves
    # fixed seconds per GEMM kernel whatever its size (GPUs: device time inside the kernel, ramp-up, the first
    # tiles' loads, the epilogue; gaps between kernels are layer_overhead_s. The CPU preset: dispatch, since
    # host and device are one processor there)
    matmul_overhead_s: float = Field(default=0.0, ge=0)
    # attention
    attention_kernel: AttentionKernel = "flash2"
    attention_efficiency: _Eff            # fraction of peak at head dim 128, long sequences, no mask
    attention_head_dim_factors: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (1.0, 1.0, 1.0)  # 64/128/256
    attention_half_keys: float = Field(ge=0)               # sequence length at which the efficiency halves
    attention_causal_half_keys: float = Field(default=0.0, ge=0)  # extra half-length under a causal mask
    attention_causal_factor: float = Field(default=1.0, gt=0, le=1)  # efficiency factor of a causal mask
    attention_masked_factor: float = Field(default=1.0, gt=0, le=1)  # explicit boolean mask (memory-efficient)
    # backward / forward FLOPs of the attention kernel: the convention attention_efficiency is measured in
    # (FlashAttention's benchmarks: 2.5). At least 2, the backward's own matmuls over the forward's (what the
    # model FLOPs count): a smaller convention would price the backward faster than the peak allows
    attention_backward_ratio: float = Field(ge=2)
    # memory-bound work, fixed costs, communication
    bandwidth_efficiency: _Eff
    # fixed device seconds per memory-bound kernel (norms, elementwise, casts) whatever its bytes: launch,
    # ramp-up and tail of a kernel too small to fill the GPU (the counts: costs.executor_layer_kernels)
    memory_bound_kernel_s: float = Field(default=0.0, ge=0)
    gather_efficiency: _Eff
    layer_overhead_s: float = Field(ge=0)
    step_overhead_s: float = Field(ge=0)
    # host (CPU) seconds to dispatch one layer's forward and backward for one micro-batch. The GPU runs
    # asynchronously, so a stage takes the longer of its host and device times, not their sum
    host_layer_s: float = Field(default=0.0, ge=0)
    comm_overlap: float = Field(ge=0, le=1)
    # a ring collective's latency (NCCL's model: collectives.py): once per collective, plus one per ring
    # step inside a node (NVLink) and one per step that crosses nodes (the network; default NCCL's own
    # constant for a network ring step, 9.6 us)
    collective_latency_s: float = Field(ge=0)
    collective_base_latency_s: float = Field(default=0.0, ge=0)
    internode_latency_s: float = Field(default=NCCL_NETWORK_STEP_S, ge=0)
    # bus bandwidth an NCCL all-gather / reduce-scatter / all-reduce reaches, over the link's bandwidth
    collective_efficiency: float = Field(default=1.0, gt=0, le=1)
    # streaming multiprocessors a running collective kernel holds (NCCL: one CTA per channel); compute that
    # overlaps a collective runs on the rest, so hidden traffic still costs that share of its duration
    collective_compute_units: CollectiveUnits = 0
    calibration: Optional[str] = None

    @model_validator(mode="after")
    def _datasheet_peak_is_a_ceiling(self):
        if not self.nominal_peak:
            for k in EFFICIENCY_FIELDS:
                v = getattr(self, k)
                if v is not None and v > 1:
                    raise ValueError(f"{k} <= 1 of the datasheet peak (set nominal_peak: true for a device whose "
                                     f"peak is an estimate), got {v}")
        # the attention curve peaks at the best head dim's factor: that, not attention_efficiency alone, is the
        # fraction of the peak the kernel reaches
        eff, top = self.attention_efficiency, max(self.attention_head_dim_factors)
        cap, peak = (NOMINAL_EFFICIENCY_CAP, "nominal") if self.nominal_peak else (1.0, "datasheet")
        if eff * top > cap:
            raise ValueError(f"attention_efficiency x the largest attention_head_dim_factors <= {cap:g} of the {peak} "
                             f"peak, got {eff:g} x {top:g} = {eff * top:g}")
        if self.collective_compute_units >= self.compute_units:
            raise ValueError(f"collective_compute_units < compute_units ({self.compute_units}), got "
                             f"{self.collective_compute_units}")
        return self


class HardwareInput(_Strict):
    preset: Optional[str] = None
    calibration: Optional[str] = None
    num_gpus: _count(2**24) = 8
    price_per_gpu_hour: _real(lo=0, hi=1e6) = 2.5
    # any HardwareSpec field may be overridden explicitly
    name: Optional[str] = None
    peak_flops: Optional[PositiveFloat] = None
    peak_flops_fp8: Optional[PositiveFloat] = None
    memory_bandwidth: Optional[PositiveFloat] = None
    memory_bytes: Optional[PositiveFloat] = None
    intranode_bandwidth: Optional[PositiveFloat] = None
    internode_bandwidth: Optional[PositiveFloat] = None
    gpus_per_node: Optional[_count(2**24)] = None
    nominal_peak: Optional[bool] = None
    compute_units: Optional[Units] = None
    matmul_tiles: Optional[Tiles] = None
    matmul_efficiency: Optional[float] = None
    matmul_efficiency_fp8: Optional[float] = None
    matmul_max_shape_factor: Optional[float] = None
    matmul_max_shape_factor_fp8: Optional[float] = None
    sustained_compute_fraction: Optional[float] = None
    matmul_half_k: Optional[float] = None
    matmul_overhead_s: Optional[float] = None
    attention_kernel: Optional[AttentionKernel] = None
    attention_efficiency: Optional[float] = None
    attention_head_dim_factors: Optional[tuple[float, float, float]] = None
    attention_half_keys: Optional[float] = None
    attention_causal_half_keys: Optional[float] = None
    attention_causal_factor: Optional[float] = None
    attention_masked_factor: Optional[float] = None
    attention_backward_ratio: Optional[float] = None
    bandwidth_efficiency: Optional[float] = None
    memory_bound_kernel_s: Optional[float] = None
    gather_efficiency: Optional[float] = None
    layer_overhead_s: Optional[float] = None
    step_overhead_s: Optional[float] = None
    host_layer_s: Optional[float] = None
    comm_overlap: Optional[float] = None
    collective_latency_s: Optional[float] = None
    collective_base_latency_s: Optional[float] = None
    internode_latency_s: Optional[float] = None
    collective_efficiency: Optional[float] = None
    collective_compute_units: Optional[CollectiveUnits] = None

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v):
        if v is not None and v not in HARDWARE_PRESETS:
            raise ValueError(f"one of {', '.join(HARDWARE_PRESETS)}, got {v!r}")
        return v


def attention_kernel_fields(preset: Optional[str], kernel: str) -> dict:
    """The attention curve of ``kernel`` on the GPU family of ``preset`` (derived in presets.py)."""
    from .presets import ATTENTION_FAMILY, ATTENTION_KERNELS
    family = ATTENTION_KERNELS.get(ATTENTION_FAMILY.get(preset or ""), None)
    if family is None:
        if preset is None or HARDWARE_PRESETS[preset].get("attention_kernel") == kernel:
            return {"attention_kernel": kernel}  # custom hardware: the curve fields are given explicitly
        raise ScenarioError(None, "hardware.attention_kernel",
                            f"no kernel curves for preset {preset!r}; give the attention_* fields explicitly")
    if kernel not in family:
        raise ScenarioError(None, "hardware.attention_kernel",
                            f"a kernel with a published table for {preset} ({', '.join(family)}), got {kernel!r}")
    return {"attention_kernel": kernel, **family[kernel]}


# hardware fields that do not change a step time (or, attention_kernel, that name a kernel choice the
# published runs make themselves): setting them keeps the preset's evidence
_NOT_TIME_MODEL = {"preset", "calibration", "num_gpus", "price_per_gpu_hour", "name", "memory_bytes", "attention_kernel"}


def hardware_overrides(inp: HardwareInput) -> tuple[str, ...]:
    """The time-model fields a scenario sets over its preset."""
    return tuple(sorted(k for k, v in inp.model_dump().items() if v is not None and k not in _NOT_TIME_MODEL))


def resolve_hardware(inp: HardwareInput, base_dir: Path, force_calibration: bool = False
                     ) -> tuple[HardwareSpec, Optional[dict]]:
    """The hardware profile (preset, then calibration, then explicit fields) and a summary of the calibration
    applied, if any. A calibration fitted for other hardware is refused unless ``force_calibration``."""
    from .calibration import load_calibration
    fields: dict[str, Any] = {}
    if inp.preset:
        fields.update({k: v for k, v in HARDWARE_PRESETS[inp.preset].items() if k != "source"}, name=inp.preset)
    if inp.attention_kernel:
        fields.update(attention_kernel_fields(inp.preset, inp.attention_kernel))
    fields.update({k: v for k, v in inp.model_dump().items()
                   if v is not None and k not in ("preset", "calibration", "num_gpus", "price_per_gpu_hour")})
    hw = validate(HardwareSpec, fields, prefix="hardware")
    if not inp.calibration:
        return hw, None
    from .calibration import apply_calibration
    path = base_dir / inp.calibration
    try:
        cal = load_calibration(path, expected_hardware=hw.name, force=force_calibration)
    except UnreadableFile as err:
        raise err.for_field("hardware.calibration")
    summary = cal.summary(str(path), forced=force_calibration and cal.hardware_preset != hw.name)
    explicit = {k for k, v in inp.model_dump().items() if v is not None}
    hw = apply_calibration(hw, cal, str(path), keep=explicit)
    return hw.model_copy(update={"calibration": str(path)}), summary


# -------------------------------------------------------------------------------------- training
class TrainingSpec(_Strict):
    micro_batch_size: MicroBatch = 8
    global_batch_size: _count(2**40) = 512
    epochs: _real(gt=0, hi=1e6) = 1.0
    # none: every layer saves its activations; selective: the attention core is recomputed in backward
    # (Korthikanti et al.); full: each layer keeps only its input and reruns its forward in backward.
    recompute: Literal["none", "selective", "full"] = "none"
    activation_checkpointing: Optional[bool] = None  # older spelling: true means recompute: full
    # Matmul precision: fp8 runs the decoder layers' GEMMs at the GPU's fp8 peak (Transformer Engine /
    # torchao style; the LM head and attention core stay in bf16); weights, gradients and optimizer
    # states keep the byte sizes below.
    precision: Literal["bf16", "fp16", "fp8"] = "bf16"
    zero_stage: Literal[0, 1, 2, 3] = 2
    # Which code runs the step (activation memory, what the loss holds, how token-set changes and the
    # data-parallel overlap are priced): this project's reference executor (trsim), Hugging Face
    # transformers LLaMA-family code with sdpa (huggingface), or Megatron-Core with Transformer Engine
    # (megatron). See README "Training stack".
    stack: Literal["trsim", "huggingface", "megatron"] = "trsim"
    # The elementwise and normalisation kernels (memory-bound traffic): unfused (the reference executor's
    # operators one by one: RMSNorm in fp32, rotary by halves, counted exactly in profiler/traffic.py) or
    # fused (one pass forward and about two backward, as Transformer Engine, apex or FlashAttention's
    # training kernels run them). Default: unfused for the trsim and huggingface stacks (transformers'
    # eager LLaMA code moves within 6% of the executor's bytes, tests/test_traffic.py), fused for megatron.
    kernels: Optional[Literal["unfused", "fused"]] = None
    # How tasks share micro-batches: ideal (the sample-weighted mean of per-task micro-batch times: no
    # rank ever waits), homogeneous (one task per micro-batch, drawn in proportion to samples; the step
    # waits for the slowest data-parallel rank), mixed (every micro-batch packs samples of every task).
    task_mixing: Literal["ideal", "homogeneous", "mixed"] = "ideal"
    # Dropout probabilities (Megatron's --hidden-dropout and --attention-dropout; GPT-2/3-style configs
    # train with 0.1, LLaMA-family models with 0). Any probability above 0 costs the same: the mask is
    # drawn, stored and applied whatever p is (README "Dropout").
    hidden_dropout: _real(lo=0, hi=1) = 0.0
    attention_dropout: _real(lo=0, hi=1) = 0.0
    # Data-parallel communication overlap. overlap_grad_reduce: gradients are reduced bucket by bucket while
    # the last micro-batch's backward runs (PyTorch DDP and FSDP always do; Megatron with
    # --overlap-grad-reduce; the trsim stack hides hardware.comm_overlap of it); false: the whole reduction
    # runs after backward. overlap_param_gather: the updated weights (Megatron's distributed optimizer) and
    # ZeRO-3's weight gathers are all-gathered under the forward (--overlap-param-gather); false: they wait.
    # Megatron-LM's own command line leaves both off; NeMo's recipes and NVIDIA's scaling runs turn them on.
    # (unset: as overlap_grad_reduce; Megatron refuses --overlap-param-gather without --overlap-grad-reduce)
    overlap_grad_reduce: bool = True
    overlap_param_gather: Optional[bool] = None
    weight_bytes: _count(64) = 2          # bf16 weights
    gradient_bytes: _count(64) = 2        # bf16 gradients
    optimizer_bytes: _count(256) = 12     # AdamW: fp32 master weights + first and second moments
    activation_bytes: _count(64) = 2      # bf16 activations

    @property
    def param_gather_overlapped(self) -> bool:
        return self.overlap_grad_reduce if self.overlap_param_gather is None else self.overlap_param_gather

    @model_validator(mode="after")
    def _megatron_gathers_overlap_only_with_the_gradients(self):
        if self.stack == "megatron" and self.overlap_param_gather and not self.overlap_grad_reduce:
            raise ValueError("overlap_param_gather: false (or unset) when overlap_grad_reduce is false with stack "
                             "megatron (Megatron-LM refuses --overlap-param-gather without --overlap-grad-reduce), "
                             "got true")
        return self

    @property
    def elementwise_kernels(self) -> str:
        return self.kernels or ("fused" if self.stack == "megatron" else "unfused")

    @model_validator(mode="after")
    def _recompute_spellings(self):
        if self.activation_checkpointing is not None:
            legacy = "full" if self.activation_checkpointing else "none"
            if "recompute" in self.model_fields_set and self.recompute != legacy:
                raise ValueError(f"activation_checkpointing ({self.activation_checkpointing}) agreeing with "
                                 f"recompute ({self.recompute!r}); give only recompute")
            object.__setattr__(self, "recompute", legacy)
        return self

    @property
    def checkpointing(self) -> bool:
        """Full recompute (the older activation_checkpointing: true)."""
        return self.recompute == "full"


class ParallelismSpec(_Strict):
    """Megatron-style layout: data-parallel size = num_gpus / (tensor x pipeline x context)."""
    tensor: _count(2**20) = 1
    pipeline: _count(2**14) = 1
    virtual_stages: _count(2**14) = 1     # model chunks per pipeline stage (interleaved 1F1B when > 1)
    context: _count(2**20) = 1
    sequence_parallel: bool = False       # shard norms, residuals and their activations over tensor ranks
    # overlap the tensor-parallel all-gathers / reduce-scatters with the GEMMs that use them, chunk by chunk
    # (Transformer Engine userbuffers, Megatron's --tp-comm-overlap; needs sequence_parallel)
    tensor_comm_overlap: bool = False
    layers_per_stage: Optional[list[_count(2**14)]] = Field(default=None, max_length=2**14)  # one count per stage

    @model_validator(mode="after")
    def _overlap_needs_sequence_parallel(self):
        if self.tensor_comm_overlap and self.tensor > 1 and not self.sequence_parallel:
            raise ValueError("sequence_parallel: true with tensor_comm_overlap (the overlap pipelines the "
                             "sequence-parallel all-gathers and reduce-scatters), got sequence_parallel: false")
        return self

    @property
    def model_parallel(self) -> int:
        return self.tensor * self.pipeline * self.context


class Conventions(_Strict):
    attention: Literal["causal", "full"] = "causal"
    lm_head: Literal["all", "targets"] = "all"
    cost_model: Literal["exact", "paper"] = "exact"


# ----------------------------------------------------------------------------------------- tasks
class Segment(_Strict):
    name: Name
    kind: Literal["text", "image"]
    tokens: Tokens
    target: bool = False


class Task(_Strict):
    samples: Samples = 0
    segments: list[Segment] = Field(min_length=1, max_length=MAX_SEGMENTS)

    @field_validator("segments")
    @classmethod
    def _unique_names(cls, segs):
        names = [s.name for s in segs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"unique segment names, got {sorted(dup)} more than once")
        return segs


# ------------------------------------------------------------------------------------- schedules
_keep = _real(lo=0, hi=1)


class HimixSpec(_Strict):
    method: Literal["himix"]
    from_layer: _count(2**12, lo=0) = 0
    separate_image_projections: bool = True


class HmgenSpec(_Strict):
    method: Literal["hmgen"]
    shallow: Optional[_count(2**12, lo=0)] = None
    shallow_layers: Optional[list[_count(2**12, lo=0)]] = Field(default=None, max_length=2**12)
    separate_image_projections: bool = True

    @model_validator(mode="after")
    def _one_of(self):
        if (self.shallow is None) == (self.shallow_layers is None):
            raise ValueError("exactly one of 'shallow' (a count) or 'shallow_layers' (a list)")
        return self


class DropSpec(_Strict):
    method: Literal["drop"]
    from_layer: _count(2**12, lo=0)
    keep: _keep
    selection: Literal["even", "attention"] = "even"


class PyramidSpec(_Strict):
    method: Literal["pyramid"]
    stages: list[tuple[_count(2**12, lo=0), _keep]] = Field(min_length=1, max_length=2**12)
    selection: Literal["even", "attention"] = "even"

    @field_validator("stages")
    @classmethod
    def _monotone(cls, stages):
        for (l0, k0), (l1, k1) in zip(stages, stages[1:]):
            if l1 <= l0:
                raise ValueError(f"stages in increasing from_layer order, got {l0} then {l1}")
            if k1 > k0:
                raise ValueError(f"non-increasing keep, got {k0} at layer {l0} then {k1} at layer {l1}")
        return stages


class LayerEntry(_Strict):
    mode: Literal["full", "kv_only", "skip"] = "full"
    keep: _keep = 1.0


class LayersSpec(_Strict):
    """Explicit per-layer table: {"0-3": {image: kv_only}, "4-27": {image: {mode: full, keep: 0.5}}}."""
    layers: dict[str, dict[str, Union[Literal["full", "kv_only", "skip"], LayerEntry]]]
    separate_image_projections: bool = False
    selection: Literal["even", "attention"] = "even"

    @field_validator("layers")
    @classmethod
    def _range_keys(cls, table):
        for key in table:
            if not re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", key):
                raise ValueError(f"layer keys like '5' or '2-27', got {key!r}")
        return table


MethodSpec = Union[HimixSpec, HmgenSpec, DropSpec, PyramidSpec, LayersSpec]
_METHODS = {"himix": HimixSpec, "hmgen": HmgenSpec, "drop": DropSpec, "pyramid": PyramidSpec}


def parse_method(raw: Any, field: str) -> MethodSpec:
    if not isinstance(raw, dict):
        raise ScenarioError(None, field, f"a mapping with 'method' ({', '.join(_METHODS)}) or 'layers', "
                            f"got {describe(raw)}")
    if "layers" in raw and "method" not in raw:
        cls = LayersSpec
    else:
        method = raw.get("method")
        if not isinstance(method, str) or method not in _METHODS:
            raise ScenarioError(None, f"{field}.method", f"one of {', '.join(_METHODS)} (or a 'layers' table), "
                                f"got {describe(method)}")
        cls = _METHODS[method]
    return validate(cls, raw, prefix=field)


class SweepSpec(_Strict):
    schedule: str
    task: Optional[str] = None
    parameter: Literal["shallow", "keep", "from_layer"]
    values: Optional[list[_real(lo=-1e15, hi=1e15)]] = Field(default=None, max_length=MAX_SWEEP_VALUES)
    range: Optional[tuple[_real(lo=-1e15, hi=1e15), _real(lo=-1e15, hi=1e15), _real(lo=-1e15, hi=1e15)]] = None
    # range: start, stop (inclusive), step

    @model_validator(mode="after")
    def _one_of(self):
        if (self.values is None) == (self.range is None):
            raise ValueError("exactly one of 'values' (a list) or 'range' ([start, stop, step])")
        if self.range is not None and (self.range[2] <= 0 or self.range[1] < self.range[0]):
            raise ValueError("range as [start, stop, step] with step > 0 and stop >= start")
        if self.values is not None and not self.values:
            raise ValueError("a non-empty list of values")
        if self.range is not None:  # bounded up front, before anything is allocated
            start, stop, step = self.range
            n = (stop - start) / step + 1
            if n > MAX_SWEEP_POINTS:
                raise ValueError(f"a range of at most {MAX_SWEEP_POINTS:,} points, got {n:,.0f}")
        return self

    def points(self):
        import numpy as np
        if self.values is not None:
            return np.asarray(self.values, dtype=float)
        start, stop, step = self.range
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        return start + step * np.arange(n)


# -------------------------------------------------------------------------------------- scenario
class ScenarioFile(_Strict):
    name: Name
    description: Annotated[str, Field(max_length=10_000)] = ""
    model: ModelInput
    hardware: HardwareInput = HardwareInput(preset="h100-sxm")
    training: TrainingSpec = TrainingSpec()
    parallelism: ParallelismSpec = ParallelismSpec()
    conventions: Conventions = Conventions()
    tasks: dict[Name, Task] = Field(min_length=1, max_length=1024)
    schedules: dict[Name, Optional[dict[Name, Any]]] = Field(default_factory=lambda: {"baseline": {}},
                                                            max_length=1024)
    sweep: Optional[SweepSpec] = None


class Scenario(BaseModel):
    """A resolved scenario: presets expanded, schedules parsed, cross-field checks done."""
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    description: str
    source: str
    model: ModelSpec
    hardware: HardwareSpec
    num_gpus: int
    price_per_gpu_hour: float
    training: TrainingSpec
    parallelism: ParallelismSpec = ParallelismSpec()
    conventions: Conventions
    tasks: dict[str, Task]
    schedules: dict[str, dict[str, MethodSpec]]
    sweep: Optional[SweepSpec]
    calibration: Optional[dict] = None   # summary of the calibration file applied (CalibrationFile.summary)
    # the hardware preset the profile starts from (None: custom hardware) and the time-model fields the
    # scenario sets over it: what the published-runs evidence of that preset can vouch for
    hardware_preset: Optional[str] = None
    hardware_overrides: tuple[str, ...] = ()

    @property
    def data_parallel(self) -> int:
        return self.num_gpus // self.parallelism.model_parallel

    @property
    def grad_accumulation(self) -> int:
        """Micro-batches per step on each data-parallel replica (through each pipeline)."""
        return self.training.global_batch_size // (self.training.micro_batch_size * self.data_parallel)

    def with_overrides(self, **changes) -> "Scenario":
        return self.model_copy(update=changes)


def read_document(path: str | Path) -> dict:
    """Parse a YAML (safe loader), TOML or JSON scenario file into a dict, or raise ScenarioError."""
    return _read_document(path, what="scenario file")


def scenario_from_dict(doc: dict, source: str = "<scenario>", base_dir: Path | None = None,
                       force_calibration: bool = False) -> Scenario:
    from .plan import validate_schedule  # the plan compiler owns schedule semantics
    base_dir = base_dir or Path(".")
    try:
        if not isinstance(doc, dict):
            raise ScenarioError(None, "<root>", f"a mapping at the top level, got {describe(doc)}")
        raw = validate(ScenarioFile, doc)
        model = resolve_model(raw.model, base_dir)
        hardware, calibration = resolve_hardware(raw.hardware, base_dir, force_calibration)
        tr = raw.training
        from .parallel import check_layout  # the parallel layout owns its own rules
        dp = check_layout(raw.parallelism, model, hardware, raw.hardware.num_gpus, tr)
        per_step = tr.micro_batch_size * dp
        if tr.global_batch_size % per_step:
            what = ("num_gpus" if dp == raw.hardware.num_gpus else
                    "data-parallel size (num_gpus / (tensor x pipeline x context))")
            raise ScenarioError(None, "training.global_batch_size",
                                f"a multiple of micro_batch_size x {what} = {tr.micro_batch_size} x "
                                f"{dp} = {per_step}, got {tr.global_batch_size}")
        from .parallel import check_schedule
        check_schedule(raw.parallelism, tr.global_batch_size // per_step)
        schedules: dict[str, dict[str, MethodSpec]] = {}
        for sname, per_task in raw.schedules.items():
            schedules[sname] = {}
            for tname, spec in (per_task or {}).items():
                field = f"schedules.{sname}.{tname}"
                if tname not in raw.tasks:
                    raise ScenarioError(None, field, f"a task defined under 'tasks' ({', '.join(raw.tasks)}), "
                                        f"got {tname!r}")
                method = parse_method(spec, field)
                validate_schedule(method, raw.tasks[tname], model.num_layers, field)
                schedules[sname][tname] = method
        work = (len(schedules) + 1) * model.num_layers * sum(len(t.segments) for t in raw.tasks.values())
        if work > MAX_PLAN_CELLS:
            raise ScenarioError(None, "schedules", f"at most {MAX_PLAN_CELLS:,} plan entries in all (schedules x "
                                f"layers x segments of every task), got {work:,}; split the scenario")
        if raw.sweep is not None:
            _check_sweep(raw.sweep, schedules)
            _check_sweep_size(raw.sweep, raw.tasks, model.num_layers)
        return Scenario(name=raw.name, description=raw.description, source=source, model=model,
                        hardware=hardware, num_gpus=raw.hardware.num_gpus,
                        price_per_gpu_hour=raw.hardware.price_per_gpu_hour, training=tr,
                        parallelism=raw.parallelism, conventions=raw.conventions, tasks=raw.tasks,
                        schedules=schedules, sweep=raw.sweep, calibration=calibration,
                        hardware_preset=raw.hardware.preset, hardware_overrides=hardware_overrides(raw.hardware))
    except ScenarioError as err:
        raise err.located(source)


def _check_sweep(sweep: SweepSpec, schedules: dict[str, dict[str, MethodSpec]]) -> None:
    if sweep.schedule not in schedules:
        raise ScenarioError(None, "sweep.schedule", f"one of the schedules ({', '.join(schedules)}), "
                            f"got {sweep.schedule!r}")
    tasks = schedules[sweep.schedule]
    if sweep.task is None and len(tasks) != 1:
        raise ScenarioError(None, "sweep.task", f"the task whose schedule is swept (one of {', '.join(tasks)}), "
                            f"got none")
    task = sweep.task or next(iter(tasks))
    if task not in tasks:
        raise ScenarioError(None, "sweep.task", f"a task of schedule {sweep.schedule!r} ({', '.join(tasks)}), "
                            f"got {task!r}")
    spec = tasks[task]
    allowed = {HimixSpec: ("from_layer",), HmgenSpec: ("shallow",), DropSpec: ("from_layer", "keep")}
    ok = allowed.get(type(spec), ())
    if sweep.parameter not in ok:
        raise ScenarioError(None, "sweep.parameter", f"a parameter of the {getattr(spec, 'method', 'layers')} "
                            f"method ({', '.join(ok) or 'none can be swept'}), got {sweep.parameter!r}")


# points x layers x segments of the swept task's plans: the time a sweep takes (minutes at this bound). Memory
# does not grow with it: simulate.run_sweep evaluates SWEEP_CHUNK points at a time.
MAX_SWEEP_CELLS = 200_000_000
MAX_PLAN_CELLS = 10_000_000    # the schedules' plans (evaluated whole): about 1 GB of work


def _check_sweep_size(sweep: SweepSpec, tasks: dict[str, Task], num_layers: int) -> None:
    """Bound the work of a sweep up front: its plans hold points x layers x segments entries."""
    task = sweep.task or next(iter(tasks))
    points = len(sweep.values) if sweep.values is not None else int(
        math.floor((sweep.range[1] - sweep.range[0]) / sweep.range[2] + 1e-9)) + 1
    cells = points * num_layers * len(tasks[task].segments)
    if cells > MAX_SWEEP_CELLS:
        raise ScenarioError(None, "sweep", f"a sweep of at most {MAX_SWEEP_CELLS:,} plan entries (points x layers x "
                            f"segments), got {points:,} x {num_layers:,} x {len(tasks[task].segments)} = {cells:,}; "
                            f"sweep fewer points")


def load_scenario(path: str | Path, force_calibration: bool = False) -> Scenario:
    """Read, validate and resolve a scenario file (``force_calibration``: apply a calibration fitted for
    other hardware anyway)."""
    p = Path(path)
    doc = read_document(p)
    return scenario_from_dict(doc, source=str(p), base_dir=p.parent, force_calibration=force_calibration)
