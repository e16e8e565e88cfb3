"""Two independent FLOP counters for the pruned decoder, both in FLOPs (2 per multiply-add).

* ``torch.utils.flop_counter.FlopCounterMode`` (forward and backward). Out of the box it counts
  attention as every query against every key (no causal halving) and counts the CPU kernel
  ``_scaled_dot_product_flash_attention_for_cpu`` as zero. We replace the formulas of every SDPA
  kernel (CPU flash; CUDA flash, memory-efficient and cuDNN; forward and backward) with ours, which
  read the call's real mask: under the ``causal`` convention they count the query-key pairs the mask
  leaves visible, under ``full`` every query against every key the call was given.
* fvcore's ``FlopCountAnalysis`` (forward only). It counts one per multiply-add, so totals are
  doubled, and it has no handle for ``aten::scaled_dot_product_attention``; ours reads the traced
  call's ``is_causal`` flag and its mask, which tracing records as a constant.

FlexAttention (the CUDA kernel of layers with kv_only keys) cannot run under either counter (the
higher-order op has no FlopCounterMode or tracing support in torch 2.13), so both counters count the
same layers with SDPA and the same mask (``counting_with_sdpa``), and ``flex_visible_pairs`` checks
that every flex block mask admits exactly the query-key pairs of that mask, evaluating its mask_mod
on every pair.

Backward attention is counted as twice the forward (dQ, dK, dV and dP), the same convention as the
simulator's "backward = 2 x forward"; kernels that recompute scores do more work than that.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

_SDPA_FORWARD = {  # op name -> (index of query, key, value, is_causal in positional args, mask kwarg/pos)
    "_scaled_dot_product_flash_attention_for_cpu": dict(q=0, k=1, v=2, causal=4, mask="attn_mask"),
    "_scaled_dot_product_flash_attention": dict(q=0, k=1, v=2, causal=4, mask=None),
    "_scaled_dot_product_efficient_attention": dict(q=0, k=1, v=2, causal=6, mask=3),
    "_scaled_dot_product_cudnn_attention": dict(q=0, k=1, v=2, causal=6, mask=3),
}
_SDPA_BACKWARD = {
    "_scaled_dot_product_flash_attention_for_cpu_backward": dict(q=1, k=2, v=3, causal=7, mask="attn_mask"),
    "_scaled_dot_product_flash_attention_backward": dict(q=1, k=2, v=3, causal=11, mask=None),
    "_scaled_dot_product_efficient_attention_backward": dict(q=1, k=2, v=3, causal=11, mask=4),
    "_scaled_dot_product_cudnn_attention_backward": dict(q=1, k=2, v=3, causal=14, mask=8),
}


def visible_pairs(nq: int, nk: int, is_causal: bool, mask, batch_heads: int, convention: str) -> int:
    """Query-key pairs an attention call computes, summed over batch and heads."""
    if convention == "full":
        return batch_heads * nq * nk
    if mask is not None:
        visible = mask if mask.dtype == torch.bool else mask != float("-inf")
        lead = batch_heads // max(1, visible.shape[:-2].numel())
        return int(visible.sum().item()) * lead
    if is_causal:  # PyTorch aligns is_causal to the top left
        return batch_heads * sum(min(i + 1, nk) for i in range(nq))
    return batch_heads * nq * nk


def _attention_flops(q_shape, v_shape, pairs):
    hd, hd_v = q_shape[-1], v_shape[-1]
    return 2 * pairs * hd + 2 * pairs * hd_v


def _raw_formula(spec: dict, convention: str, backward: bool):
    def formula(*args, out_val=None, **kwargs):
        q, v = args[spec["q"]], args[spec["v"]]
        k = args[spec["k"]]
        causal = args[spec["causal"]] if len(args) > spec["causal"] else kwargs.get("is_causal", False)
        m = spec["mask"]
        mask = kwargs.get(m) if isinstance(m, str) else (args[m] if m is not None and len(args) > m else None)
        B, H, nq = q.shape[0], q.shape[1], q.shape[-2]
        pairs = visible_pairs(nq, k.shape[-2], bool(causal), mask, B * H, convention)
        f = _attention_flops(q.shape, v.shape, pairs)
        return 2 * f if backward else f
    formula._get_raw = True
    return formula


def sdpa_formulas(convention: str) -> dict:
    out = {}
    for table, backward in ((_SDPA_FORWARD, False), (_SDPA_BACKWARD, True)):
        for name, spec in table.items():
            packet = getattr(torch.ops.aten, name, None)
            if packet is not None:
                out[packet] = _raw_formula(spec, convention, backward)
    return out


@contextmanager
def counting_with_sdpa(model, ids):
    """Run a flex-attention model's masked layers with SDPA (same mask) while the counters run."""
    backend = model.attention
    if model.backend(ids.device) != "flex":
        yield
        return
    dtype = model.embed.weight.dtype
    model.set_attention("sdpa", ids.device, dtype)
    try:
        yield
    finally:
        model.set_attention(backend, ids.device, dtype)


