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
