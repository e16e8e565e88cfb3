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
from .parallel import NO_SHARD, Shard, per_rank
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
    pairs_exec: np.ndarray    # pairs the attention kernel executes: the rectangle where a mask is explicit
    nq_regathered: np.ndarray  # query tokens gathered into a compact working state at this layer
    nq_written_back: np.ndarray  # query tokens written back into the whole sequence after this layer
    live: np.ndarray          # tokens present (not dropped) at the layer's input: the hidden state a stage passes on
    change_rows: np.ndarray   # rows a compacting executor moves at the layer's input (token set changed there)
    total: int                # tokens in the sequence
    n_lm: int                 # positions whose logits are computed
    weights: np.ndarray       # [L] full-model layers each row stands for
    # query (kv_only) rows of layers with image-specific weights whose rows come in several segments: the
    # reference executor splits them by segment and concatenates the projections (0 elsewhere)
    split_q: np.ndarray = 0.0
    split_kvo: np.ndarray = 0.0
    # how many segment pieces those rows come in (0 where they are not split)
    split_q_pieces: np.ndarray = 0.0
    split_kvo_pieces: np.ndarray = 0.0
    # weight-gradient sums over those pieces (a projection applied to k pieces sums k gradients: k - 1)
    split_q_weight_sums: np.ndarray = 0.0
    split_kvo_weight_sums: np.ndarray = 0.0


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
    regathered, written_back = gathered & change, gathered & ends
    return Counts(nq=nq, nkv=nkv, nkvo=nkvo, pairs_causal=pairs_causal, pairs_full=nq * nkv, masked=nkvo > 0,
                  gathered=gathered, regathered=regathered, written_back=written_back, rank=plan.rank.sum(-1).astype(np.float64),
                  pairs_exec=np.where(nkvo > 0, nq * nkv, pairs_causal),
                  nq_regathered=np.where(regathered, nq, 0.0), nq_written_back=np.where(written_back, nq, 0.0),
                  live=present.sum(-1),
                  change_rows=_change_rows(nq, nkvo, change, gathered, total),
                  total=total, n_lm=n_lm, weights=plan.weights(),
                  **_splits(plan, FULL, "q", nq), **_splits(plan, KV_ONLY, "kvo", nkvo))


