"""Memory per GPU: weights, gradients and optimizer states under ZeRO, the activations each training
stack saves for backward, what the loss and the optimizer step hold on top, and the peak of a pipeline
stage with its in-flight micro-batches.

Three stacks (``training.stack``) save different tensors for the same token plan; each is written term
by term below, per token row and per layer, with the same row counts from the plan:

* ``trsim``: this project's reference executor (``profiler/model.py``); exact against autograd's saved
  tensors (tests/test_profiler.py).
* ``huggingface``: transformers' LlamaForCausalLM with sdpa; exact against the real model's saved
  tensors on CPU in fp32 and bf16 (tests/test_parallel.py).
* ``megatron``: Megatron-Core with Transformer Engine: Korthikanti et al. (2022)'s accounting with
  flash attention (no s^2 score term; an fp32 log-sum-exp per head instead), generalised to GQA and
  gated MLPs.

With ``training.hidden_dropout`` above 0 every stack also keeps the two hidden-size dropout masks of each
layer (one byte an element; Korthikanti et al.'s 2sbh of their 34sbh). Attention dropout's mask lives
inside fused attention kernels; the ``math`` kernel's materialised score tensors are not counted here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ModelSpec, TrainingSpec
from .parallel import NO_SHARD, Shard, per_rank


@dataclass(frozen=True)
class ActivationTerms:
    """Bytes saved for backward per sample, on one rank: ``layer`` [P, L] per layer without recompute;
    ``selective`` [P, L] what selective recompute does not keep (the attention core's own saved outputs);
    ``kept`` [P, L] what a fully recomputed layer keeps (its input); ``lm`` at the LM head and loss;
    ``per_batch`` saved once per micro-batch, whatever its size; ``transient`` [per sample] live only at
    the loss besides the saved tensors (logits, their copies and gradient)."""
    layer: np.ndarray
    selective: np.ndarray
    kept: np.ndarray
    lm: float
    per_batch: float
    transient: float


def activation_terms(stack: str, c, m: ModelSpec, e: int, shard: Shard = NO_SHARD,
                     micro_batch: int = 2, hidden_dropout: bool = False) -> ActivationTerms:
    d, H, Hkv, hd, I, V = (m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim,
                           m.intermediate_size, m.vocab_size)
    t, cp, sp = shard.tensor, shard.context, shard.hidden
    gated = m.mlp_matrices == 3
    kv = c.nkv * 2 * Hkv * hd * e  # rotated k and v at KV heads (every attention path takes GQA K/V as is)
    if stack == "trsim":
        # per query row: layer input, normed input, residual after attention, its norm (4d); rotated q and
        # the attention output (2 H hd); MLP intermediates (4I gated, 2I); fp32 norm statistics (2) and
        # log-sum-exp (H). The last layer before the query set changes, where that set is a gathered subset:
        # the working rows index_copy keeps when it writes them back (d). kv_only rows: frozen state and its
        # norm (2d) plus a norm statistic. LM head: final-norm input and output, fp32 log-probabilities; one
        # fp32 loss normaliser per micro-batch. Full recompute keeps each layer's working rows and, once per
        # change of the query set, the whole sequence it reads kv_only rows from.
        mlp = 4 * I if gated else 2 * I
        hidden = c.nq * 4 * d * e + c.nq_written_back * d * e + c.nkvo * (2 * d * e + 4) + c.nq * 8
        heads = c.nq * ((2 * H * hd + mlp) * e + 4 * H) + kv
        layer = _shard_sum(hidden, heads, t, sp, cp)
        lm = per_rank(per_rank(c.n_lm * (2 * d * e + 4), sp) + per_rank(c.n_lm * 4 * V, t), cp)
        kept = (c.nq + c.total * c.regathered) * d * e  # working rows; the whole sequence once per change
        # at the loss's backward the fp32 log-probabilities (saved, in ``lm``) live beside their gradient and
        # the gradient of the fp32 logits (8 bytes a logit); the forward's logits and their fp32 copy (e + 4)
        # are gone by then and never more
        per_batch, transient = 4, per_rank(c.n_lm * V * 8, t)
        lse = c.nq * 4 * H
    elif stack == "huggingface":
        # LlamaRMSNorm: its fp32 input copy, fp32 rsqrt, the normed tensor in the model dtype and the
        # weighted output the next linear saves (4d + 4 + 2 e d), twice per layer; rotated q and the sdpa
        # output (2 H hd); k and v; fp32 log-sum-exp (H); MLP gate, up, act(gate), act(gate)*up (4I, 2I
        # ungated). kv_only rows: their input norm. LM head: final norm, fp32 log-softmax, int64 shifted
        # label; per micro-batch the rotary cos and sin (batch-independent) and the fp32 loss.
        mlp = 4 * I if gated else 2 * I
        norm = 4 * d + 4 + 2 * e * d
        hidden = c.nq * 2 * norm + c.nkvo * norm
        heads = c.nq * ((2 * H * hd + mlp) * e + 4 * H) + kv
        layer = _shard_sum(hidden, heads, t, sp, cp)
        lm = per_rank(c.n_lm * (norm + 8) + c.n_lm * 4 * V / t, cp)
        kept = c.live * d * e
        # cos and sin for the whole sequence, the loss; with one sample the shifted labels stay a view of
        # the padded labels (one int64 more: [1, N+1][:, 1:] is contiguous, so .contiguous() copies nothing)
        per_batch = 2 * c.total * hd * e + 4 + (8 if micro_batch == 1 else 0)
        transient = c.n_lm * V * (e + 4 + 4) / t  # the returned logits, their fp32 copy, its gradient
        lse = c.nq * 4 * H
    elif stack == "megatron":
        # Transformer Engine LayerNormLinear / LayerNormMLP save the norm input and output (2 e d) and an
        # fp32 rsigma; flash attention saves q, k, v, the output (which is also the projection's input)
        # and an fp32 log-sum-exp per head; the MLP saves fc1's output (2I gated, I) and the activation's
        # (I). kv_only rows: their input norm. Vocabulary-parallel cross-entropy keeps fp32 exp-logits and
        # an int64 target; the bf16 logits live beside them at the loss.
        mlp = 3 * I if gated else 2 * I
        norm = 2 * e * d + 4
        hidden = c.nq * 2 * norm + c.nkvo * norm
        heads = c.nq * ((2 * H * hd + mlp) * e + 4 * H) + kv
        layer = _shard_sum(hidden, heads, t, sp, cp)
        lm = per_rank(per_rank(c.n_lm * norm, sp) + c.n_lm * (4 * V / t + 8), cp)
        kept = per_rank(c.live * d * e, sp)
        per_batch, transient = 4, c.n_lm * e * V / t
        lse = c.nq * 4 * H
    else:  # pragma: no cover - the schema only allows the three
        raise ValueError(stack)
    if hidden_dropout:  # one byte of mask per element after the attention projection and after the MLP
        layer = layer + _shard_sum(c.nq * 2 * d, 0, t, sp, cp)
    return ActivationTerms(layer=layer, selective=per_rank(per_rank(lse, t), cp), kept=per_rank(kept, cp),
                           lm=lm, per_batch=per_batch, transient=per_rank(transient, cp))


def _shard_sum(hidden, heads, t: int, sp: int, cp: int):
    """Per-rank bytes: the hidden-size part split over tensor ranks only with sequence parallelism, the
    head/MLP part over tensor ranks, both over context ranks (integers untouched when nothing is split)."""
    return per_rank(per_rank(hidden, sp) + per_rank(heads, t), cp)


def activation_bytes(c, m: ModelSpec, micro_batch: int, act_bytes: int, checkpointing: bool) -> np.ndarray:
    """Bytes the reference executor saves for backward for one micro-batch on one GPU, [P]."""
    from .parallel import single_stage
    a = activation_terms("trsim", c, m, act_bytes)
    st = single_stage(c.weights.shape[-1])
    return stage_activation_bytes(a, c.weights, micro_batch, "full" if checkpointing else "none", st,
                                  np.array([True]), np.array([1]))[..., 0]


def transient_logits_bytes(c, m: ModelSpec, micro_batch: int, act_bytes: int):
    """Bytes live at the loss besides the saved tensors (reference executor): in the loss's backward, the
    gradients of the fp32 log-probabilities and of the fp32 logits."""
    return micro_batch * activation_terms("trsim", c, m, act_bytes).transient


def stage_activation_bytes(a: ActivationTerms, w, B: int, recompute: str, stages, last, in_flight) -> np.ndarray:
    """Saved activations each pipeline stage holds at its peak, [P, p]: ``in_flight`` [p] chunks of
    micro-batches (see ``parallel.in_flight``; one whole stage per micro-batch without interleaving), the
    LM head's on the last stage for the one micro-batch at the loss. Full recompute keeps each layer's
    input per micro-batch in flight and, during one layer's backward, that layer's activations."""
    from .parallel import stage_max, stage_sums
    n = in_flight / stages.virtual
    lm = np.where(last, a.lm, 0)
    if recompute == "full":
        kept = stage_sums(a.kept * w, stages)
        return B * (n * kept + stage_max(a.layer, stages) + lm) + a.per_batch
    layer = a.layer - a.selective if recompute == "selective" else a.layer
    return B * (n * stage_sums(layer * w, stages) + lm) + a.per_batch


# ----------------------------------------------------------------------------------- static
def static_bytes(params, t: TrainingSpec, data_parallel: int) -> dict[str, np.ndarray]:
    """Weights, gradients and optimizer states per GPU under ZeRO stage 0-3 over data-parallel GPUs."""
    dp = max(data_parallel, 1)
    z = t.zero_stage
    return {"weights": params * t.weight_bytes / (dp if z >= 3 else 1),
            "gradients": params * t.gradient_bytes / (dp if z >= 2 else 1),
            "optimizer": params * t.optimizer_bytes / (dp if z >= 1 else 1)}


def optimizer_temporaries(params, t: TrainingSpec, data_parallel: int):
    """Bytes the optimizer step allocates on top of the states it updates: PyTorch's multi-tensor AdamW
    writes sqrt(v) to a new buffer in the moments' dtype. Moments in the weights' own dtype with no master
    copy (``optimizer_bytes`` twice ``weight_bytes``, as torch.optim.AdamW keeps them for bf16 weights):
    one buffer of the weights' size (measured on an H200: tests/test_gpu_campaign_data.py). Otherwise fp32
    moments, and where gradients are kept below fp32, an fp32 copy of them too."""
    local = params / (max(data_parallel, 1) if t.zero_stage >= 1 else 1)
    if t.optimizer_bytes == 2 * t.weight_bytes:
        return local * t.weight_bytes
    return local * (4 + (4 if t.gradient_bytes < 4 else 0))


def gradients_live_at_loss(t: TrainingSpec, micro_batches: int, replicas: int = 1) -> bool:
    """Whether the gradients exist while the first micro-batch's activations are all alive. A single
    PyTorch process frees them each step (``zero_grad(set_to_none=True)``, the default), so a step of one
    micro-batch allocates them during its backward, as the activations are freed; with accumulation the
    later micro-batches run on top of them. Megatron keeps them in persistent contiguous buffers, and so
    do data-parallel wrappers short of sharding them with the weights (DDP's gradient buckets, ZeRO-1 and
    -2's gradient partitions) over ``replicas`` > 1 (data x context ranks); FSDP / ZeRO-3 allocates its
    shards in backward."""
    return (t.stack == "megatron" or micro_batches > 1
            or (replicas > 1 and t.zero_stage < 3))


def peak_bytes(static: dict, act_peak, temporaries, gradients_live: bool):
    """Peak bytes on one GPU: at the loss (every activation alive, the gradients only where they outlive
    the step) or in the optimizer step (every gradient and the step's own temporaries)."""
    total = sum(static.values())
    at_loss = total - (0 if gradients_live else static["gradients"]) + act_peak
    return np.maximum(at_loss, total + temporaries)


def stage_parameters(m: ModelSpec, plans, stages, tensor: int) -> np.ndarray:
    """Parameters each rank of each pipeline stage holds, [P, p]: its layers' matrices split over tensor
    ranks (norm weights replicated), the image-specific projections of its layers, the vocabulary-parallel
    embedding on the first stage and the final norm and LM head on the last (with tied embeddings and
    more than one stage the last stage keeps its own copy, as Megatron does). One stage, one tensor rank:
    exactly the model's parameter count."""
    from .parallel import stage_sums
    d, H, Hkv, hd, I, V = (m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim,
                           m.intermediate_size, m.vocab_size)
    p = stages.pipeline
    matrices = d * H * hd * 2 + d * Hkv * hd * 2 + m.mlp_matrices * d * I
    per_layer = matrices // tensor + 2 * d
    extra = 0
    for plan in plans:
        w = plan.weights()
        extra = extra + (plan.sep_q * w) * (d * H * hd // tensor) + (plan.sep_kv * w) * (2 * d * Hkv * hd // tensor)
    n_layers = np.asarray(stages.layers_per_stage())
    emb = V * d // tensor if V % tensor == 0 else -(-V // tensor) * d
    first = np.arange(p) == 0
    last = np.arange(p) == p - 1
    head = np.where(last, d + (emb if (not m.tie_word_embeddings or p > 1) else 0), 0)
    fixed = n_layers * per_layer + np.where(first, emb, 0) + head
    if np.ndim(extra) == 0:
        return np.broadcast_to(fixed, (1, p)).astype(np.int64)
    return fixed + np.rint(stage_sums(extra, stages)).astype(np.int64)