def flex_visible_pairs(model) -> list[int | None]:
    """Per layer of the last forward: the query-key pairs its FlexAttention block mask admits (the
    mask_mod evaluated on every pair; per sample and head), or None where the layer ran no flex call."""
    from torch.nn.attention.flex_attention import create_mask
    out = []
    for io in model.layer_ios():
        bm = io.block_mask
        if bm is None:
            out.append(None)
            continue
        nq, nk = bm.seq_lengths
        out.append(int(create_mask(bm.mask_mod, None, None, nq, nk, device=io.idx_q.device).sum().item()))
    return out


def flex_masks_match(model) -> bool:
    """Every flex layer of the last forward admits exactly the plan's causal query-key pairs."""
    from trsim.simulator.costs import counts
    want = counts(model.plan).pairs_causal[0]
    return all(got is None or got == int(w) for got, w in zip(flex_visible_pairs(model), want))


def count_flop_counter(model, ids, labels, convention: str = "causal") -> dict:
    """FlopCounterMode over one forward and one backward of ``model`` (a profiler.model.Decoder)."""
    with counting_with_sdpa(model, ids):
        return _count_flop_counter(model, ids, labels, convention)


def _count_flop_counter(model, ids, labels, convention: str) -> dict:
    from torch.utils.flop_counter import FlopCounterMode
    mapping = sdpa_formulas(convention)
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False, custom_mapping=mapping) as fwd:
        loss = model(ids, labels)
    counts = fwd.get_flop_counts()
    root = type(model).__name__
    per_layer = [int(sum(counts.get(f"{root}.layers.{l}", {}).values())) for l in range(len(model.layers))]
    with FlopCounterMode(display=False, custom_mapping=mapping) as bwd:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {"per_layer_forward": per_layer, "lm_head_forward": int(sum(counts.get(f"{root}.lm_head", {}).values())),
            "forward": int(fwd.get_total_flops()), "backward": int(bwd.get_total_flops())}


def _fvcore_sdpa_handle(convention: str):
    from fvcore.nn.jit_handles import get_shape

    def handle(inputs, outputs):
        q, k, v = (get_shape(x) for x in inputs[:3])
        mask = None
        if inputs[3].node().kind() == "prim::Constant":
            mask = inputs[3].toIValue()
        elif convention == "causal":
            raise RuntimeError("fvcore: an attention mask that is not a traced constant cannot be counted exactly")
        is_causal = bool(inputs[5].toIValue()) if len(inputs) > 5 else False
        pairs = visible_pairs(q[-2], k[-2], is_causal, mask, q[0] * q[1], convention)
        return _attention_flops(q, v, pairs) // 2  # fvcore counts multiply-adds
    return handle


def count_fvcore(model, ids, labels, convention: str = "causal") -> dict:
    """fvcore FlopCountAnalysis over one forward (by tracing); returned in FLOPs (2 per multiply-add)."""
    with counting_with_sdpa(model, ids):
        return _count_fvcore(model, ids, labels, convention)


def _count_fvcore(model, ids, labels, convention: str) -> dict:
    import logging
    from fvcore.nn import FlopCountAnalysis
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        fa = FlopCountAnalysis(model, (ids, labels))
        fa.set_op_handle("aten::scaled_dot_product_attention", _fvcore_sdpa_handle(convention))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        fa.tracer_warnings("none")
        by_module = fa.by_module()
    per_layer = [2 * int(by_module.get(f"layers.{l}", 0)) for l in range(len(model.layers))]
    return {"per_layer_forward": per_layer, "lm_head_forward": 2 * int(by_module.get("lm_head", 0)),
            "forward": 2 * int(fa.total())}
