"""The parallel layout: data-parallel size, the rules a layout must meet, layers assigned to pipeline
stages, and the pipeline schedules (1F1B and interleaved 1F1B).

Rank order is Megatron-Core's (tensor fastest, then context, then data, then pipeline), which decides
whether a group's collectives stay inside a node (see ``collectives.py``). Nothing here prices anything:
per-layer costs come in as arrays ``[P, L]`` from the token plan, and stage sums, pipeline step times,
in-flight micro-batches and the min-max split are computed from them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ScenarioError


# ------------------------------------------------------------------------------------- per rank
@dataclass(frozen=True)
class Shard:
    """How one rank's share of a micro-batch is cut: heads, MLP columns and vocabulary over ``tensor``
    ranks, the sequence over ``context`` ranks, and with ``sequence_parallel`` the hidden-size work
    (norms, residuals) over tensor ranks too. ``matmul_precision`` is the decoder GEMMs' precision;
    ``tensor_comm_overlap``: tensor-parallel collectives overlap the GEMMs that consume them."""
    tensor: int = 1
    context: int = 1
    sequence_parallel: bool = False
    matmul_precision: str = "bf16"
    tensor_comm_overlap: bool = False

    @classmethod
    def of(cls, par, precision: str) -> "Shard":
        """The shard of a scenario's ``parallelism`` at the training ``precision``."""
        return cls(par.tensor, par.context, par.sequence_parallel, precision, par.tensor_comm_overlap)

    @property
    def hidden(self) -> int:
        """Divisor of hidden-size work and activations (the tensor size with sequence parallelism)."""
        return self.tensor if self.sequence_parallel else 1


NO_SHARD = Shard()


def per_rank(x, n: int):
    """``x / n``, and ``x`` itself (its integer values untouched) when nothing is sharded."""
    return x if n == 1 else x / n


# ------------------------------------------------------------------------------------------ rules
def check_layout(par, model, hardware, num_gpus: int, training) -> int:
    """Raise ScenarioError for an impossible layout; return the data-parallel size."""
    t, p, c, v = par.tensor, par.pipeline, par.context, par.virtual_stages
    L = model.num_layers
    for field, prod, what in (("parallelism.tensor", t, "tensor"), ("parallelism.pipeline", t * p,
                                                                      "tensor x pipeline"),
                              ("parallelism.context", t * p * c, "tensor x pipeline x context")):
        if num_gpus % prod:
            raise ScenarioError(None, field, f"{what} ({prod}) dividing hardware.num_gpus ({num_gpus}), so that the "
                                f"data-parallel size num_gpus / (tensor x pipeline x context) is whole")
    for name, n in (("num_attention_heads", model.num_attention_heads),
                    ("num_key_value_heads", model.num_key_value_heads),
                    ("intermediate_size", model.intermediate_size)):
        if n % t:
            raise ScenarioError(None, "parallelism.tensor", f"a divisor of model.{name} ({n}), since tensor "
                                f"parallelism shards it, got {t}")
    if p > L:
        raise ScenarioError(None, "parallelism.pipeline", f"at most model.num_layers ({L}) stages, got {p}")
    if v > 1:
        if p == 1:
            raise ScenarioError(None, "parallelism.virtual_stages", f"1 without pipeline parallelism "
                                f"(interleaving splits each pipeline stage into chunks), got {v}")
        if L % (p * v):
            raise ScenarioError(None, "parallelism.virtual_stages", f"virtual stages with pipeline x virtual_stages "
                                f"({p} x {v} = {p * v}) dividing model.num_layers ({L}), got {v}")
    if par.layers_per_stage is not None:
        lps = par.layers_per_stage
        if len(lps) != p:
            raise ScenarioError(None, "parallelism.layers_per_stage", f"one layer count per pipeline stage "
                                f"({p}), got {len(lps)}")
        if sum(lps) != L:
            raise ScenarioError(None, "parallelism.layers_per_stage", f"counts summing to model.num_layers ({L}), "
                                f"got {sum(lps)}")
        if v > 1 and any(n % v for n in lps):
            raise ScenarioError(None, "parallelism.layers_per_stage", f"counts that are multiples of "
                                f"virtual_stages ({v}), got {lps}")
    if training.precision == "fp8" and hardware.peak_flops_fp8 is None:
        raise ScenarioError(None, "training.precision", f"bf16 or fp16 on {hardware.name}, which has no fp8 tensor "
                            f"cores (or set hardware.peak_flops_fp8), got 'fp8'")
    return num_gpus // (t * p * c)


def check_schedule(par, micro_batches: int) -> None:
    """1F1B needs at least as many micro-batches per step as stages; Megatron's interleaved schedule
    also needs a whole number of rounds of ``pipeline`` micro-batches."""
    p = par.pipeline
    if p > 1 and micro_batches < p:
        raise ScenarioError(None, "training.global_batch_size", f"at least pipeline ({p}) micro-batches per step "
                            f"for the 1F1B schedule (global_batch_size / (micro_batch_size x data-parallel size)), "
                            f"got {micro_batches}")
    if par.virtual_stages > 1 and micro_batches % p:
        raise ScenarioError(None, "training.global_batch_size", f"a number of micro-batches per step that is a "
                            f"multiple of pipeline ({p}) for the interleaved schedule, got {micro_batches}")


# ----------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class StageLayout:
    """Layers of each model chunk, in model order; chunk ``j`` runs on pipeline stage ``j % pipeline``."""
    pipeline: int
    virtual: int
    bounds: tuple[int, ...]  # p*v + 1 layer boundaries

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return list(zip(self.bounds[:-1], self.bounds[1:]))

    def stage_of_chunk(self, j: int) -> int:
        return j % self.pipeline

    def layers_per_stage(self) -> list[int]:
        out = [0] * self.pipeline
        for j, (a, b) in enumerate(self.chunks):
            out[self.stage_of_chunk(j)] += b - a
        return out

    def stage_of_layer(self) -> np.ndarray:
        out = np.empty(self.bounds[-1], dtype=np.int64)
        for j, (a, b) in enumerate(self.chunks):
            out[a:b] = self.stage_of_chunk(j)
        return out


