"""The executor's memory traffic as counted at the dispatcher (profiler/traffic.py), against the closed
form README states for a baseline layer's forward: what the GPU campaign's memory-bound kernel times
are compared with."""
import copy

import pytest
import torch

from trsim.profiler.model import Decoder
from trsim.profiler.traffic import count_step
from trsim.simulator import scenario_from_dict
from trsim.simulator.plan import compile_schedule


def forward_layer_bytes(B, n, d, Q, K, I, hd, e):
    """One baseline (swiglu) layer's forward, B samples of n rows: two RMSNorms computed in fp32 (casts up
    twice and down once below fp32: c bytes an element each), rotary on q and k (two multiplies, a
    negation, a concatenation and an add over each), two residual adds, SiLU and the gate product; once
    per call, whatever the batch: the norms' weights and the rotary tables (read by two multiplies each
    for q and for k)."""
    c = e + 4 if e < 4 else 0
    norm = d * (3 * c + 20 + 2 * e) + 24
    return B * n * (2 * norm + 6 * d * e + 10 * e * (Q + K) + 5 * e * I) + n * 4 * e * hd + 2 * d * e


@pytest.mark.parametrize("dtype,e", [(torch.bfloat16, 2), (torch.float32, 4)])
@pytest.mark.parametrize("shape", [dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        intermediate_size=96),
                                   dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=6, head_dim=8,
                                        intermediate_size=200)])
