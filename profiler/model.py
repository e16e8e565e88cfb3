"""A LLaMA-style decoder that executes a trsim token plan for real.

Shapes: B micro-batch, N sequence length, d hidden size, H query heads, Hkv key/value heads,
hd head dim, I MLP width, V vocabulary. The decoder keeps two states: ``h``, the whole sequence
[B, N, d], and ``x``, the working rows of the current query set. Where the plan changes the query set
(``plan.query_set_changes``), the working rows are written back into ``h`` (``index_copy``) and the new
query rows are gathered from it (``index_select``); between changes the layers pass the compact ``x``
from one to the next, so a drop gathers once where a segment shrinks, not in every layer:

* full tokens are the working rows: normed, projected to Q, K, V, attended, passed through the MLP;
* kv_only tokens are read from ``h`` (where their state stays frozen, since nothing writes it),
  normed and projected to K and V only;
* skipped and dropped tokens are not read at all; their rows of ``h`` pass through unchanged.

Attention keeps a fused kernel in every layer. Where the query and key sets are the same it is one
``scaled_dot_product_attention(is_causal=True)`` call (flash on CUDA). Where kv_only keys join (HiMix),
the visible pairs are ``key position <= query position`` over the original positions: on CUDA a
FlexAttention call with a block mask built from those positions (a fused, block-sparse kernel: blocks
that are wholly masked are skipped), elsewhere SDPA with the same boolean mask (FlexAttention has no
CPU backward). Both take grouped-query K/V as they are. Rotary embeddings use the original positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trsim.simulator.config import ModelSpec
from trsim.simulator.plan import FULL, KV_ONLY, Plan, query_set_changes

ATTENTION_BACKENDS = ("auto", "sdpa", "flex")  # auto: flex for masked layers on CUDA, sdpa elsewhere


# ---------------------------------------------------------------------------------- building blocks
class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm that keeps only its input and the fp32 inverse RMS for backward."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        acc = torch.promote_types(x.dtype, torch.float32)  # statistics in fp32 at least
        rstd = torch.rsqrt(x.to(acc).pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (x.to(acc) * rstd).to(x.dtype) * weight

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        xhat = x.to(rstd.dtype) * rstd
        g = grad.to(rstd.dtype) * weight.to(rstd.dtype)
        grad_x = rstd * (g - xhat * (g * xhat).mean(-1, keepdim=True))
        grad_w = (grad.to(rstd.dtype) * xhat).flatten(0, -2).sum(0)
        return grad_x.to(x.dtype), grad_w.to(weight.dtype), None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return _RMSNormFunction.apply(x, self.weight, self.eps)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x [B, h, n, hd]; cos, sin [n, hd] for the tokens' original positions."""
    return x * cos + rotate_half(x) * sin


def rope_tables(n: int, hd: int, theta: float = 10000.0, device=None, dtype=torch.float32):
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)
    ang = torch.outer(torch.arange(n, device=device, dtype=torch.float32), inv)
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


# ------------------------------------------------------------------------------------ layer plan
@dataclass
class LayerIO:
    """What one layer reads: index tensors, chunk structure, mask and rotary rows (all constants)."""
    gathered: bool
    idx_q: torch.Tensor            # [nq] positions of query tokens, ascending
    q_chunks: list[tuple[int, bool, str]]   # (rows, is_image, segment) in query order
    idx_kvo: torch.Tensor | None   # [nkvo] positions of kv_only tokens
    kvo_chunks: list[tuple[int, bool, str]]
    mask: torch.Tensor | None      # [nq, nkv] additive (0 visible, -inf not), or None for is_causal
    block_mask: object | None      # FlexAttention BlockMask of the same mask (flex backend only)
    cos_q: torch.Tensor
    sin_q: torch.Tensor
    cos_k: torch.Tensor
    sin_k: torch.Tensor
    rank: dict[str, int]           # segment -> tokens to score for the next layer's drop
    regather: bool = True          # query set differs from the previous layer's: write back, then gather


def even_choice(n: int, m: int) -> np.ndarray:
    """Indices of m of n items, evenly spaced (the default survivors of a drop)."""
    return np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64)


def visible(kpos: torch.Tensor, qpos: torch.Tensor) -> torch.Tensor:
    """The one causal rule over original positions: a query sees the keys at or before it."""
    return kpos <= qpos