def single_stage(num_layers: int) -> StageLayout:
    return StageLayout(pipeline=1, virtual=1, bounds=(0, num_layers))


def stage_layout(par, num_layers: int) -> StageLayout:
    """Even split (the first stages take one more layer when it does not divide), or ``layers_per_stage``;
    with virtual stages each stage's layers are cut into ``virtual_stages`` equal chunks."""
    p, v, L = par.pipeline, par.virtual_stages, num_layers
    if par.layers_per_stage is not None:
        per_stage = list(par.layers_per_stage)
    else:
        per_stage = [L // p + (1 if s < L % p else 0) for s in range(p)]
    # chunk j (model order) of round r = j // p on stage s = j % p holds per_stage[s] / v layers
    sizes = [per_stage[j % p] // v for j in range(p * v)]
    return StageLayout(pipeline=p, virtual=v, bounds=tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)])))


def stage_sums(per_layer: np.ndarray, st: StageLayout) -> np.ndarray:
    """Sum a per-layer array [P, L] over each stage's layers: [P, p]. With one stage this is exactly
    ``per_layer.sum(-1)`` (same summation order), so a single-stage run reproduces the unsplit numbers."""
    per_layer = np.asarray(per_layer, dtype=float)
    if st.pipeline * st.virtual == 1:
        return per_layer.sum(-1)[..., None]
    out = np.zeros(per_layer.shape[:-1] + (st.pipeline,))
    for j, (a, b) in enumerate(st.chunks):
        out[..., st.stage_of_chunk(j)] += per_layer[..., a:b].sum(-1)
    return out


def stage_max(per_layer: np.ndarray, st: StageLayout) -> np.ndarray:
    """Largest per-layer value within each stage: [P, p]."""
    per_layer = np.asarray(per_layer, dtype=float)
    if st.pipeline * st.virtual == 1:
        return per_layer.max(-1)[..., None]
    out = np.zeros(per_layer.shape[:-1] + (st.pipeline,))
    for j, (a, b) in enumerate(st.chunks):
        s = st.stage_of_chunk(j)
        out[..., s] = np.maximum(out[..., s], per_layer[..., a:b].max(-1))
    return out


# -------------------------------------------------------------------------------- schedules
def pipeline_time(stage_times: np.ndarray, micro_batches: int, virtual: int) -> np.ndarray:
    """Step time of m micro-batches through p stages, [P], from per-micro-batch stage times [P, p].

    The slowest stage works without pause for m micro-batches; the others' work before it starts and
    after it ends (warm-up and cool-down) is the bubble, cut into 1/v by interleaving:
    ``m x max_s T_s + (sum_s T_s - max_s T_s) / v``. For uniform stages (T_s = T/p) the bubble is
    (p-1)/(v m) of the busy time (Narayanan et al. 2021); with one stage this is exactly m x T.
    """
    mx = stage_times.max(-1)
    return micro_batches * mx + (stage_times.sum(-1) - mx) / virtual


def bubble_fraction(stage_times: np.ndarray, micro_batches: int, virtual: int) -> np.ndarray:
    """Pipeline time lost to the bubble and to imbalance, as a fraction of the balanced busy time
    m x mean_s T_s; (p-1)/(v m) for uniform stages."""
    ideal = micro_batches * stage_times.mean(-1)
    return pipeline_time(stage_times, micro_batches, virtual) / np.where(ideal > 0, ideal, 1) - 1


def imbalance(stage_times: np.ndarray) -> np.ndarray:
    """Slowest stage over the mean stage, minus 1 (0 for a balanced pipeline)."""
    mean = stage_times.mean(-1)
    return stage_times.max(-1) / np.where(mean > 0, mean, 1) - 1


def in_flight(pipeline: int, virtual: int, micro_batches: int) -> np.ndarray:
    """Model chunks' activations each stage holds at its peak, [p] (in units of one chunk of one micro-batch).

    1F1B: stage s runs p - s forwards before its first backward (Narayanan et al.); interleaved: Megatron's
    warm-up of 2(p - s - 1) + (v - 1) p chunk forwards plus the one in flight. Stage 0 holds the most."""
    s = np.arange(pipeline)
    if virtual == 1:
        n = pipeline - s
    else:
        n = 2 * (pipeline - s - 1) + (virtual - 1) * pipeline + 1
    return np.minimum(n, micro_batches * virtual)


def min_max_partition(costs: np.ndarray, parts: int) -> list[int]:
    """Split per-layer costs [L] into ``parts`` contiguous groups minimising the largest group sum;
    returns the layer count of each group. Exact: dynamic programming over (layers, groups), O(p L^2)
    (L is a few dozen; written here because scipy has no partition solver)."""
    x = np.asarray(costs, dtype=float)
    L = len(x)
    pre = np.concatenate([[0.0], np.cumsum(x)])
    INF = float("inf")
    best = np.full((parts + 1, L + 1), INF)
    cut = np.zeros((parts + 1, L + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, L + 1):
            j = np.arange(k - 1, i)  # last group is layers j..i-1, non-empty
            cand = np.maximum(best[k - 1, j], pre[i] - pre[j])
            a = int(np.argmin(cand))
            best[k, i], cut[k, i] = cand[a], j[a]
    sizes, i = [], L
    for k in range(parts, 0, -1):
        j = int(cut[k, i])
        sizes.append(i - j)
        i = j
    return sizes[::-1]