def test_forward_traffic_of_a_baseline_layer_is_the_closed_form(tiny_doc, dtype, e, shape):
    doc = copy.deepcopy(tiny_doc)
    doc["model"].update(shape)
    scn = scenario_from_dict(doc)
    plan = compile_schedule(scn, "baseline", "u")
    torch.manual_seed(0)
    m = Decoder(scn.model, plan, attention="sdpa").to(dtype)
    m.build_io(torch.device("cpu"), dtype)
    for B in (1, 3):
        ids, labels = m.make_batch(B, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
        got = count_step(m, ids, labels)
        d, hd = shape["hidden_size"], shape["head_dim"]
        Q, K = shape["num_attention_heads"] * hd, shape["num_key_value_heads"] * hd
        want = forward_layer_bytes(B, plan.layout.total, d, Q, K, shape["intermediate_size"], hd, e)
        assert got["forward"]["layer_bytes"] == [want] * plan.num_layers
        assert got["backward"]["bytes"]["memory_bound"] > got["forward"]["bytes"]["memory_bound"]


def _layer_traffic(tiny_doc, shape, layers, dtype):
    doc = copy.deepcopy(tiny_doc)
    doc["model"].update(shape, num_layers=layers)
    doc["schedules"] = {"baseline": {}}
    scn = scenario_from_dict(doc)
    plan = compile_schedule(scn, "baseline", "u")
    torch.manual_seed(0)
    m = Decoder(scn.model, plan, attention="sdpa").to(dtype)
    m.build_io(torch.device("cpu"), dtype)
    ids, labels = m.make_batch(2, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    return count_step(m, ids, labels), scn, plan


@pytest.mark.parametrize("dtype,e", [(torch.bfloat16, 2), (torch.float32, 4)])
@pytest.mark.parametrize("heads,mlp", [((4, 2, 16), "swiglu"), ((6, 6, 8), "swiglu"), ((4, 1, 32), "swiglu"),
                                       ((1, 1, 32), "swiglu"), ((4, 2, 16), "geglu"), ((4, 2, 16), "gelu")])
def test_simulator_prices_the_executor_layer_traffic_exactly(tiny_doc, dtype, e, heads, mlp):
    """costs.executor_layer_bytes (the trsim stack's memory-bound bytes) and costs.executor_layer_kernels
    (each pays memory_bound_kernel_s) against the counted traffic and operators of a layer: forward per
    layer, backward as the difference one more layer makes to the whole step (layers that gather rows
    also zero-fill and accumulate the whole sequence's gradient in backward, which the bytes leave out,
    so backward is checked on a baseline layer); the whole step's kernels less its layers'
    are EXECUTOR_OUTSIDE_KERNELS."""
    from trsim.simulator import costs
    H, Hkv, hd = heads
    shape = dict(hidden_size=80, num_attention_heads=H, num_key_value_heads=Hkv, head_dim=hd, intermediate_size=112,
                 mlp=mlp)
    one, _, _ = _layer_traffic(tiny_doc, shape, 1, dtype)
    two, scn, plan = _layer_traffic(tiny_doc, shape, 2, dtype)
    fwd, bwd = costs.executor_layer_bytes(costs.counts(plan, "all"), scn.model, 2, e)
    assert two["forward"]["layer_bytes"] == [fwd[0, 0], fwd[0, 1]]
    assert two["backward"]["bytes"]["memory_bound"] - one["backward"]["bytes"]["memory_bound"] == bwd[0, 1]
    kf, kb = costs.executor_layer_kernels(costs.counts(plan, "all"), scn.model, 2, e)
    assert two["forward"]["layer_ops"] == [kf[0, 0], kf[0, 1]]
    assert two["backward"]["ops"]["memory_bound"] - one["backward"]["ops"]["memory_bound"] == kb[0, 1]
    outside = costs.EXECUTOR_OUTSIDE_KERNELS[e < 4]
    assert two["forward"]["ops"]["memory_bound"] == kf.sum() + outside[0]
    assert two["backward"]["ops"]["memory_bound"] == kb.sum() + outside[1]


@pytest.mark.parametrize("schedule", ["baseline", "himix", "hmgen", "drop"])
@pytest.mark.parametrize("dtype,e", [(torch.bfloat16, 2), (torch.float32, 4)])
def test_every_schedules_forward_layer_traffic_is_priced_exactly(tiny, schedule, dtype, e):
    """kv_only rows (HiMix), image-specific weights over several segments (HMGen, HiMix), gathered query
    sets (drop): each forward layer's counted bytes equal the simulator's, at one and at three samples
    (where the segment pieces are copied out)."""
    from trsim.simulator import costs
    plan = compile_schedule(tiny, schedule, "u")
    torch.manual_seed(0)
    m = Decoder(tiny.model, plan, attention="sdpa").to(dtype)
    m.build_io(torch.device("cpu"), dtype)
    for B in (1, 3):
        ids, labels = m.make_batch(B, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
        fwd, _ = costs.executor_layer_bytes(costs.counts(plan, "all"), tiny.model, B, e)
        assert count_step(m, ids, labels)["forward"]["layer_bytes"] == [int(x) for x in fwd[0]]


def test_transformers_llama_moves_about_the_executors_bytes():
    """Hugging Face's eager LlamaForCausalLM (sdpa) runs the same unfused operators but for one fp32 cast
    in RMSNorm and autograd's own norm backward: a layer's counted traffic is within 6% of the executor's
    price, forward and backward, which is why the huggingface stack defaults to unfused kernels."""
    transformers = pytest.importorskip("transformers")
    from trsim.simulator import costs
    from trsim.simulator.config import ModelSpec, Task
    from trsim.simulator.plan import Layout, compile_points
    from trsim.profiler.traffic import TrafficCounter
    dims = dict(hidden_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=24, intermediate_size=160)

    def layer_traffic(layers):
        cfg = transformers.LlamaConfig(num_hidden_layers=layers, vocab_size=64, attn_implementation="sdpa", **dims)
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).train()
        ids = torch.randint(0, 64, (2, 40))
        fwd, bwd = TrafficCounter(), TrafficCounter()
        with fwd:
            loss = model(input_ids=ids, labels=ids).loss
        with bwd:
            loss.backward()
        return fwd.bytes["memory_bound"], bwd.bytes["memory_bound"]
    (f1, b1), (f2, b2) = layer_traffic(1), layer_traffic(2)
    m = ModelSpec(num_layers=1, vocab_size=64, **dims)
    c = costs.counts(compile_points(None, Layout.from_task(Task(samples=1, segments=[
        dict(name="text", kind="text", tokens=40)])), 1))
    fwd, bwd = costs.executor_layer_bytes(c, m, 2, 2)
    assert (f2 - f1) / fwd[0, 0] == pytest.approx(1, abs=0.06)
    assert (b2 - b1) / bwd[0, 0] == pytest.approx(1, abs=0.06)


@pytest.mark.parametrize("schedule", ["drop", "pyramid"])
@pytest.mark.parametrize("dtype,e", [(torch.bfloat16, 2), (torch.float32, 4)])
def test_backward_traffic_of_gathering_layers_is_priced_exactly(tiny, schedule, dtype, e):
    """Layers that gather rows (drop, pyramid's stages): the whole step's backward traffic less the part
    outside the layers (the same as the baseline's: same sequence, loss over every position) equals the
    priced layers', at one and three samples. (HiMix's and HMGen's split layers add weight-gradient
    sums and, with several samples, gradient-slice copies that are not priced.)"""
    from trsim.simulator import costs

    def counted(name, B):
        plan = compile_schedule(tiny, name, "u")
        torch.manual_seed(0)
        m = Decoder(tiny.model, plan, attention="sdpa").to(dtype)
        m.build_io(torch.device("cpu"), dtype)
        ids, labels = m.make_batch(B, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
        _, bwd = costs.executor_layer_bytes(costs.counts(plan, "all"), tiny.model, B, e)
        return count_step(m, ids, labels)["backward"]["bytes"]["memory_bound"], bwd[0].sum()
    for B in (1, 3):
        base_counted, base_priced = counted("baseline", B)
        got, priced = counted(schedule, B)
        assert got - (base_counted - base_priced) == priced


@pytest.mark.parametrize("schedule", ["baseline", "himix", "hmgen", "drop", "pyramid", "table"])
@pytest.mark.parametrize("dtype,e", [(torch.bfloat16, 2), (torch.float32, 4)])
def test_every_schedules_memory_bound_kernels_are_counted(tiny, schedule, dtype, e):
    """Per schedule, at one and three samples: each forward layer's kernels and the whole step's
    backward exactly (pyramid's ranking layers launch a few more forward, not counted: at most 10 a
    layer)."""
    from trsim.simulator import costs
    plan = compile_schedule(tiny, schedule, "u")
    torch.manual_seed(0)
    m = Decoder(tiny.model, plan, attention="sdpa").to(dtype)
    m.build_io(torch.device("cpu"), dtype)
    outside = costs.EXECUTOR_OUTSIDE_KERNELS[e < 4]
    for B in (1, 3):
        ids, labels = m.make_batch(B, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
        got = count_step(m, ids, labels)
        fwd, bwd = costs.executor_layer_kernels(costs.counts(plan, "all"), tiny.model, B, e)
        if schedule == "pyramid":
            extra = [g - int(f) for g, f in zip(got["forward"]["layer_ops"], fwd[0])]
            assert all(0 <= x <= 10 for x in extra) and sum(extra) > 0, extra
        else:
            assert got["forward"]["layer_ops"] == [int(x) for x in fwd[0]]
            assert got["forward"]["ops"]["memory_bound"] == fwd.sum() + outside[0]
        assert got["backward"]["ops"]["memory_bound"] == bwd.sum() + outside[1]


@pytest.mark.parametrize("images,texts", [(2, 1), (3, 2)])
@pytest.mark.parametrize("schedule", ["himix", "hmgen", "table"])
def test_memory_bound_kernels_of_split_layers_over_several_images_are_counted(tiny_doc, images, texts, schedule):
    """Layers with image-specific weights over several text and image segments (each projection's weight
    gradient summed over the pieces it applies to; kept-as-keys rows split by image), at one and three
    samples: the whole step's kernels, forward per layer and backward, exactly."""
    from trsim.simulator import costs
    segments = []
    for i in range(max(images, texts)):
        if i < texts:
            segments.append(dict(name=f"text{i}", kind="text", tokens=3))
        if i < images:
            segments.append(dict(name=f"image{i}", kind="image", tokens=6))
    segments[-1]["target"] = True
    doc = copy.deepcopy(tiny_doc)
    doc["tasks"] = {"u": dict(samples=10, segments=segments)}
    scn = scenario_from_dict(doc)
    plan = compile_schedule(scn, schedule, "u")
    c = costs.counts(plan, "all")
    assert (c.split_q_pieces > 0).any()
    torch.manual_seed(0)
    m = Decoder(scn.model, plan, attention="sdpa").to(torch.bfloat16)
    m.build_io(torch.device("cpu"), torch.bfloat16)
    outside = costs.EXECUTOR_OUTSIDE_KERNELS[True]
    for B in (1, 3):
        ids, labels = m.make_batch(B, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
        got = count_step(m, ids, labels)
        fwd, bwd = costs.executor_layer_kernels(c, scn.model, B, 2)
        assert got["forward"]["layer_ops"] == [int(x) for x in fwd[0]]
        assert got["backward"]["ops"]["memory_bound"] == bwd.sum() + outside[1]