def _splits(plan: Plan, kind: int, name: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Where a layer with image-specific weights works on segments of ``kind`` that include an image segment
    and are more than one (profiler/model.py DecoderLayer._split; query rows: image queries or image K/V,
    kv_only rows: image K/V), [P, L] each, 0 elsewhere: ``split_{name}`` the rows, ``split_{name}_pieces``
    the segments they come in, ``split_{name}_weight_sums`` the weight-gradient sums of the projections
    over those pieces (each applied to k pieces sums k gradients: k - 1; image pieces take the image
    weights, text pieces the text weights; Q shares one weight over both unless the layer has image
    queries; kv_only rows feed K and V only). One pass over the plan's arrays (the sweep's hot path)."""
    on = (plan.mode == kind) & (plan.present > 0)
    n = on.sum(-1) * 1.0
    img = (on & plan.layout.is_image).sum(-1) * 1.0
    separate = plan.sep_kv if kind == KV_ONLY else plan.sep_q | plan.sep_kv
    split = separate & (n > 1) & (img > 0)
    apart = np.maximum(n - img - 1, 0) + np.maximum(img - 1, 0)     # text and image weights apart
    if kind == KV_ONLY:
        sums = 2 * apart
    else:
        sums = np.where(plan.sep_q, apart, np.maximum(n - 1, 0)) + 2 * np.where(plan.sep_kv, apart, np.maximum(n - 1, 0))
    return {f"split_{name}": np.where(split, rows, 0.0), f"split_{name}_pieces": np.where(split, n, 0.0),
            f"split_{name}_weight_sums": np.where(split, sums, 0.0)}


def _change_rows(nq, nkvo, change, gathered, total) -> np.ndarray:
    """Rows moved by an executor that keeps the working rows compact, [P, L]: where a layer's query set
    differs from the previous layer's (``change``; at layer 0, from the whole sequence), the smaller of
    the two sets is gathered or scattered once; newly frozen kv_only rows are gathered once; after the
    last layer a subset is scattered back for the LM head. Computed on [P, L] arrays only (the sweep's hot
    path): ``change`` says where the set changes; at layer 0 the set differs from the whole sequence
    exactly when it is smaller."""
    prev_nq = np.concatenate([np.full_like(nq[:, :1], total), nq[:, :-1]], axis=1)
    prev_kvo = np.concatenate([np.zeros_like(nkvo[:, :1]), nkvo[:, :-1]], axis=1)
    moved_q = change.copy()
    moved_q[:, 0] = gathered[:, 0]
    rows = np.where(moved_q, np.minimum(nq, prev_nq), 0.0) + np.where(nkvo != prev_kvo, nkvo, 0.0)
    rows[:, -1] += np.where(gathered[:, -1], nq[:, -1], 0.0)
    return rows


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


def analytic_counts(plan, spec, micro_batch: int, attention: str, lm_head: str) -> dict:
    """The simulator's FLOPs for the profiled rows and micro-batch, in the FLOP counters' format (integers).
    Lives here, not in the profiler, so that validate and calibrate check counts without torch."""
    c = counts(plan, lm_head)
    ops = op_flops(c, spec, attention)
    # Python integers from float64 counts (exact below 2**53, far above any profiled step): fixed-width
    # integers would wrap silently on a results file's largest allowed sizes
    per_layer = [int(x) for x in micro_batch * sum(np.asarray(v, dtype=float) for v in ops.values())[0]]
    lm = int(micro_batch * float(lm_head_flops(c, spec)))
    fwd = sum(per_layer) + lm
    rank = int(micro_batch * np.asarray(ops["rank"], dtype=float)[0].sum())
    return {"per_layer_forward": per_layer, "lm_head_forward": lm, "forward": fwd, "backward": 2 * (fwd - rank)}


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
# Activation and static memory live in memory.py (one model per training stack); re-exported here for
# the callers that price one reference-executor case.
from .memory import activation_bytes, static_bytes, transient_logits_bytes  # noqa: E402,F401


# ---------------------------------------------------------------------------------------- time
def linear_time(rows, k_in, n_out, hw: HardwareSpec, precision: str = "bf16"):
    """Forward + backward seconds of one linear layer: ``rows`` tokens x ``k_in`` -> ``n_out`` (any
    broadcastable shapes). Three GEMMs, each priced at its own shape (``efficiency.gemm_time``):
    forward [rows, k_in] x [k_in, n_out]; input gradient [rows, n_out] x [n_out, k_in]; weight gradient
    [k_in, rows] x [rows, n_out], whose reduction runs over the tokens.

    This is the one place where a GEMM's FLOPs become time: parallel layouts pass the per-rank shapes.
    ``precision="fp8"`` runs at the GPU's dense fp8 peak (``peak_flops_fp8``).
    """
    elem = efficiency.DTYPE_BYTES.get(precision, 2)
    peak = hw.peak_flops_fp8 if precision == "fp8" else None
    t = lambda M, N, K: efficiency.gemm_time(M, N, K, hw, peak=peak, precision=precision, elem_bytes=elem)  # noqa: E731
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


@dataclass(frozen=True)
class Dropout:
    """The dropout a step runs (``training.hidden_dropout`` / ``attention_dropout`` above 0) and how its
    kernels are built. ``hidden``: after the attention output projection and after the MLP, on the query
    rows x hidden size; ``fused_hidden``: folded into the bias-and-residual add that runs anyway
    (Megatron's bias_dropout_add, FlashAttention's dropout_add_ln), else a kernel of its own
    (``torch.nn.Dropout``, as Hugging Face models call it). ``attention``: on the attention probabilities;
    priced where a kernel materialises them (the explicit ``math`` kernel), drawn inside fused kernels."""
    hidden: bool = False
    attention: bool = False
    fused_hidden: bool = True

    @classmethod
    def of(cls, training: TrainingSpec) -> "Dropout":
        return cls(hidden=training.hidden_dropout > 0, attention=training.attention_dropout > 0,
                   fused_hidden=training.stack != "huggingface")


NO_DROPOUT = Dropout()
MASK_BYTES = 1  # a dropout mask element (torch.bool / uint8)


def dropout_bytes(c: Counts, m: ModelSpec, hw: HardwareSpec, B: int, e: int, shard: Shard,
                  dropout: Dropout) -> dict[str, np.ndarray]:
    """Memory traffic dropout adds to one layer on one rank, [P, L] bytes: ``forward``, ``backward`` and
    the attention part of the forward (``attention_forward``, which selective recompute runs again).

    A separate dropout kernel reads its input, writes its output and a mask (2e + 1 bytes an element);
    a fused one adds only the mask write to the kernel it joins (1 byte). Backward always reads the
    incoming gradient and the mask and writes the scaled gradient (2e + 1): without dropout the residual
    passes the gradient on untouched. Attention dropout costs bytes only where the probabilities are a
    tensor in memory (the ``math`` kernel materialises the whole query x key rectangle per head); fused
    attention kernels draw the mask in registers, whose cost no public table here measures."""
    zero = 0.0 * c.nq
    fwd, bwd, att = zero, zero, zero
    if dropout.hidden:
        elems = per_rank(per_rank(B * c.nq * 2 * m.hidden_size, shard.hidden), shard.context)  # two sites
        fwd = fwd + elems * (MASK_BYTES if dropout.fused_hidden else 2 * e + MASK_BYTES)
        bwd = bwd + elems * (2 * e + MASK_BYTES)
    if dropout.attention and hw.attention_kernel == "math":
        elems = per_rank(per_rank(B * c.pairs_full * m.num_attention_heads, shard.tensor), shard.context)
        att = elems * (2 * e + MASK_BYTES)
        fwd, bwd = fwd + att, bwd + att
    return {"forward": fwd, "backward": bwd, "attention_forward": att}


def executor_layer_bytes(c: Counts, m: ModelSpec, B: int, e: int, shard: Shard = NO_SHARD,
                         per_layer_gathers: bool = True):
    """Memory-bound bytes of the reference executor's layers (``profiler/model.py``), forward and backward,
    [P, L] each: every elementwise and reduction operator it dispatches, each input read once and each
    output written once, as ``profiler/traffic.py`` counts them (exact: tests/test_traffic.py; not
    priced: the weight-gradient sums of a projection applied to several segments, weight-sized).

    Per query row: two RMSNorms computed in fp32 (below fp32 each casts its input up twice and its output
    down once, ``up`` bytes an element each; then square, mean, scale, weight: 20 bytes and 2e an element
    forward; its backward 76 bytes an element in fp32 and four casts; fp32 statistics per row), two
    residual adds (3e), rotary on q and, per key row, on k (multiply, negate half, concatenate, multiply,
    add: 10e an element; backward the same and, with more than one head, a copy back to the row layout,
    2e), the activation function (SiLU or GELU and, gated, the product: 5e forward, 9e backward; ungated
    2e and 3e). Backward also adds the gradients of tensors read twice: the attention norm's output (read
    by Q, K, V: two adds), the MLP norm's (gated: one) and the two residual branches, 3e each. Rows kept
    as keys only (kv_only) are normed, concatenated behind the query rows' keys and values, and their
    norm gradient accumulated once. Layers with image-specific weights over several segments split the
    rows by segment and concatenate the projections (``Counts.split_q``, ``split_kvo``). Each gather of
    rows from the whole sequence zero-fills and accumulates the sequence's gradient in backward. Once per call,
    whatever the batch: the rotary tables (two reads each for q and k rows, forward and backward) and the
    norms' weights."""
    d, H, Hkv, hd, I = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim, m.intermediate_size
    t, cp, sp = shard.tensor, shard.context, shard.hidden
    Q, K = H * hd / t, Hkv * hd / t
    up = e + 4 if e < 4 else 0
    gated = m.mlp_matrices == 3
    norm_f, norm_b = (3 * up + 20 + 2 * e), (76 + 4 * up)          # bytes per element of d
    act_f, act_b = (5 * e, 9 * e) if gated else (2 * e, 3 * e)     # bytes per element of I
    adds = 5 if gated else 4                                        # gradient accumulations of 3e per element of d
    hidden_f = c.nq * (d * (2 * norm_f + 6 * e) + 48) + c.nkvo * (d * norm_f + 24)
    hidden_b = c.nq * (d * (2 * norm_b + 3 * e * adds) + 32) + c.nkvo * (d * (norm_b + 3 * e) + 16)
    # kv_only rows present: the keys and values of the query rows and of the kv_only rows are concatenated
    heads_f = c.nq * (10 * e * Q + act_f * I / t) + c.nkv * 10 * e * K + (c.nkv * 4 * e * K) * (c.nkvo > 0)
    # backward: rotary's gradient is copied back into the row layout unless one head makes it a view
    heads_b = (c.nq * ((10 + 2 * (H > t)) * e * Q + act_b * I / t)
               + c.nkv * (10 + 2 * (Hkv > t)) * e * K)
    # layers with image-specific weights over several segments: with more than one sample the segment
    # pieces are copied out (forward) and the projections' gradient slices copied for the GEMMs (backward);
    # the projections are concatenated (forward) and the pieces' gradients joined (backward)
    many = (np.asarray(B) > 1) * 1.0
    hidden_f = hidden_f + (c.split_q + c.split_kvo) * 2 * d * e * many
    hidden_b = hidden_b + (c.split_q + c.split_kvo) * 2 * d * e
    heads_f = heads_f + c.split_q * 2 * e * (Q + 2 * K) + c.split_kvo * 4 * e * K
    heads_b = heads_b + (c.split_q * 2 * e * (Q + 2 * K) + c.split_kvo * 4 * e * K) * many
    # every gather of rows from the whole sequence (the query rows where the set changes, a layer's kv_only
    # rows) scatters its gradient into a zeroed whole-sequence tensor in backward, which is then added to
    # the sequence's other gradient: N d e written, 3 N d e added
    # (the reference executor's gathers; a compacting executor, per_layer_gathers False, moves rows once)
    if per_layer_gathers:
        selects = c.regathered * 1.0 + (c.nkvo > 0)
        hidden_b = hidden_b + selects * c.total * 4 * d * e
    tables = 2 * e * hd * (c.nq + c.nkv)                             # rotary tables, per call
    weights_f = d * e * (2 + (c.nkvo > 0))
    weights_b = d * (2 * up + 8) * (2 + (c.nkvo > 0))
    fwd = per_rank(B * (per_rank(hidden_f, sp) + heads_f), cp) + per_rank(tables, cp) + weights_f
    bwd = per_rank(B * (per_rank(hidden_b, sp) + heads_b), cp) + per_rank(tables, cp) + weights_b
    return fwd, bwd


