"""The pruned decoder against the dense reference, both FLOP counters against the simulator, the
activation model against autograd's saved tensors, OOM handling and the atomic results file."""
import json

import pytest
import torch

from trsim.simulator import costs
from trsim.simulator.plan import compile_schedule, select_layers
from trsim.profiler.flops import count_flop_counter, count_fvcore
from trsim.profiler.measure import saved_activation_bytes
from trsim.profiler.model import Decoder, init_weights
from trsim.profiler.reference import reference_loss
from trsim.profiler.run import analytic_counts, profile_scenario
from trsim.profiler.schema import parse_results

METHODS = ["baseline", "himix", "hmgen", "drop", "pyramid", "table"]


@pytest.mark.parametrize("schedule", METHODS)
@pytest.mark.parametrize("lm_head", ["all", "targets"])
def test_pruned_equals_dense_reference(tiny, schedule, lm_head):
    plan = compile_schedule(tiny, schedule, "u")
    torch.manual_seed(0)
    m = Decoder(tiny.model, plan, lm_head=lm_head).double()
    init_weights(m, std=0.3)
    ids, labels = m.make_batch(2, "cpu")
    loss = m(ids, labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    ref = reference_loss(m, ids, labels)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    for n, p in m.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-12, rtol=1e-10), n


@pytest.mark.parametrize("schedule", METHODS)
@pytest.mark.parametrize("convention", ["causal", "full"])
def test_counted_flops_equal_analytic_per_layer(tiny, schedule, convention):
    plan = compile_schedule(tiny, schedule, "u")
    m = Decoder(tiny.model, plan)
    ids, labels = m.make_batch(2, "cpu")
    ana = analytic_counts(plan, tiny.model, 2, convention, "all")
    fc = count_flop_counter(m, ids, labels, convention)
    fv = count_fvcore(m, ids, labels, convention)
    for got in (fc, fv):
        assert got["per_layer_forward"] == ana["per_layer_forward"]
        assert got["lm_head_forward"] == ana["lm_head_forward"]
        assert got["forward"] == ana["forward"]
    assert fc["backward"] == ana["backward"]


def test_counter_sees_a_wrong_plan(tiny):
    """The check can fail: counting one schedule against another's analytic FLOPs disagrees."""
    m = Decoder(tiny.model, compile_schedule(tiny, "himix", "u"))
    ids, labels = m.make_batch(2, "cpu")
    other = analytic_counts(compile_schedule(tiny, "drop", "u"), tiny.model, 2, "causal", "all")
    assert count_flop_counter(m, ids, labels)["per_layer_forward"] != other["per_layer_forward"]


@pytest.mark.parametrize("schedule", METHODS)
@pytest.mark.parametrize("lm_head", ["all", "targets"])
def test_activation_model_matches_saved_tensors_exactly(tiny, schedule, lm_head):
    plan = compile_schedule(tiny, schedule, "u")
    m = Decoder(tiny.model, plan, lm_head=lm_head)
    m.build_io("cpu", torch.float32)
    ids, labels = m.make_batch(2, "cpu")
    measured = saved_activation_bytes(m, ids, labels)
    predicted = costs.activation_bytes(costs.counts(plan, lm_head), tiny.model, 2, 4, False)[0]
    assert measured == predicted


def test_subsampled_layers_execute_the_plan_rows(tiny):
    plan = compile_schedule(tiny, "hmgen", "u")
    idx, w = select_layers(plan, 2)
    sub = plan.rows(idx)
    m = Decoder(tiny.model, sub)
    ids, labels = m.make_batch(1, "cpu")
    assert count_flop_counter(m, ids, labels)["per_layer_forward"] == analytic_counts(sub, tiny.model, 1, "causal",
                                                                                     "all")["per_layer_forward"]
    assert w.sum() == 4


