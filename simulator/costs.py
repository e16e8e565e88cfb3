"""Costs of a compiled plan: FLOPs, activation memory and time, vectorised over points and layers.

Every function takes arrays with a leading point axis P and a layer axis L and never loops over
either. FLOPs count 2 per multiply-add. Memory and time follow the reference executor in
``profiler/model.py`` term by term (see the README's "What the models count").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import efficiency
from .config import HardwareSpec, ModelSpec, TrainingSpec
from .plan import FULL, KV_ONLY, SKIP, Plan, query_set_changes

OPS = ("q", "k", "v", "o", "attention", "mlp", "rank")


@dataclass(frozen=True)
class Counts:
    """Token counts per sample that every cost derives from ([P, L] unless noted)."""
    nq: np.ndarray            # query tokens (full segments, present)
    nkv: np.ndarray           # key/value tokens (full and kv_only segments, present)
    nkvo: np.ndarray          # kv_only tokens
    pairs_causal: np.ndarray  # visible query-key pairs under the causal mask
    pairs_full: np.ndarray    # every query against every present key
    masked: np.ndarray        # bool: layer runs attention with an explicit mask (kv_only tokens present)
    gathered: np.ndarray      # bool: layer works on a gathered subset of the sequence
    regathered: np.ndarray    # bool: gathered layer whose query set differs from the previous layer's (gathers)
    written_back: np.ndarray  # bool: gathered layer whose query set changes next (or last layer): scatters back
    rank: np.ndarray          # tokens scored for attention-ranked dropping
    total: int                # tokens in the sequence
    n_lm: int                 # positions whose logits are computed
    weights: np.ndarray       # [L] full-model layers each row stands for


def counts(plan: Plan, lm_head: str = "all") -> Counts:
    # float64 throughout: products of token counts and widths exceed int64 for long sequences (a 1e9-token
    # segment's causal pairs times heads x head_dim), and float64 counts stay exact below 2**53.
    mode, present = plan.mode, plan.present.astype(np.float64)
    q_s = np.where(mode == FULL, present, 0.0)
    kv_s = np.where(mode != SKIP, present, 0.0)
    nq, nkv = q_s.sum(-1), kv_s.sum(-1)
    nkvo = np.where(mode == KV_ONLY, present, 0.0).sum(-1)
    before = np.cumsum(kv_s, axis=-1) - kv_s  # keys of earlier segments
    pairs_causal = (q_s * before).sum(-1) + (q_s * (q_s + 1) // 2).sum(-1)
    lay = plan.layout
    total = lay.total
    n_lm = total if lm_head == "all" else int(lay.tokens[lay.target].sum())
    gathered = nq < total
    change = query_set_changes(plan)  # the executor keeps a compact state between changes (profiler/model.py)
    ends = np.concatenate([change[:, 1:], np.ones_like(change[:, :1])], axis=1)
    return Counts(nq=nq, nkv=nkv, nkvo=nkvo, pairs_causal=pairs_causal, pairs_full=nq * nkv, masked=nkvo > 0,
                  gathered=gathered, regathered=gathered & change, written_back=gathered & ends,
                  rank=plan.rank.sum(-1).astype(np.float64), total=total, n_lm=n_lm, weights=plan.weights())


# ------------------------------------------------------------------------------------- FLOPs
def op_flops(c: Counts, m: ModelSpec, attention: str = "causal") -> dict[str, np.ndarray]:
    """Forward FLOPs per sample, per operator and layer: {op: [P, L]}."""
    d, H, Hkv, hd = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim
    pairs = c.pairs_causal if attention == "causal" else c.pairs_full
    return {"q": 2 * c.nq * d * H * hd, "k": 2 * c.nkv * d * Hkv * hd, "v": 2 * c.nkv * d * Hkv * hd,
            "o": 2 * c.nq * H * hd * d, "attention": 4 * pairs * H * hd,
            "mlp": 2 * c.nq * d * m.intermediate_size * m.mlp_matrices, "rank": 2 * c.rank * H * hd}


def lm_head_flops(c: Counts, m: ModelSpec) -> int:
    return 2 * c.n_lm * m.hidden_size * m.vocab_size


def paper_layer_cost(c: Counts, m: ModelSpec) -> np.ndarray:
    """The paper's coarse per-layer cost, Nq*Nkv*d + 8*Nq*d^2 (Sections 3.3, 5.1, 5.2), from the plan:
    vanilla Nq = Nkv = T+M; HiMix Nq = T, Nkv = T+M; HMGen shallow Nq = Nkv = T."""
    d = m.hidden_size
    return c.nq * c.nkv * d + 8 * c.nq * d * d


# ----------------------------------------------------------------------------------- parameters
def base_parameters(m: ModelSpec) -> int:
    d, H, Hkv, hd, I = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim, m.intermediate_size
    per_layer = d * H * hd * 2 + d * Hkv * hd * 2 + m.mlp_matrices * d * I + 2 * d
    emb = m.vocab_size * d * (1 if m.tie_word_embeddings else 2)
    return m.num_layers * per_layer + emb + d


def extra_parameters(plans: list[Plan], m: ModelSpec) -> np.ndarray:
    """Image-specific projection weights, [P]. Each task's plan owns its own set (the paper's
    partial sharing: HiMix's image K/V and HMGen's image Q/K/V are separate)."""
    d, H, Hkv, hd = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim
    out = 0
    for p in plans:
        w = p.weights()
        out = out + (p.sep_q * w).sum(-1) * d * H * hd + (p.sep_kv * w).sum(-1) * 2 * d * Hkv * hd
    return np.asarray(out, dtype=np.int64) if not np.isscalar(out) else np.array([out])


# -------------------------------------------------------------------------------------- memory
def activation_bytes(c: Counts, m: ModelSpec, micro_batch: int, act_bytes: int, checkpointing: bool) -> np.ndarray:
    """Bytes saved for backward by one micro-batch, [P]; the reference executor's tensors, one by one:

    per query token and layer: layer input, normed input, residual after attention, its norm (4d);
    rotated q and the attention output, which the output projection reads as a view (2 H hd);
    MLP intermediates (4I gated, 2I gelu);
    fp32 norm statistics (2) and attention log-sum-exp (H).
    per query token of the last layer before its query set changes (or of the last layer), where that
    set is a gathered subset: the working rows, which index_copy keeps for backward when it writes them
    back into the whole sequence (d). (The executor gathers once per change of the query set.)
    per key/value token: rotated k and v (KV heads: every attention path takes grouped-query K/V as is).
    per kv_only token: its frozen state and its norm (2d), plus the fp32 norm statistic.
    LM head: final-norm input and output for the rows it sees, fp32 log-probabilities.
    With activation checkpointing each layer keeps only its inputs (its working rows, and once per
    change of the query set the whole sequence it reads kv_only rows from) and one layer's
    activations are live again during its recomputation.
    """
    d, H, Hkv, hd, I = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim, m.intermediate_size
    e = act_bytes
    mlp = 4 * I if m.mlp_matrices == 3 else 2 * I
    layer = (c.nq * ((4 * d + 2 * H * hd + mlp) * e + 4 * (2 + H))
             + np.where(c.written_back, c.nq * d * e, 0)
             + c.nkv * 2 * Hkv * hd * e
             + c.nkvo * (2 * d * e + 4))
    lm = c.n_lm * (2 * d * e + 4 + 4 * m.vocab_size)
    if checkpointing:
        w = c.weights
        kept = d * e * ((c.nq * w).sum(-1) + c.total * (c.regathered * w).sum(-1))
        return micro_batch * (kept + layer.max(-1) + lm) + 4  # + the loss's fp32 normaliser, once
    return micro_batch * ((layer * c.weights).sum(-1) + lm) + 4


def transient_logits_bytes(c: Counts, m: ModelSpec, micro_batch: int, act_bytes: int) -> int:
    """Logits live at the loss besides the saved log-probabilities: the logits themselves and, in
    low precision, their fp32 copy."""
    per = act_bytes + (4 if act_bytes < 4 else 0)
    return micro_batch * c.n_lm * m.vocab_size * per


def static_bytes(params, t: TrainingSpec, data_parallel: int) -> dict[str, np.ndarray]:
    """Weights, gradients and optimizer states per GPU under ZeRO stage 0-3 over data-parallel GPUs."""
    dp = max(data_parallel, 1)
    z = t.zero_stage
    return {"weights": params * t.weight_bytes / (dp if z >= 3 else 1),
            "gradients": params * t.gradient_bytes / (dp if z >= 2 else 1),
            "optimizer": params * t.optimizer_bytes / (dp if z >= 1 else 1)}


# ---------------------------------------------------------------------------------------- time
def linear_time(rows, k_in, n_out, hw: HardwareSpec, precision: str = "bf16"):
    """Forward + backward seconds of one linear layer: ``rows`` tokens x ``k_in`` -> ``n_out`` (any
    broadcastable shapes). Three GEMMs, each priced at its own shape (``efficiency.gemm_time``):
    forward [rows, k_in] x [k_in, n_out]; input gradient [rows, n_out] x [n_out, k_in]; weight gradient
    [k_in, rows] x [rows, n_out], whose reduction runs over the tokens.

    This is the one place where a GEMM's FLOPs become time: parallel layouts pass the per-rank shapes.
    """
    elem = efficiency.DTYPE_BYTES.get(precision, 2)
    t = lambda M, N, K: efficiency.gemm_time(M, N, K, hw, precision=precision, elem_bytes=elem)  # noqa: E731
    return t(rows, n_out, k_in) + t(rows, k_in, n_out) + t(k_in, n_out, rows)


def attention_core_time(pairs, queries, heads, head_dim, hw: HardwareSpec, masked=False):
    """Forward + backward seconds of the attention core (scores and weighted sum) over ``pairs``
    query-key pairs executed per head, for ``queries`` query rows (so ``pairs / queries`` keys each).

    Unmasked layers run a causal fused kernel (``hw.attention_kernel``), whose queries see on average
    half of a sequence of ``2 x keys``; ``masked`` layers (an explicit mask over the whole rectangle) run
    the memory-efficient kernel at the sequence length ``keys``. Efficiency: ``efficiency.attention_efficiency``.
    """
    keys = pairs / np.maximum(queries, 1)
    masked = np.asarray(masked, dtype=bool)
    seq = np.where(masked, keys, 2.0 * keys)
    eff = efficiency.attention_efficiency(seq, head_dim, ~masked, hw, masked)
    return (1 + hw.attention_backward_ratio) * 4.0 * pairs * heads * head_dim / (hw.peak_flops * eff)


def microbatch_time(c: Counts, m: ModelSpec, hw: HardwareSpec, micro_batch: int, act_bytes: int,
                    checkpointing: bool) -> dict[str, np.ndarray]:
    """Forward+backward time of one task-homogeneous micro-batch, per component, each [P] seconds.

    matmuls: three GEMMs per linear layer at their own shapes (``linear_time``);
    attention: the pairs the kernel executes (the causal triangle, or the whole rectangle where an
    explicit mask is used) at the kernel's efficiency for that length (``attention_core_time``);
    memory-bound work (norms, rotary, residuals, activation function, loss) and gather/scatter of token
    rows: bytes / (bandwidth x efficiency); fixed costs per layer and per micro-batch.
    """
    B, w = micro_batch, c.weights
    f = op_flops(c, m, "causal")
    d, H, Hkv, hd, I, V = (m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim,
                           m.intermediate_size, m.vocab_size)
    e = act_bytes
    rows_q, rows_kv = B * c.nq, B * c.nkv
    mm = (linear_time(rows_q, d, H * hd, hw) + linear_time(rows_q, H * hd, d, hw)  # q, o
          + 2 * linear_time(rows_kv, d, Hkv * hd, hw)                              # k, v
          + linear_time(rows_q, d, I * (m.mlp_matrices - 1), hw) + linear_time(rows_q, I, d, hw))  # MLP
    matmul = (mm * w).sum(-1) + linear_time(B * c.n_lm, d, V, hw)

    exec_pairs = np.where(c.masked, c.pairs_full, c.pairs_causal)
    att = attention_core_time(B * exec_pairs, B * c.nq, H, hd, hw, masked=c.masked)
    rank = (1 + hw.attention_backward_ratio) * B * f["rank"] / (hw.peak_flops * hw.attention_efficiency)
    attention = ((att + rank) * w).sum(-1)

    act = 3 * I if m.mlp_matrices == 3 else 2 * I
    # (the explicit-mask path no longer expands K/V to every head: grouped-query K/V go to the kernel as is)
    layer_bytes = B * e * (c.nq * (4 * d + 6 * d + 2 * H * hd + act) + c.nkv * 2 * Hkv * hd + c.nkvo * 2 * d)
    loss_bytes = B * c.n_lm * V * (e + 4 + 4 + 4)
    bw = hw.memory_bandwidth * hw.bandwidth_efficiency
    membound = 3 * ((layer_bytes * w).sum(-1) + loss_bytes) / bw

    # token rows moved: a gather where the query set changes, a scatter before the next change, kv_only rows
    gather_bytes = B * e * d * 2 * (np.where(c.regathered, c.nq, 0) + np.where(c.written_back, c.nq, 0) + c.nkvo)
    gather = 3 * (gather_bytes * w).sum(-1) / (hw.memory_bandwidth * hw.gather_efficiency)

    overhead = np.full_like(matmul, hw.layer_overhead_s * w.sum() + hw.step_overhead_s, dtype=float)
    out = {"matmul": matmul, "attention": attention, "memory_bound": membound, "gather": gather,
           "overhead": overhead}
    if checkpointing:  # the forward runs again inside backward
        out["recompute"] = (out["matmul"] / 3 + out["attention"] / (1 + hw.attention_backward_ratio)
                            + out["memory_bound"] / 3 + out["gather"] / 3)
    return out


def optimizer_time(params, t: TrainingSpec, hw: HardwareSpec, data_parallel: int):
    """AdamW step: reads master weights, gradients and both moments, writes them back and the bf16 copy."""
    local = params / (max(data_parallel, 1) if t.zero_stage >= 1 else 1)
    per_param = t.optimizer_bytes * 2 + t.gradient_bytes + t.weight_bytes
    return local * per_param / (hw.memory_bandwidth * hw.bandwidth_efficiency)


def communication_time(params, t: TrainingSpec, hw: HardwareSpec, num_gpus: int):
    """Data-parallel gradient traffic per step with a ring: all-reduce (ZeRO 0-1), reduce-scatter plus
    all-gather (ZeRO 2, same volume), plus a parameter all-gather in forward and backward (ZeRO 3).
    Returns (total, exposed) seconds; ``comm_overlap`` of it hides behind the backward pass."""
    n = num_gpus
    if n <= 1:
        z = np.zeros_like(np.asarray(params, dtype=float))
        return z, z
    link = hw.intranode_bandwidth if n <= hw.gpus_per_node else hw.internode_bandwidth
    volume = params * t.gradient_bytes * 2 * (n - 1) / n
    hops = 2 * (n - 1)
    if t.zero_stage == 3:
        volume = volume + params * t.weight_bytes * 2 * (n - 1) / n
        hops *= 2
    total = volume / link + hops * hw.collective_latency_s
    return total, total * (1 - hw.comm_overlap)