def executor_layer_kernels(c: Counts, m: ModelSpec, B: int, e: int, shard: Shard = NO_SHARD,
                           per_layer_gathers: bool = True):
    """Memory-bound kernels the reference executor launches per layer and micro-batch, forward and
    backward, [P, L] each: the operators ``executor_layer_bytes`` prices, counted one by one as
    ``profiler/traffic.py`` counts them (tests/test_traffic.py holds the two together). Each pays
    ``memory_bound_kernel_s`` of device time whatever its size.

    An RMSNorm is 6 kernels forward in fp32 (square, mean, add, rsqrt, two products) and 9 backward, plus
    3 and 6 casts below fp32; two residual adds; rotary on q and k, 5 each (and, in backward, the copy
    back to the row layout where more than one head makes it one); the activation (gated: 2 forward, 3
    backward; else 1 and 1); backward's gradient accumulations (5 gated, 4 not). Rows kept as keys only
    add a norm and the two concatenations of K and V (backward: the norm's and 2 more, 4 more with more
    than one sample). A gather of rows from the whole sequence adds a zero-fill and an accumulation in
    backward (``per_layer_gathers``, as in the bytes). A layer with image-specific weights over n segment
    pieces concatenates Q, K and V (3), copies the pieces with more than one sample (n); backward it
    accumulates each piece's gradient from three projections and joins them (2n - 1), sums each
    projection's weight gradients over the pieces it is applied to (``Counts.split_q_weight_sums``), and
    with more than one sample copies the projections' gradient slices (3n). Kept-as-keys rows split into n
    pieces: 2 concatenations (and the n copies) forward; backward n, the weight sums, and 2(n - 1) slice
    copies with more than one sample. Not counted: for attention-ranked dropping, the ranking's and the
    index building's small kernels (a few a layer)."""
    low = e < 4
    norm_f, norm_b = 6 + 3 * low, 9 + 6 * low
    gated = m.mlp_matrices == 3
    t = shard.tensor
    H, Hkv = m.num_attention_heads, m.num_key_value_heads
    many = (np.asarray(B) > 1) * 1.0
    kv = (c.nkvo > 0) * 1.0
    fwd = 2 * norm_f + 2 + 10 + (2 if gated else 1) + kv * (norm_f + 2)
    bwd = (2 * norm_b + 10 + (H > t) + (Hkv > t) + (3 if gated else 1) + (5 if gated else 4)
           + kv * (norm_b + 2 + 4 * many) + 2 * (c.regathered * 1.0 + kv) * per_layer_gathers)
    q, kvo = c.split_q_pieces, c.split_kvo_pieces
    on_q, on_kvo = (np.asarray(q) > 0) * 1.0, (np.asarray(kvo) > 0) * 1.0
    fwd = fwd + on_q * 3 + many * q + on_kvo * 2 + many * kvo
    bwd = (bwd + on_q * (2 * q - 1) + c.split_q_weight_sums + many * 3 * q
           + on_kvo * kvo + c.split_kvo_weight_sums + many * 2 * np.maximum(kvo - 1, 0))
    return fwd + 0.0 * c.nq, bwd + 0.0 * c.nq