def test_oom_is_recorded_and_the_run_goes_on(tiny, monkeypatch):
    import trsim.profiler.run as run
    real = run.time_steps

    def boom(model, *a, **k):
        if any(l.wq_image is not None for l in model.layers):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, *a, **k)
    monkeypatch.setattr(run, "time_steps", boom)
    doc = profile_scenario(tiny, schedules=["baseline", "himix", "drop"], repeats=1, warmup=0, use_fvcore=False)
    status = {c["schedule"]: c["status"] for c in doc["cases"]}
    assert status == {"baseline": "ok", "himix": "oom", "drop": "ok"}
    assert "out of memory" in doc["cases"][1]["error"]
    parse_results(doc)


def test_profile_cli_writes_valid_results_atomically(tmp_path, monkeypatch):
    from trsim.cli import main
    out = tmp_path / "r.json"
    assert main(["profile", "scenarios/tiny_cpu.yaml", "--repeats", "2", "--warmup", "0", "--out", str(out),
                 "--schedules", "baseline,himix", "--format", "json"]) == 0
    doc = json.loads(out.read_text())
    res = parse_results(doc)
    assert {c.schedule for c in res.cases} == {"baseline", "himix"} and all(c.flops_match for c in res.cases)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind

    import trsim.simulator.fileio as fio
    def fail(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(fio.os, "fsync", fail)
    with pytest.raises(OSError):
        fio.atomic_write_json(out, {"x": 1})
    assert json.loads(out.read_text()) == doc and [p.name for p in tmp_path.iterdir()] == ["r.json"]


# ------------------------------------------------------------------ FlexAttention path (forward on CPU)
@pytest.mark.parametrize("schedule", METHODS)
def test_flex_path_equals_sdpa_and_dense_reference_forward(tiny, schedule):
    """The flex kernel's block mask executes the same function. FlexAttention has no CPU backward, so
    on CPU its forward is checked (float64, no grad); gradients of the SDPA path are checked above."""
    plan = compile_schedule(tiny, schedule, "u")
    torch.manual_seed(0)
    flex = Decoder(tiny.model, plan, attention="flex").double()
    init_weights(flex, std=0.3)
    sdpa = Decoder(tiny.model, plan, attention="sdpa").double()
    sdpa.load_state_dict(flex.state_dict())
    ids, labels = flex.make_batch(2, "cpu")
    with torch.no_grad():
        got, want, ref = flex(ids, labels), sdpa(ids, labels), reference_loss(flex, ids, labels)
    assert got.item() == pytest.approx(want.item(), abs=1e-12)
    assert got.item() == pytest.approx(ref.item(), abs=1e-12)
    masked = [io.block_mask is not None for io in flex.layer_ios()]
    assert masked == [io.mask is not None for io in sdpa.layer_ios()]
    assert any(masked) == (schedule in ("himix", "table"))


@pytest.mark.parametrize("schedule", ["himix", "table"])
def test_flex_block_masks_admit_exactly_the_analytic_pairs(tiny, schedule):
    from trsim.profiler.flops import flex_masks_match, flex_visible_pairs
    plan = compile_schedule(tiny, schedule, "u")
    m = Decoder(tiny.model, plan, attention="flex")
    m.build_io("cpu", torch.float32)
    pairs = costs.counts(plan).pairs_causal[0]
    got = flex_visible_pairs(m)
    assert [g for g in got if g is not None] == [int(p) for p, g in zip(pairs, got) if g is not None]
    assert flex_masks_match(m)
    # the check can fail: a mask that lets one more pair through
    io = next(io for io in m.layer_ios() if io.block_mask is not None)
    from trsim.profiler.model import flex_block_mask
    kpos = torch.cat([io.idx_q, io.idx_kvo])
    io.block_mask = flex_block_mask(io.idx_q + 1, kpos)
    assert not flex_masks_match(m)


def test_counters_count_a_flex_model_through_sdpa_with_the_same_mask(tiny):
    """Both counters switch a flex model's masked layers to SDPA and back, and match the analytic FLOPs."""
    plan = compile_schedule(tiny, "himix", "u")
    m = Decoder(tiny.model, plan, attention="flex")
    ids, labels = m.make_batch(2, "cpu")
    m.build_io("cpu", torch.float32)
    ana = analytic_counts(plan, tiny.model, 2, "causal", "all")
    fc = count_flop_counter(m, ids, labels, "causal")
    assert fc["per_layer_forward"] == ana["per_layer_forward"] and fc["backward"] == ana["backward"]
    assert count_fvcore(m, ids, labels, "causal")["forward"] == ana["forward"]
    assert m.attention == "flex" and any(io.block_mask is not None for io in m.layer_ios())


@pytest.mark.parametrize("schedule", METHODS)
def test_compact_state_gathers_once_per_change_of_the_query_set(tiny, schedule):
    """index_select/index_copy run once per change of the query set (plus the last write-back), not per layer."""
    from torch.profiler import profile
    from trsim.simulator.plan import query_set_changes
    plan = compile_schedule(tiny, schedule, "u")
    m = Decoder(tiny.model, plan)
    ids, labels = m.make_batch(1, "cpu")
    with torch.no_grad(), profile() as prof:
        m(ids, labels)
    ev = {e.key: e.count for e in prof.key_averages()}
    c = costs.counts(plan)
    kvo_layers = int((c.nkvo[0] > 0).sum())
    embedding = 1  # nn.Embedding runs as one index_select
    assert ev.get("aten::index_select", 0) == int(c.regathered[0].sum()) + kvo_layers + embedding
    assert ev.get("aten::index_copy", 0) == int(c.written_back[0].sum())
    if schedule == "drop":  # the dropped segment shrinks once: one gather, one write-back for all layers after it
        assert int(query_set_changes(plan)[0].sum()) == 2 and c.written_back[0].sum() == 1


def test_host_dispatch_preset_matches_the_executors_operator_count(tiny):
    """The GPU presets' host_layer_s is ~200 dispatched operators per layer (forward + backward) at 10 µs
    each (simulator/presets.py). Count the operators this project's executor dispatches per layer (the
    difference between a 4- and a 2-layer model, so embedding, head and loss cancel) and check the
    preset still says what the executor does, and that full recompute's extra forward is ~0.4 of it."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from trsim.simulator.plan import Layout, compile_points
    from trsim.simulator.presets import HARDWARE_PRESETS

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    ops = {}
    task = next(iter(tiny.tasks.values()))
    for L in (2, 4):
        m = tiny.model.model_copy(update={"num_layers": L})
        plan = compile_points(None, Layout.from_task(task), L)
        dec = Decoder(m, plan)
        init_weights(dec)
        tok = torch.randint(0, m.vocab_size, (1, plan.layout.total))
        Count.n = 0
        with Count():
            loss = dec(tok, tok)
        fwd = Count.n
        with Count():
            loss.backward()
        ops[L] = (fwd, Count.n - fwd)
    fwd, bwd = ((ops[4][i] - ops[2][i]) / 2 for i in range(2))
    per_layer = fwd + bwd
    assert HARDWARE_PRESETS["h100-sxm"]["host_layer_s"] == pytest.approx(per_layer * 10e-6, rel=0.15)
    assert fwd / per_layer == pytest.approx(0.4, abs=0.05)


def test_class_times_record_the_operators_behind_the_classes(tiny):
    """ops_s / ops_calls: each recorded operator belongs to a class, takes no more than its class's
    slowest step, and the GEMM count is the executor's: three per linear layer (forward, and the input
    and weight gradients), seven linears a layer and the LM head."""
    from trsim.profiler.measure import classify, class_times
    torch.set_num_threads(1)
    plan = compile_schedule(tiny, "baseline", "u")
    m = Decoder(tiny.model, plan)
    ids, labels = m.make_batch(2, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    got = class_times(m, ids, labels, repeats=2)
    assert got["ops_s"] and set(got["ops_s"]) == set(got["ops_calls"])
    for name, t in got["ops_s"].items():
        assert classify(name) is not None and t <= got["classes_stats"][classify(name)]["max_s"] + 1e-12
    assert got["ops_calls"]["aten::mm"] == 3 * (7 * plan.num_layers + 1)