def flex_block_mask(qpos: torch.Tensor, kpos: torch.Tensor):
    """A FlexAttention block mask of ``visible`` for queries at ``qpos`` and keys at ``kpos``."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, k):
        return visible(kpos[k], qpos[q])
    return create_block_mask(mask_mod, None, None, len(qpos), len(kpos), device=qpos.device)


def layer_io(plan: Plan, l: int, survivors: dict[str, torch.Tensor], cos, sin, dtype, flex: bool = False,
             regather: bool = True) -> LayerIO:
    """Build layer ``l``'s inputs from the plan row and the current survivors of each segment."""
    lay = plan.layout
    q_idx, q_chunks, kvo_idx, kvo_chunks, rank = [], [], [], [], {}
    for s, name in enumerate(lay.names):
        mode, n = int(plan.mode[0, l, s]), int(plan.present[0, l, s])
        pos = survivors[name][:n]
        assert len(pos) == n, "survivors must be selected before building the layer"
        if n == 0:
            continue
        if mode == FULL:
            q_idx.append(pos)
            q_chunks.append((n, bool(lay.is_image[s]), name))
        elif mode == KV_ONLY:
            kvo_idx.append(pos)
            kvo_chunks.append((n, bool(lay.is_image[s]), name))
        if plan.rank[0, l, s]:
            rank[name] = int(plan.rank[0, l, s])
    idx_q = torch.cat(q_idx)
    idx_kvo = torch.cat(kvo_idx) if kvo_idx else None
    kpos = idx_q if idx_kvo is None else torch.cat([idx_q, idx_kvo])
    mask = block = None
    if idx_kvo is not None:
        # additive, in the model's dtype: SDPA would otherwise convert a boolean mask on every call (and
        # keep the converted copy for backward)
        mask = torch.zeros((len(idx_q), len(kpos)), dtype=dtype, device=idx_q.device).masked_fill(
            ~visible(kpos[None, :], idx_q[:, None]), float("-inf"))
        block = flex_block_mask(idx_q, kpos) if flex else None
    return LayerIO(gathered=len(idx_q) < lay.total, idx_q=idx_q, q_chunks=q_chunks, idx_kvo=idx_kvo,
                   kvo_chunks=kvo_chunks, mask=mask, block_mask=block, cos_q=cos[idx_q], sin_q=sin[idx_q],
                   cos_k=cos[kpos], sin_k=sin[kpos], rank=rank, regather=regather)


_COMPILED_FLEX = None


def flex_attention(q, k, v, block_mask):
    """FlexAttention with grouped-query K/V; compiled (the fused kernel) on CUDA, eager elsewhere
    (an unfused reference without backward on CPU, used to check the mask's numerics)."""
    global _COMPILED_FLEX
    from torch.nn.attention import flex_attention as fa
    if q.device.type != "cuda":
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "called without torch.compile": intended off CUDA
            return fa.flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)
    if _COMPILED_FLEX is None:
        # default dynamic: after a second shape the kernel is recompiled once with dynamic sizes, so a
        # campaign's many shapes never reach the recompile limit (past it torch would run eager, unfused)
        _COMPILED_FLEX = torch.compile(fa.flex_attention)
    return _COMPILED_FLEX(q, k, v, block_mask=block_mask, enable_gqa=True)


