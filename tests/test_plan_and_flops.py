"""Hand-computed FLOPs for every operator and method on a tiny model, and invariants (hypothesis)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trsim.simulator import costs, scenario_from_dict
from trsim.simulator.plan import FULL, KV_ONLY, SKIP, Layout, compile_points, hmgen_shallow_layers, select_layers
from trsim.simulator.config import DropSpec, HimixSpec, HmgenSpec, ModelSpec, PyramidSpec, Task

# d=8, H=2, Hkv=1, hd=4, I=16 (swiglu), V=10; sequence: text 2, image 4, text 1
M = ModelSpec(num_layers=2, hidden_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
              intermediate_size=16, vocab_size=10)
TASK = Task(samples=1, segments=[dict(name="a", kind="text", tokens=2), dict(name="img", kind="image", tokens=4),
                                 dict(name="b", kind="text", tokens=1, target=True)])
LAY = Layout.from_task(TASK)


def flops(spec, attention="causal", layer=-1):
    c = costs.counts(compile_points(spec, LAY, M.num_layers))
    return {k: int(v[0, layer]) for k, v in costs.op_flops(c, M, attention).items()}


def test_baseline_operators_by_hand():
    f = flops(None)
    # N = 7: q/o 2*7*8*8, k/v 2*7*8*4, causal pairs 7*8/2 = 28 -> 4*28*H*hd, swiglu 2*7*8*16*3
    assert f == {"q": 896, "k": 448, "v": 448, "o": 896, "attention": 896, "mlp": 5376, "rank": 0}
    assert flops(None, "full")["attention"] == 4 * 49 * 8
    assert costs.lm_head_flops(costs.counts(compile_points(None, LAY, 2)), M) == 2 * 7 * 8 * 10
    assert costs.lm_head_flops(costs.counts(compile_points(None, LAY, 2), "targets"), M) == 2 * 1 * 8 * 10


def test_himix_by_hand():
    f = flops(HimixSpec(method="himix"))
    # queries: 3 text tokens; keys: all 7. causal pairs: a sees a (3), b sees a+img (6) and itself (1) = 10
    assert f == {"q": 384, "k": 448, "v": 448, "o": 384, "attention": 320, "mlp": 2304, "rank": 0}
    assert flops(HimixSpec(method="himix"), "full")["attention"] == 4 * 3 * 7 * 8


def test_hmgen_shallow_layer_by_hand():
    spec = HmgenSpec(method="hmgen", shallow_layers=[1])
    f = flops(spec, layer=1)
    # only the 3 text tokens take part: pairs a (3) + b sees a and itself (3) = 6
    assert f == {"q": 384, "k": 192, "v": 192, "o": 384, "attention": 192, "mlp": 2304, "rank": 0}
    assert flops(spec, layer=0) == flops(None, layer=0)


def test_drop_and_pyramid_by_hand():
    f = flops(DropSpec(method="drop", from_layer=1, keep=0.5), layer=1)
    assert f["q"] == 2 * 5 * 64 and f["attention"] == 4 * 15 * 8  # 2 image tokens left: N = 5
    plan = compile_points(PyramidSpec(method="pyramid", stages=[(0, 0.75), (1, 0.25)]), LAY, 2)
    assert plan.present[0, :, 1].tolist() == [3, 1]
    ranked = compile_points(DropSpec(method="drop", from_layer=1, keep=0.5, selection="attention"), LAY, 2)
    assert ranked.rank[0].tolist() == [[0, 4, 0], [0, 0, 0]]  # layer 0 scores the 4 image tokens
    assert flops(DropSpec(method="drop", from_layer=1, keep=0.5, selection="attention"), layer=0)["rank"] == 2 * 4 * 8


def test_geglu_and_gelu_mlp_matrices():
    for mlp, mats in (("gelu", 2), ("geglu", 3)):
        m = M.model_copy(update={"mlp": mlp})
        c = costs.counts(compile_points(None, LAY, 2))
        assert int(costs.op_flops(c, m)["mlp"][0, 0]) == 2 * 7 * 8 * 16 * mats


def test_hmgen_shallow_placement_and_limits():
    mask = hmgen_shallow_layers(28, [3, 5])
    assert np.nonzero(mask[0])[0].tolist() == [12, 14, 16]
    assert np.nonzero(mask[1])[0].tolist() == [10, 12, 14, 16, 18]
    from trsim.simulator.plan import check_hmgen_count
    from trsim.simulator.errors import ScenarioError
    with pytest.raises(ScenarioError, match="layers 0 and 27"):
        check_hmgen_count(14, 28, "x")


def test_kv_only_and_skip_modes_in_plan():
    p = compile_points(HimixSpec(method="himix", from_layer=1), LAY, 2)
    assert p.mode[0, :, 1].tolist() == [FULL, KV_ONLY]
    assert p.sep_kv[0].tolist() == [True, True] and p.sep_q[0].tolist() == [True, False]
    p = compile_points(HmgenSpec(method="hmgen", shallow_layers=[0]), LAY, 2)
    assert p.mode[0, :, 1].tolist() == [SKIP, FULL]


def test_select_layers_covers_every_kind():
    p = compile_points(HmgenSpec(method="hmgen", shallow=5), LAY, 28)
    idx, w = select_layers(p, 4)
    kinds = {tuple(p.mode[0, i]) for i in idx}
    assert len(kinds) == 2 and w.sum() == pytest.approx(28)
    with pytest.raises(ValueError):
        select_layers(p, 1)


# ------------------------------------------------------------------------------ properties
seg = st.tuples(st.sampled_from(["text", "image"]), st.integers(1, 300))


def _task(segs):
    segs = list(segs) + [("image", 17)]
    return Task(samples=1, segments=[dict(name=f"s{i}", kind=k, tokens=n) for i, (k, n) in enumerate(segs)])


@settings(max_examples=60, deadline=None)
@given(st.lists(seg, min_size=1, max_size=5), st.integers(2, 12))
def test_baseline_plan_reproduces_unreduced_count(segs, L):
    lay = Layout.from_task(_task(segs))
    N = lay.total
    m = M.model_copy(update={"num_layers": L})
    c = costs.counts(compile_points(None, lay, L))
    f = costs.op_flops(c, m)
    d, H, Hkv, hd, I = 8, 2, 1, 4, 16
    per_layer = 2 * N * d * H * hd * 2 + 2 * N * d * Hkv * hd * 2 + 4 * (N * (N + 1) // 2) * H * hd + 2 * N * d * I * 3
    assert (sum(f.values()) == per_layer).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(seg, min_size=1, max_size=5), st.integers(2, 12), st.floats(0, 1), st.floats(0, 1),
       st.integers(0, 11))
def test_more_dropping_never_costs_more(segs, L, k1, k2, frm):
    lay = Layout.from_task(_task(segs))
    frm = min(frm, L - 1)
    lo, hi = sorted([k1, k2])
    plan = compile_points(DropSpec(method="drop", from_layer=frm, keep=0.5), lay, L, "keep", [lo, hi])
    for conv in ("causal", "full"):
        total = sum(costs.op_flops(costs.counts(plan), M, conv).values()).sum(-1)
        assert total[0] <= total[1]
        plan_k = compile_points(DropSpec(method="drop", from_layer=frm, keep=0.5), lay, L, "from_layer", [frm, L - 1])
        t2 = sum(costs.op_flops(costs.counts(plan_k), M, conv).values()).sum(-1)
        assert t2[0] <= t2[1]


@settings(max_examples=60, deadline=None)
@given(st.lists(seg, min_size=1, max_size=5), st.integers(3, 12), st.integers(0, 11))
def test_per_layer_sums_equal_totals_and_full_at_least_causal(segs, L, k):
    from trsim.simulator.simulate import evaluate
    lay = Layout.from_task(_task(segs))
    for spec in (HimixSpec(method="himix", from_layer=min(k, L - 1)), HmgenSpec(method="hmgen", shallow_layers=[1]),
                 DropSpec(method="drop", from_layer=min(k, L - 1), keep=0.3)):
        plan = compile_points(spec, lay, L)
        c = costs.counts(plan)
        causal, full = costs.op_flops(c, M, "causal"), costs.op_flops(c, M, "full")
        assert (full["attention"] >= causal["attention"]).all()
        per_layer = sum(causal.values())
        assert per_layer.sum() == sum(v.sum() for v in causal.values())


def test_simulate_per_layer_sums_equal_totals(tiny):
    from trsim.simulator import simulate
    res = simulate(tiny)
    for s in res.schedules:
        for t in s.tasks.values():
            assert sum(t.per_layer_flops_forward) + t.lm_head_flops_forward == pytest.approx(t.flops_forward, rel=1e-12)
            assert sum(t.flops_by_op.values()) == pytest.approx(sum(t.per_layer_flops_forward), rel=1e-12)
    base = res.schedules[0]
    assert base.name == "baseline" and base.exact_flops_ratio == 1.0
    assert all(s.exact_flops_ratio < 1 for s in res.schedules[1:])


def test_sweep_points_match_single_evaluations(tiny_doc):
    from trsim.simulator import simulate
    tiny_doc["sweep"] = {"schedule": "drop", "parameter": "keep", "values": [0.0, 0.25, 0.5, 1.0]}
    res = simulate(scenario_from_dict(tiny_doc))
    one = {s.name: s for s in res.schedules}["drop"]
    i = res.sweep["values"].index(0.5)
    assert res.sweep["exact_flops_ratio"][i] == pytest.approx(one.exact_flops_ratio, rel=1e-12)
    assert res.sweep["step_time_s"][i] == pytest.approx(one.step.time_s, rel=1e-12)
    assert res.sweep["exact_flops_ratio"][-1] == pytest.approx(1.0)


def test_distinct_points_rebuild_the_plan_exactly(tiny_doc):
    """A sweep prices each distinct plan once; taking the distinct points and expanding them by the
    inverse must give back every array of the plan, and identical points must share one row."""
    from trsim.simulator.simulate import schedule_plans
    scn = scenario_from_dict(tiny_doc)
    sched = next(n for n, s in scn.schedules.items() if any(v.method == "drop" for v in s.values()
                                                              if getattr(v, "method", None)))
    task = next(t for t, v in scn.schedules[sched].items() if getattr(v, "method", None) == "drop")
    values = np.array([0.5, 0.25, 0.5, 1.0, 0.25, 0.5000001])
    plan = schedule_plans(scn, sched, "keep", values, task)[task]
    first, inverse = plan.distinct_points()
    back = plan.take(first).take(inverse)
    for name in ("mode", "present", "sep_q", "sep_kv", "rank"):
        assert np.array_equal(getattr(back, name), getattr(plan, name)), name
    assert inverse[0] == inverse[2] and inverse[1] == inverse[4]
    assert len(first) < len(values)
