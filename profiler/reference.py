"""The slow, obviously-correct version of the pruned decoder, for equivalence tests.

Every layer processes the whole sequence with an explicit [N, N] mask; a token that is not a query
in a layer keeps its hidden state unchanged (``torch.where``), a token that is not a key is masked
out of every row. It shares the parameters of a ``Decoder`` and nothing of its indexing code.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trsim.simulator.plan import FULL, KV_ONLY

from .model import Decoder, even_choice, rope_tables


def _rms(x, w, eps):
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)) * w


@torch.no_grad()
def _roles(plan, l, present_pos):
    N = plan.layout.total
    q = torch.zeros(N, dtype=torch.bool)
    kv = torch.zeros(N, dtype=torch.bool)
    for s, name in enumerate(plan.layout.names):
        pos = present_pos[name]
        mode = int(plan.mode[0, l, s])
        if mode == FULL:
            q[pos] = True
            kv[pos] = True
        elif mode == KV_ONLY:
            kv[pos] = True
    return q, kv


def reference_loss(model: Decoder, ids, labels):
    plan, spec = model.plan, model.spec
    lay = plan.layout
    B, N = ids.shape
    H, Hkv, hd = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    cos, sin = rope_tables(N, hd, dtype=torch.float32)
    is_image = torch.zeros(N, dtype=torch.bool)
    for s, (o, t) in enumerate(zip(lay.offsets, lay.tokens)):
        is_image[o:o + t] = bool(lay.is_image[s])
    present = {n: np.arange(o, o + t) for n, o, t in zip(lay.names, lay.offsets, lay.tokens)}
    scores = None
    h = model.embed(ids)
    pos = torch.arange(N)
    for l, layer in enumerate(model.layers):
        for s, name in enumerate(lay.names):  # survivors of this layer
            m, cur = int(plan.present[0, l, s]), present[name]
            if m < len(cur):
                if scores is not None and name in scores:
                    keep = np.sort(torch.topk(scores[name], m).indices.numpy())
                else:
                    keep = even_choice(len(cur), m)
                present[name] = cur[keep]
        q_role, kv_role = _roles(plan, l, present)
        xn = _rms(h, layer.attn_norm.weight, layer.attn_norm.eps)

        def proj(w_text, w_image):
            y = xn @ w_text.weight.T
            if w_image is not None:
                y = torch.where(is_image[None, :, None], xn @ w_image.weight.T, y)
            return y

        q = proj(layer.wq, layer.wq_image).view(B, N, H, hd).transpose(1, 2)
        k = proj(layer.wk, layer.wk_image).view(B, N, Hkv, hd).transpose(1, 2)
        v = proj(layer.wv, layer.wv_image).view(B, N, Hkv, hd).transpose(1, 2)
        rot = lambda x: torch.cat((-x[..., hd // 2:], x[..., :hd // 2]), -1)  # noqa: E731
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        allowed = kv_role[None, :] & (pos[None, :] <= pos[:, None])
        allowed |= ~q_role[:, None] & (pos[None, :] == pos[:, None])  # non-query rows: any valid row, discarded
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
        scores = None
        ranked = {name: int(plan.rank[0, l, s]) for s, name in enumerate(lay.names) if plan.rank[0, l, s]}
        if ranked:
            last = int(torch.nonzero(q_role).max())
            raw = (q[:, :, last:last + 1, :] @ k.transpose(-1, -2)).squeeze(-2) / math.sqrt(hd)  # [B, H, N]
            scores = {name: raw[:, :, torch.as_tensor(present[name])].softmax(-1).mean(dim=(0, 1))
                      for name in ranked}
        a = (att @ v).transpose(1, 2).reshape(B, N, H * hd)
        h1 = h + a @ layer.wo.weight.T
        hn = _rms(h1, layer.mlp_norm.weight, layer.mlp_norm.eps)
        if layer.mlp_kind == "swiglu":
            mlp = F.silu(hn @ layer.w_gate.weight.T) * (hn @ layer.w_up.weight.T)
        elif layer.mlp_kind == "geglu":
            mlp = F.gelu(hn @ layer.w_gate.weight.T, approximate="tanh") * (hn @ layer.w_up.weight.T)
        else:
            mlp = F.gelu(hn @ layer.w_up.weight.T, approximate="tanh")
        out = h1 + mlp @ layer.w_down.weight.T
        h = torch.where(q_role[None, :, None], out, h)
    if model.lm_head_mode == "targets":
        idx = torch.cat([torch.arange(o, o + t) for o, t, tg in zip(lay.offsets, lay.tokens, lay.target) if tg])
        h = h[:, idx]
    logits = _rms(h, model.norm.weight, model.norm.eps) @ model.lm_head.weight.T
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())