# ------------------------------------------------------------------------------------------ layer
class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, sep_q: bool, sep_kv: bool):
        super().__init__()
        d, H, Hkv, hd, I = (spec.hidden_size, spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim,
                            spec.intermediate_size)
        self.H, self.Hkv, self.hd, self.mlp_kind = H, Hkv, hd, spec.mlp
        self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
        self.wq = nn.Linear(d, H * hd, bias=False)
        self.wk = nn.Linear(d, Hkv * hd, bias=False)
        self.wv = nn.Linear(d, Hkv * hd, bias=False)
        self.wo = nn.Linear(H * hd, d, bias=False)
        # image-specific projections (HiMix image K/V, HMGen full-layer image Q/K/V)
        self.wq_image = nn.Linear(d, H * hd, bias=False) if sep_q else None
        self.wk_image = nn.Linear(d, Hkv * hd, bias=False) if sep_kv else None
        self.wv_image = nn.Linear(d, Hkv * hd, bias=False) if sep_kv else None
        self.w_up = nn.Linear(d, I, bias=False)
        self.w_gate = nn.Linear(d, I, bias=False) if spec.mlp != "gelu" else None
        self.w_down = nn.Linear(I, d, bias=False)

    @staticmethod
    def _split(x, chunks, separate: bool):
        """Rows of x [B, n, d] as (piece, is_image) per segment, each piece made contiguous once so that
        the Q, K and V projections keep the same tensors for backward; one text piece where no image
        weights apply."""
        if not separate or not any(img for _, img, _ in chunks):
            return [(x, False)]
        if len(chunks) == 1:
            return [(x, chunks[0][1])]
        return [(p.contiguous(), img) for p, (_, img, _) in zip(x.split([n for n, _, _ in chunks], dim=1), chunks)]

    @staticmethod
    def _project(parts, w_text, w_image):
        """Apply w_image to image pieces (where the layer has image weights) and w_text to the rest."""
        ys = [(w_image if img and w_image is not None else w_text)(p) for p, img in parts]
        return ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)

    def mlp(self, x):
        if self.mlp_kind == "swiglu":
            return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))
        if self.mlp_kind == "geglu":
            return self.w_down(F.gelu(self.w_gate(x), approximate="tanh") * self.w_up(x))
        return self.w_down(F.gelu(self.w_up(x), approximate="tanh"))

    def forward(self, x, io: LayerIO, h):
        """x [B, nq, d]: the working rows (the query tokens, in position order); h [B, N, d]: the whole
        sequence, read only for the frozen kv_only rows. Returns the new working rows and ranking scores."""
        B = x.shape[0]
        H, Hkv, hd = self.H, self.Hkv, self.hd
        xs = self._split(self.attn_norm(x), io.q_chunks, self.wq_image is not None or self.wk_image is not None)
        q = self._project(xs, self.wq, self.wq_image)                   # [B, nq, H*hd]
        k = self._project(xs, self.wk, self.wk_image)                   # [B, nq, Hkv*hd]
        v = self._project(xs, self.wv, self.wv_image)
        if io.idx_kvo is not None:                                                   # frozen kv_only rows
            ys = self._split(self.attn_norm(h.index_select(1, io.idx_kvo)), io.kvo_chunks,
                             self.wk_image is not None)                              # [B, nkvo, d] pieces
            k = torch.cat([k, self._project(ys, self.wk, self.wk_image)], dim=1)
            v = torch.cat([v, self._project(ys, self.wv, self.wv_image)], dim=1)
        nq, nkv = q.shape[1], k.shape[1]
        q = apply_rope(q.view(B, nq, H, hd).transpose(1, 2), io.cos_q, io.sin_q)     # [B, H, nq, hd]
        k = apply_rope(k.view(B, nkv, Hkv, hd).transpose(1, 2), io.cos_k, io.sin_k)  # [B, Hkv, nkv, hd]
        v = v.view(B, nkv, Hkv, hd).transpose(1, 2)
        scores = None
        if io.rank:
            with torch.no_grad():  # ranking chooses tokens; it is not differentiated
                scores = self._rank_scores(q, k, io)
        if io.mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=H != Hkv)
        elif io.block_mask is not None:
            a = flex_attention(q, k, v, io.block_mask)
        else:
            if q.is_cuda and H != Hkv:  # CUDA's fused kernels that take a mask do not take grouped K/V
                k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=io.mask, enable_gqa=H != Hkv and not q.is_cuda)
        a = a.transpose(1, 2).reshape(B, nq, H * hd)                                 # [B, nq, H*hd]
        h1 = x + self.wo(a)
        return h1 + self.mlp(self.mlp_norm(h1)), scores

    def _rank_scores(self, q, k, io: LayerIO) -> dict[str, torch.Tensor]:
        """FastV-style ranking: the attention the last query gives each token of a segment about to be
        dropped (softmax over the segment per head, mean over heads and the micro-batch). Costs
        2*H*hd FLOPs per scored token and sample, which the simulator counts as the 'rank' operator."""
        B, H, Hkv, hd = q.shape[0], self.H, self.Hkv, self.hd
        last = q[:, :, -1:, :].reshape(B, Hkv, H // Hkv, hd)                         # [B, Hkv, g, hd]
        out, start = {}, 0
        for n, _, name in io.q_chunks + io.kvo_chunks:
            if name in io.rank:
                seg_k = k[:, :, start:start + n, :]                                  # [B, Hkv, n, hd]
                s = torch.matmul(last, seg_k.transpose(-1, -2)) / math.sqrt(hd)     # [B, Hkv, g, n]
                out[name] = s.float().softmax(-1).mean(dim=(0, 1, 2))
            start += n
        return out


# ---------------------------------------------------------------------------------------- decoder
class Decoder(nn.Module):
    """Embedding, the plan's layers, final norm and LM head; ``forward`` returns the training loss."""

    def __init__(self, spec: ModelSpec, plan: Plan, lm_head: str = "all", attention: str = "auto"):
        super().__init__()
        assert plan.num_points == 1, "the decoder executes a single plan"
        assert attention in ATTENTION_BACKENDS, attention
        self.spec, self.plan, self.lm_head_mode, self.attention = spec, plan, lm_head, attention
        self._regather = query_set_changes(plan)[0]
        d, V = spec.hidden_size, spec.vocab_size
        self.embed = nn.Embedding(V, d)
        self.layers = nn.ModuleList(DecoderLayer(spec, bool(plan.sep_q[0, l]), bool(plan.sep_kv[0, l]))
                                    for l in range(plan.num_layers))
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, V, bias=False)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.checkpointing = False
        self._io: list[LayerIO] | None = None
        self._dynamic = bool(plan.rank.any())

    # -- plan -> per-layer inputs
    def _initial_survivors(self, device):
        lay = self.plan.layout
        return {n: torch.arange(o, o + t, device=device) for n, o, t in zip(lay.names, lay.offsets, lay.tokens)}

    def _select(self, survivors, l, scores):
        """Shrink each segment's survivors to the plan's count for layer l (evenly spaced, or by score)."""
        for s, name in enumerate(self.plan.layout.names):
            m, cur = int(self.plan.present[0, l, s]), survivors[name]
            if m < len(cur):
                if scores and name in scores:
                    keep = torch.topk(scores[name], m).indices.sort().values
                else:
                    keep = torch.as_tensor(even_choice(len(cur), m), device=cur.device)
                survivors[name] = cur[keep]
        return survivors

    def uses_flex(self, device) -> bool:
        return self.attention == "flex" or (self.attention == "auto" and torch.device(device).type == "cuda")

    def backend(self, device) -> str:
        """The kernel masked layers run on this device: 'flex' or 'sdpa'."""
        return "flex" if self.uses_flex(device) else "sdpa"

    def set_attention(self, attention: str, device, dtype) -> None:
        """Switch the masked layers' kernel (rebuilding the precomputed layer inputs)."""
        assert attention in ATTENTION_BACKENDS, attention
        self.attention = attention
        self.build_io(device, dtype)

    def layer_ios(self) -> list[LayerIO]:
        """The inputs of every layer of the last forward (static plans: precomputed)."""
        return self._io if self._io is not None else getattr(self, "_built", [])

    def _layer_io(self, l, surv, device, dtype):
        return layer_io(self.plan, l, surv, *self._rope, dtype, flex=self.uses_flex(device),
                        regather=bool(self._regather[l]))

    def build_io(self, device, dtype):
        """Precompute every layer's inputs (static plans: no attention-ranked dropping)."""
        cos, sin = rope_tables(self.plan.layout.total, self.spec.head_dim, device=device, dtype=dtype)
        self._rope = (cos, sin)
        lay = self.plan.layout
        self._idx_lm = None
        if self.lm_head_mode == "targets":
            self._idx_lm = torch.cat([torch.arange(o, o + t, device=device)
                                      for o, t, tg in zip(lay.offsets, lay.tokens, lay.target) if tg])
        if self._dynamic:
            self._io = None
            return
        surv = self._initial_survivors(device)
        ios = []
        for l in range(self.plan.num_layers):
            surv = self._select(surv, l, None)
            ios.append(self._layer_io(l, surv, device, dtype))
        self._io = ios

    def forward(self, ids, labels):
        """ids [B, N] token ids; labels [B, n_lm] next-token targets of the positions the LM head sees."""
        if not hasattr(self, "_rope"):
            self.build_io(ids.device, self.embed.weight.dtype)
        h = self.embed(ids)                                                          # [B, N, d]
        x, cur = h, None             # working rows and their positions (None: the whole sequence)
        surv = self._initial_survivors(ids.device) if self._dynamic else None
        self._built: list[LayerIO] = []
        scores = None
        for l, layer in enumerate(self.layers):
            with torch.profiler.record_function(f"trsim.layer.{l}"):
                if self._dynamic:
                    surv = self._select(surv, l, scores)
                    io = self._layer_io(l, surv, ids.device, h.dtype)
                    self._built.append(io)
                else:
                    io = self._io[l]
                if io.regather:  # the query set changes here: write the working rows back, gather the new ones
                    h = x if cur is None else h.index_copy(1, cur, x)
                    x, cur = (h.index_select(1, io.idx_q), io.idx_q) if io.gathered else (h, None)
                if self.checkpointing and torch.is_grad_enabled():
                    x, scores = torch.utils.checkpoint.checkpoint(layer, x, io, h, use_reentrant=False)
                else:
                    x, scores = layer(x, io, h)
        h = x if cur is None else h.index_copy(1, cur, x)
        if self.lm_head_mode == "targets":
            h = h.index_select(1, self._idx_lm)
        logits = self.lm_head(self.norm(h))                                          # [B, n_lm, V]
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()                                                  # the loss runs in fp32
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    def n_lm(self) -> int:
        lay = self.plan.layout
        return lay.total if self.lm_head_mode == "all" else int(lay.tokens[lay.target].sum())

    def make_batch(self, micro_batch: int, device, generator=None):
        N, V = self.plan.layout.total, self.spec.vocab_size
        ids = torch.randint(0, V, (micro_batch, N), device=device, generator=generator)
        labels = torch.randint(0, V, (micro_batch, self.n_lm()), device=device, generator=generator)
        return ids, labels


def init_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Normal(0, std) matrices, drawn on each parameter's own device (a GPU fills a 7B-width slice in
    milliseconds; drawing on the CPU and copying took seconds per case)."""
    gens: dict = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                g = gens.get(p.device)
                if g is None:
                    g = gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
                p.copy_(torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype) * std)