# the reference executor's memory-bound kernels outside its layers, per micro-batch, forward and backward
# (embedding, final norm, logits cast, cross-entropy), fp32 and below: counted by profiler/traffic.py
EXECUTOR_OUTSIDE_KERNELS = {True: (13, 20), False: (9, 13)}
# fused training stacks (Megatron-LM, Transformer Engine) launch fewer: per layer forward two norms,
# rotary (one fused kernel), two bias-dropout-adds, the activation (six); backward about twice as many
FUSED_LAYER_KERNELS = (6, 12)
FUSED_OUTSIDE_KERNELS = (3, 4)


def microbatch_terms(c: Counts, m: ModelSpec, hw: HardwareSpec, micro_batch: int, act_bytes: int,
                     shard: Shard = NO_SHARD, dropout: Dropout = NO_DROPOUT, kernels: str = "unfused",
                     gathers: str = "per_layer") -> dict:
    """The per-layer prices of one task-homogeneous micro-batch on one rank, before they are summed:
    ``matmul`` and ``attention`` [P, L] seconds, ``layer_bytes`` [P, L] memory-bound bytes,
    ``gather_bytes`` [P, L] (the reference executor's per-layer gather/scatter), ``change_bytes`` [P, L]
    (a compacting executor's index traffic where the token set changes), and the LM head's ``lm_matmul``
    seconds and ``loss_bytes``.

    matmuls: three GEMMs per linear layer at their own per-rank shapes (``linear_time``): tensor
    parallelism shards each projection's output (column-parallel Q, K, V, MLP up/gate, vocabulary) or
    input (row-parallel O, MLP down), context parallelism shards the rows;
    attention: the pairs the kernel executes (the causal triangle, or the whole rectangle where an
    explicit mask is used) at the kernel's efficiency for that length (``attention_core_time``), heads
    sharded by tensor, pairs by context (load-balanced causal chunks);
    memory-bound work (norms, rotary, residuals, activation function, loss) and gathers of token rows:
    bytes / (bandwidth x efficiency), and each memory-bound kernel a fixed time (``layer_kernels``,
    ``loss_kernels``: counts, priced in ``stage_times``); the hidden-size part is sharded over tensor ranks only with
    sequence parallelism; dropout's masks and passes (``dropout_bytes``).
    """
    B = micro_batch
    t, cp = shard.tensor, shard.context
    f = op_flops(c, m, "causal")
    d, H, Hkv, hd, I, V = (m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim,
                           m.intermediate_size, m.vocab_size)
    e, pr = act_bytes, shard.matmul_precision
    rows_q, rows_kv = per_rank(B * c.nq, cp), per_rank(B * c.nkv, cp)
    mm = (linear_time(rows_q, d, H * hd // t, hw, pr) + linear_time(rows_q, H * hd // t, d, hw, pr)  # q, o
          + 2 * linear_time(rows_kv, d, Hkv * hd // t, hw, pr)                                      # k, v
          + linear_time(rows_q, d, I * (m.mlp_matrices - 1) // t, hw, pr)
          + linear_time(rows_q, I // t, d, hw, pr))                                                 # MLP
    lm_matmul = linear_time(per_rank(B * c.n_lm, cp), d, per_rank(V, t), hw)  # the LM head stays in bf16

    att = attention_core_time(per_rank(B * c.pairs_exec, cp), rows_q, H // t, hd, hw, masked=c.masked)
    rank = (1 + hw.attention_backward_ratio) * per_rank(B * f["rank"], t * cp) / (
        hw.peak_flops * hw.attention_efficiency * hw.sustained_compute_fraction)

    if kernels == "unfused":  # the reference executor's kernels, operator by operator
        layer_bytes, layer_bytes_backward = executor_layer_bytes(c, m, B, e, shard, gathers == "per_layer")
        layer_kernels, layer_kernels_backward = executor_layer_kernels(c, m, B, e, shard, gathers == "per_layer")
        loss_kernels = EXECUTOR_OUTSIDE_KERNELS[e < 4]
    else:  # fused kernels: one pass forward, about two backward
        act = 3 * I if m.mlp_matrices == 3 else 2 * I
        hidden = c.nq * (4 * d + 6 * d) + c.nkvo * 2 * d
        # (the explicit-mask path takes grouped-query K/V as is: no expansion to every head)
        heads = c.nq * (2 * H * hd + act) + c.nkv * 2 * Hkv * hd
        layer_bytes = per_rank(B * e * (per_rank(hidden, shard.hidden) + per_rank(heads, t)), cp)
        layer_bytes_backward = 2 * layer_bytes
        layer_kernels = np.full_like(layer_bytes, FUSED_LAYER_KERNELS[0], dtype=float)
        layer_kernels_backward = np.full_like(layer_bytes, FUSED_LAYER_KERNELS[1], dtype=float)
        loss_kernels = FUSED_OUTSIDE_KERNELS
    loss_bytes = per_rank(per_rank(B * c.n_lm * V * (e + 4 + 4 + 4), t), cp)
    # token rows moved: a gather where the query set changes, a scatter before the next change, kv_only rows
    gather_bytes = per_rank(per_rank(B * e * d * 2 * (c.nq_regathered + c.nq_written_back + c.nkvo),
                                     shard.hidden), cp)
    change_bytes = per_rank(B * INDEX_BYTES * c.change_rows, cp)
    cast_bytes = fp8_cast_bytes(c, m, B, e, t, cp, shard.hidden) if pr == "fp8" else 0.0 * layer_bytes
    drop = dropout_bytes(c, m, hw, B, e, shard, dropout)
    # kernels beside the layer's own, as their bytes are priced: FP8 casts (Transformer Engine's
    # cast-transpose of the four GEMM inputs forward and four output gradients backward), dropout's
    # (hidden: a kernel a site forward unless fused, and backward; attention: where ``math`` materialises it)
    attention_drop = float(dropout.attention and hw.attention_kernel == "math")
    casts = 4.0 if pr == "fp8" else 0.0
    extra_f = casts + 2.0 * dropout.hidden * (not dropout.fused_hidden) + attention_drop
    extra_b = casts + 2.0 * dropout.hidden + attention_drop
    layer_kernels, layer_kernels_backward = layer_kernels + extra_f, layer_kernels_backward + extra_b
    return dict(matmul=mm, attention=att + rank, layer_bytes=layer_bytes, layer_bytes_backward=layer_bytes_backward,
                gather_bytes=gather_bytes,
                change_bytes=change_bytes, cast_bytes=cast_bytes, lm_matmul=lm_matmul, loss_bytes=loss_bytes,
                dropout_forward_bytes=drop["forward"], dropout_backward_bytes=drop["backward"],
                dropout_attention_forward_bytes=drop["attention_forward"],
                layer_kernels=layer_kernels, layer_kernels_backward=layer_kernels_backward,
                loss_kernels=sum(loss_kernels),  # forward and backward, on the last stage
                dropout_attention_kernels=attention_drop)


def fp8_cast_bytes(c: Counts, m: ModelSpec, B: int, e: int, tensor: int, context: int, hidden: int = 1) -> np.ndarray:
    """Memory traffic of FP8 quantisation per layer, forward plus backward, [P, L] bytes on one rank.

    An FP8 GEMM takes FP8 operands: each linear layer's input is cast in the forward pass, and the
    gradient of its output in the backward pass (Transformer Engine's fused cast-transpose: read the
    ``e``-byte tensor once, write an FP8 copy and an FP8 transposed copy for the weight-gradient GEMM,
    ``e + 2`` bytes an element). Inputs: Q/K/V (one fused projection over the key/value rows), O, MLP
    up/gate and down; output gradients: Q/K/V, O, MLP up/gate and down. Weight casts are made once per
    optimizer step and cached across micro-batches, so they are not charged per micro-batch. With
    sequence parallelism (``hidden`` = tensor size) the hidden-size-wide tensors are cast on each rank's
    shard, before the all-gather that then moves FP8, and after the reduce-scatter."""
    d, H, Hkv, hd, I = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim, m.intermediate_size
    t = tensor
    inputs = (np.maximum(c.nq, c.nkv) + c.nq) * d / hidden + c.nq * (H * hd // t + I // t)
    grads = 2 * c.nq * d / hidden + c.nq * (H * hd // t + I * (m.mlp_matrices - 1) // t) + c.nkv * 2 * Hkv * hd // t
    return per_rank(B * (e + 2) * (inputs + grads), context)


INDEX_BYTES = 4  # one int32 row index


def stage_times(terms: dict, c: Counts, hw: HardwareSpec, stages, last: np.ndarray, recompute: str,
                gathers: str = "per_layer") -> dict[str, np.ndarray]:
    """Forward+backward time of one micro-batch on each pipeline stage, per component, each [P, p].

    ``stages`` is a ``parallel.StageLayout``; ``last`` [p] marks the stage that holds the LM head.
    ``gathers``: ``per_layer`` (the reference executor gathers a layer's rows and scatters them back in
    every layer that works on a subset) or ``on_change`` (a compacting executor moves rows only where
    the token set changes, fused into the neighbouring kernels, so only row indices are read).
    With one stage every component is computed exactly as the unsplit model computes it.
    """
    from .parallel import stage_sums
    w = c.weights
    bw = hw.memory_bandwidth * hw.bandwidth_efficiency
    layers_matmul = stage_sums(terms["matmul"] * w, stages)
    matmul = layers_matmul + np.where(last, terms["lm_matmul"], 0.0)
    attention = stage_sums(terms["attention"] * w, stages)
    dropout = {k: stage_sums(terms[f"dropout_{k}_bytes"] * w, stages) / bw
               for k in ("forward", "backward", "attention_forward")}
    layers_fwd = stage_sums(terms["layer_bytes"] * w, stages)
    loss = np.where(last, terms["loss_bytes"], 0)
    cast = stage_sums(terms["cast_bytes"] * w, stages)
    # each memory-bound kernel also pays a fixed device time, whatever its bytes
    # (the embedding's few kernels are counted with the loss's, on the last stage)
    k = hw.memory_bound_kernel_s
    kernels_fwd = k * stage_sums(terms["layer_kernels"] * w, stages)
    kernels_bwd = k * stage_sums(terms["layer_kernels_backward"] * w, stages)
    kernels_loss = k * np.where(last, terms["loss_kernels"], 0)
    membound = (layers_fwd + stage_sums(terms["layer_bytes_backward"] * w, stages) + 3 * loss + cast) / bw \
        + kernels_fwd + kernels_bwd + kernels_loss
    # the memory-bound part of the layers' forward run again (recompute leaves the LM head and loss alone)
    rerun = (layers_fwd + cast / 3) / bw + kernels_fwd + dropout["forward"]
    membound = membound + dropout["forward"] + dropout["backward"]
    if gathers == "per_layer":
        gather = 3 * stage_sums(terms["gather_bytes"] * w, stages) / (hw.memory_bandwidth * hw.gather_efficiency)
    else:
        gather = 3 * stage_sums(terms["change_bytes"] * w, stages) / (hw.memory_bandwidth * hw.gather_efficiency)
    overhead = np.broadcast_to(hw.layer_overhead_s * stage_sums(w, stages) + hw.step_overhead_s,
                               matmul.shape).astype(float)
    out = {"matmul": matmul, "attention": attention, "memory_bound": membound, "gather": gather,
           "overhead": overhead}
    if recompute == "full":  # the layers' forward runs again inside backward (not the LM head's)
        out["recompute"] = (layers_matmul / 3
                            + out["attention"] / (1 + hw.attention_backward_ratio) + rerun + out["gather"] / 3)
    elif recompute == "selective":  # the attention core's forward (with its dropout) runs again inside backward
        out["recompute"] = (out["attention"] / (1 + hw.attention_backward_ratio) + dropout["attention_forward"]
                            + k * stage_sums(terms["dropout_attention_kernels"] * w, stages))
    return out


def host_wait(components: dict, c: Counts, hw: HardwareSpec, stages, recompute: str) -> np.ndarray:
    """How long the device waits for the host per stage, [P, p]: host dispatch beyond the sum of the
    device ``components`` (the GPU runs asynchronously, so a stage takes the longer of the two)."""
    return np.maximum(0.0, host_time(c, hw, stages, recompute) - sum(components.values()))


def host_time(c: Counts, hw: HardwareSpec, stages, recompute: str, *, per_microbatch: bool = True) -> np.ndarray:
    """Host (CPU) seconds to dispatch one micro-batch on each pipeline stage, [P, p] (broadcast): the
    stage's layers at ``host_layer_s`` each; full recompute dispatches the forward again, which is
    about 0.4 of a layer's forward-plus-backward operators (78 of 197 on this project's executor).
    ``per_microbatch``: add the micro-batch's work outside the layers (``step_overhead_s``: the
    embedding, the loss, the schedule's sends and bookkeeping), which the host does as well; a host that
    cannot keep ahead of the device pays it on top of the layers' dispatch, a device-bound stage hides it
    (its device time carries the same term)."""
    from .parallel import stage_sums
    again = 0.4 if recompute == "full" else 0.0
    layers = hw.host_layer_s * (1 + again) * stage_sums(c.weights, stages)
    return layers + hw.step_overhead_s if per_microbatch else layers


def microbatch_time(c: Counts, m: ModelSpec, hw: HardwareSpec, micro_batch: int, act_bytes: int,
                    checkpointing: bool) -> dict[str, np.ndarray]:
    """Forward+backward time of one task-homogeneous micro-batch on one GPU (no model parallelism), per
    component, each [P] seconds; see ``microbatch_terms`` for the prices."""
    from .parallel import single_stage
    terms = microbatch_terms(c, m, hw, micro_batch, act_bytes)  # the reference executor: stack trsim
    stages, recompute = single_stage(c.weights.shape[-1]), "full" if checkpointing else "none"
    st = stage_times(terms, c, hw, stages, np.array([True]), recompute)
    st["host_bound"] = host_wait(st, c, hw, stages, recompute)
    return {k: v[..., 0] for k, v in st.items()}


def optimizer_time(params, t: TrainingSpec, hw: HardwareSpec, data_parallel: int):
    """AdamW step: reads master weights, gradients and both moments, writes them back and the bf16 copy."""
    local = params / (max(data_parallel, 1) if t.zero_stage >= 1 else 1)
    per_param = t.optimizer_bytes * 2 + t.gradient_bytes + t.weight_bytes
    return local * per_param / (hw.memory_bandwidth * hw.bandwidth_efficiency)
