"""Parallel layouts, recompute, precision, training stacks and task mixing: the schema's rules (bad
input exits 2 with one line), hand-computed values for each new term, and invariants."""
import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from trsim.simulator import costs, scenario_from_dict, simulate
from trsim.simulator.config import ParallelismSpec
from trsim.simulator.errors import ScenarioError
from trsim.simulator import collectives, memory, mixing, parallel


def _with(doc, parallelism=None, **training):
    d = copy.deepcopy(doc)
    if parallelism is not None:
        d["parallelism"] = parallelism
    d["training"].update(training)
    return d


# ------------------------------------------------------------------------------------ bad input
BAD_LAYOUTS = [
    (dict(num_gpus=8), dict(tensor=3), {}, "parallelism.tensor", "dividing hardware.num_gpus"),
    (dict(num_gpus=8), dict(tensor=2, pipeline=2, context=3), {}, "parallelism.context", "dividing"),
    (dict(num_gpus=8), dict(tensor=8), {}, "parallelism.tensor", "model.num_attention_heads"),
    (dict(num_gpus=4), dict(tensor=4), {}, "parallelism.tensor", "model.num_key_value_heads"),
    (dict(num_gpus=8), dict(pipeline=8), {}, "parallelism.pipeline", "at most model.num_layers"),
    (dict(num_gpus=2), dict(pipeline=2, virtual_stages=3), {}, "parallelism.virtual_stages", "dividing"),
    (dict(num_gpus=1), dict(virtual_stages=2), {}, "parallelism.virtual_stages", "without pipeline"),
    (dict(num_gpus=4), dict(pipeline=4), dict(global_batch_size=4), "training.global_batch_size",
     "at least pipeline (4) micro-batches"),
    (dict(num_gpus=2), dict(pipeline=2, virtual_stages=2), dict(global_batch_size=6), "training.global_batch_size",
     "multiple of pipeline (2)"),
    (dict(num_gpus=2), dict(pipeline=2, layers_per_stage=[1, 2]), {}, "parallelism.layers_per_stage", "summing"),
    (dict(num_gpus=2), dict(pipeline=2, layers_per_stage=[4]), {}, "parallelism.layers_per_stage",
     "one layer count per pipeline stage"),
    (dict(num_gpus=1), None, dict(precision="fp8"), "training.precision", "no fp8"),
    (dict(num_gpus=2), dict(tensor=2, tensor_comm_overlap=True), {}, "parallelism", "sequence_parallel: true"),
    (dict(num_gpus=1), None, dict(activation_checkpointing=True, recompute="selective"), "training",
     "agreeing with recompute"),
    (dict(num_gpus=1), None, dict(recompute="some"), "training.recompute", ""),
    (dict(num_gpus=1), None, dict(stack="deepspeed"), "training.stack", ""),
    (dict(num_gpus=1), dict(tensor=0), {}, "parallelism.tensor", ""),
]


@pytest.mark.parametrize("hardware,par,training,field,needle", BAD_LAYOUTS)
def test_impossible_layouts_exit_2_with_one_line(tmp_path, tiny_doc, hardware, par, training, field, needle):
    doc = _with(tiny_doc, par, **training)
    doc["hardware"].update(hardware)
    doc["training"].setdefault("global_batch_size", 2)
    if "global_batch_size" not in training:
        doc["training"]["global_batch_size"] = doc["training"]["micro_batch_size"] * hardware["num_gpus"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = subprocess.run([sys.executable, "-m", "trsim", "simulate", str(path)], capture_output=True, text=True)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"trsim: error: {path}: {field}") and needle in lines[0], lines[0]


def test_activation_checkpointing_still_means_full_recompute(tiny_doc):
    a = scenario_from_dict(_with(tiny_doc, activation_checkpointing=True))
    b = scenario_from_dict(_with(tiny_doc, recompute="full"))
    assert a.training.recompute == "full" and a.training.checkpointing
    assert simulate(a).schedules[1].step.time_s == simulate(b).schedules[1].step.time_s
    assert scenario_from_dict(_with(tiny_doc, activation_checkpointing=False)).training.recompute == "none"


def test_data_parallel_size_and_micro_batches(tiny_doc):
    doc = _with(tiny_doc, dict(tensor=2, pipeline=2), global_batch_size=16)
    doc["hardware"]["num_gpus"] = 8
    doc["model"]["num_key_value_heads"] = 2
    scn = scenario_from_dict(doc)
    assert scn.data_parallel == 2 and scn.grad_accumulation == 16 // (2 * 2)


# ------------------------------------------------------------------------------- pipeline terms
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 16), st.integers(1, 4), st.integers(1, 64), st.floats(1e-3, 10))
def test_bubble_is_p_minus_1_over_v_m_for_uniform_stages(p, v, m, T):
    stage = np.full((1, p), T / p)
    got = parallel.bubble_fraction(stage, m, v)[0]
    assert got == pytest.approx((p - 1) / (v * m), rel=1e-12, abs=1e-15)
    assert parallel.pipeline_time(stage, m, v)[0] == pytest.approx(m * T / p * (1 + (p - 1) / (v * m)), rel=1e-12)


def test_in_flight_micro_batches_by_hand():
    assert parallel.in_flight(4, 1, 8).tolist() == [4, 3, 2, 1]          # 1F1B: p - s
    assert parallel.in_flight(4, 1, 2).tolist() == [2, 2, 2, 1]          # never more than there are
    # interleaved, p = 4, v = 2: stage 0 warms up 2(p-1) + (v-1)p = 10 chunks and runs one more: 11 chunks
    # = 5.5 stages' worth = p (1 + (p-1)/(p v)) (Korthikanti et al., eq. for interleaving)
    got = parallel.in_flight(4, 2, 8)
    assert got.tolist() == [11, 9, 7, 5] and got[0] / 2 == 4 * (1 + 3 / 8)


def test_stage_layout_even_uneven_and_interleaved():
    L = 10
    assert parallel.stage_layout(ParallelismSpec(pipeline=3), L).layers_per_stage() == [4, 3, 3]
    st_ = parallel.stage_layout(ParallelismSpec(pipeline=2, layers_per_stage=[3, 7]), L)
    assert st_.bounds == (0, 3, 10) and st_.stage_of_layer().tolist() == [0] * 3 + [1] * 7
    il = parallel.stage_layout(ParallelismSpec(pipeline=2, virtual_stages=5), L)
    assert il.stage_of_layer().tolist() == [0, 1] * 5
    x = np.arange(10.0)[None]
    assert parallel.stage_sums(x, il).tolist() == [[0 + 2 + 4 + 6 + 8, 1 + 3 + 5 + 7 + 9]]
    assert parallel.stage_max(x, il).tolist() == [[8, 9]]


def test_min_max_partition_by_hand_and_against_brute_force():
    assert parallel.min_max_partition([1, 1, 1, 1, 10, 1], 2) == [4, 2]
    assert parallel.min_max_partition([5, 1, 1, 1, 1, 1], 2) == [1, 5]
    import itertools
    rng = np.random.default_rng(0)
    for _ in range(40):
        L, p = int(rng.integers(2, 9)), int(rng.integers(1, 4))
        p = min(p, L)
        x = rng.random(L)
        got = parallel.min_max_partition(x, p)
        assert sum(got) == L and len(got) == p and min(got) >= 1
        best = min(max(x[a:b].sum() for a, b in zip((0,) + cuts, cuts + (L,)))
                   for cuts in itertools.combinations(range(1, L), p - 1))
        bounds = np.concatenate([[0], np.cumsum(got)])
        assert max(x[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])) == pytest.approx(best, rel=1e-12)


# ---------------------------------------------------------------------------------- collectives
def test_ring_collectives_by_hand(tiny):
    hw = tiny.hardware.model_copy(update={"collective_latency_s": 1e-6, "collective_efficiency": 1.0,
                                          "collective_base_latency_s": 0.0})
    r4 = collectives.Ring(ranks=4, nodes=1, bw=1e11)
    assert collectives.all_reduce(1e9, r4, hw) == pytest.approx(2 * 3 / 4 * 1e9 / 1e11 + 6e-6)
    assert collectives.all_gather(1e9, r4, hw) == pytest.approx(3 / 4 * 1e9 / 1e11 + 3e-6)
    half = hw.model_copy(update={"collective_efficiency": 0.5})  # bus bandwidth = half the link's
    assert collectives.all_gather(1e9, r4, half) == pytest.approx(2 * 3 / 4 * 1e9 / 1e11 + 3e-6)
    assert collectives.point_to_point(1e9, 1e11, half) == pytest.approx(1e9 / 1e11 + 1e-6)
    assert collectives.all_reduce(1e9, collectives.Ring(1, 1, 1e11), hw) == 0
    h = tiny.hardware.model_copy(update={"gpus_per_node": 8, "intranode_bandwidth": 5.0, "internode_bandwidth": 1.0})
    assert collectives.link_bandwidth(h, 8) == 5.0 and collectives.link_bandwidth(h, 2, 8) == 1.0


def test_ring_latency_is_a_base_plus_a_step_each_and_crossing_steps_pay_the_network(tiny):
    """NCCL's latency model: a base per collective, each ring step inside a node at NVLink's latency, the
    2(nodes-1) steps of an all-reduce (nodes-1 of a gather) that cross nodes at the network's; buckets
    that share the bytes each pay the latency."""
    hw = tiny.hardware.model_copy(update={"gpus_per_node": 8, "collective_base_latency_s": 30e-6,
                                          "collective_latency_s": 2e-6, "internode_latency_s": 10e-6,
                                          "intranode_bandwidth": 1e11, "internode_bandwidth": 1e10})
    inside = collectives.ring(hw, 8)
    assert (inside.ranks, inside.nodes) == (8, 1)
    assert collectives.ring_latency(inside, 2, hw) == pytest.approx(30e-6 + 14 * 2e-6)
    dp = collectives.ring(hw, 16, 4)           # 2 ranks on each of 8 nodes
    assert (dp.ranks, dp.nodes, dp.bw) == (16, 8, 2e10)
    assert collectives.ring_latency(dp, 2, hw) == pytest.approx(30e-6 + (30 - 14) * 2e-6 + 14 * 10e-6)
    assert collectives.ring_latency(dp, 1, hw) == pytest.approx(30e-6 + (15 - 7) * 2e-6 + 7 * 10e-6)
    zero = hw.model_copy(update={"collective_efficiency": 1.0})
    assert collectives.all_gather(0.0, dp, zero, count=5) == pytest.approx(5 * collectives.ring_latency(dp, 1, hw))
    # a network step as fast as an NVLink one: the ring's steps all cost the same
    same = hw.model_copy(update={"internode_latency_s": 2e-6})
    assert collectives.ring_latency(dp, 2, same) == pytest.approx(30e-6 + 30 * 2e-6)
    # a custom profile that does not say gets NCCL's own constant for a network step, and a calibration
    # file may set it like every other time-model term
    from trsim.simulator.calibration import calibratable_parameters
    from trsim.simulator.config import HardwareSpec
    assert HardwareSpec.model_fields["internode_latency_s"].default == 9.6e-6
    assert {"internode_latency_s", "collective_base_latency_s"} <= set(calibratable_parameters())
    assert collectives.point_to_point(0.0, 1e10, hw, across_nodes=True) == pytest.approx(40e-6)
    assert collectives.point_to_point(0.0, 1e11, hw) == pytest.approx(32e-6)


def test_cross_node_collectives_use_every_adapter_their_group_has_on_a_node(tiny):
    """NCCL runs one ring per network adapter: a group with k ranks on each node moves its cross-node
    traffic through k adapters (at most NVLink's bandwidth); point-to-point sends use one."""
    h = tiny.hardware.model_copy(update={"gpus_per_node": 8, "intranode_bandwidth": 6.0, "internode_bandwidth": 1.0,
                                         "collective_latency_s": 0.0, "collective_base_latency_s": 0.0})
    bw = collectives.collective_bandwidth
    assert bw(h, 8) == 6.0 and bw(h, 4, 2) == 6.0             # inside a node
    assert bw(h, 48) == 6.0                                    # 8 ranks a node: 8 adapters, capped by NVLink
    assert bw(h, 48, 2) == 4.0 and bw(h, 48, 4) == 2.0         # 4 and 2 ranks a node
    assert bw(h, 48, 8) == 1.0 and bw(h, 6, 16) == 1.0         # one rank a node: one adapter
    assert bw(h, 16, 1) == 6.0 and bw(h.model_copy(update={"intranode_bandwidth": 100.0}), 16) == 8.0
    assert collectives.link_bandwidth(h, 48) == 1.0            # a send between two ranks: one adapter
    t = tiny.training.model_copy(update={"zero_stage": 0, "gradient_bytes": 4})
    one = collectives.data_parallel_time(np.array([1e9]), t, h, 48, 48 * 8, stack="trsim")[0]
    eight = collectives.data_parallel_time(np.array([1e9]), t, h, 48, 48, stack="trsim")[0]
    assert one[0] == pytest.approx(6 * eight[0])              # 1 adapter vs NVLink's cap (6 of 8 adapters)


def test_megatron_distributed_optimizer_traffic_by_hand(tiny):
    """ZeRO-1 under Megatron-Core: fp32 gradients reduce-scattered under the last backward, bf16 weights
    all-gathered under the next forward; each waits for what its window cannot cover, at least one bucket.
    Without the distributed optimizer (ZeRO 0) the gradients are all-reduced and nothing is gathered."""
    h = tiny.hardware.model_copy(update={"gpus_per_node": 8, "intranode_bandwidth": 1e11, "collective_latency_s": 0.0,
                                         "collective_base_latency_s": 0.0,
                                         "collective_efficiency": 1.0})
    t = tiny.training.model_copy(update={"zero_stage": 1, "gradient_bytes": 4, "weight_bytes": 2})
    P, n = np.array([4e8]), 8  # 1.6 GB of gradients: 10 buckets of 160 MB
    rs, ag = 7 / 8 * 1.6e9 / 1e11, 7 / 8 * 0.8e9 / 1e11
    total, exposed = collectives.data_parallel_time(P, t, h, n, n, stack="megatron", backward_window=np.array([0.005]),
                                                    forward_window=np.array([0.002]))
    assert total[0] == pytest.approx(rs + ag)
    assert exposed[0] == pytest.approx((rs - 0.005) + (ag - 0.002))
    _, hidden = collectives.data_parallel_time(P, t, h, n, n, stack="megatron", backward_window=np.array([1.0]),
                                               forward_window=np.array([1.0]))
    assert hidden[0] == pytest.approx(rs / 10 + ag / 10)
    ddp = collectives.data_parallel_time(P, t.model_copy(update={"zero_stage": 0}), h, n, n, stack="megatron",
                                         backward_window=np.array([0.005]), forward_window=np.array([0.002]))
    assert ddp[0][0] == pytest.approx(2 * rs) and ddp[1][0] == pytest.approx(2 * rs - 0.005)
    zero2 = collectives.data_parallel_time(P, t.model_copy(update={"zero_stage": 2}), h, n, n, stack="megatron",
                                           backward_window=np.array([0.005]), forward_window=np.array([0.002]))
    assert zero2[0][0] == pytest.approx(total[0]) and zero2[1][0] == pytest.approx(exposed[0])
    hf = collectives.data_parallel_time(P, t, h, n, n, stack="huggingface", backward_window=np.array([0.005]),
                                        forward_window=np.array([0.002]))
    assert hf[0][0] == pytest.approx(2 * rs)  # PyTorch DDP with a sharded optimizer still all-reduces
    # without windows nothing hides
    bare = collectives.data_parallel_time(P, t, h, n, n, stack="megatron")
    assert bare[1][0] == pytest.approx(rs + ag)


@pytest.mark.parametrize("zero", [1, 3])
@pytest.mark.parametrize("stack", ["megatron", "huggingface", "trsim"])
def test_stacks_that_do_not_overlap_data_parallel_traffic_expose_all_of_it(tiny, stack, zero):
    """Megatron-LM's command line leaves --overlap-grad-reduce and --overlap-param-gather off: the gradient
    reduction then runs after backward and the weight gathers wait, whatever the windows. Each flag takes
    away only its own window; unset, overlap_param_gather follows overlap_grad_reduce."""
    h = tiny.hardware.model_copy(update={"gpus_per_node": 8, "intranode_bandwidth": 1e11, "collective_latency_s": 0.0,
                                         "collective_base_latency_s": 0.0,
                                         "collective_efficiency": 1.0, "comm_overlap": 0.7})
    t = tiny.training.model_copy(update={"zero_stage": zero, "gradient_bytes": 4, "weight_bytes": 2})
    P, n = np.array([4e8]), 8
    win = dict(backward_window=np.array([1.0]), forward_window=np.array([1.0]), micro_batches=2, layers=4)
    dp = lambda **kw: collectives.data_parallel_time(P, t.model_copy(update=kw), h, n, n, stack=stack, **win)  # noqa: E731
    total, overlapped = dp()
    total_off, exposed = dp(overlap_grad_reduce=False)
    assert total_off[0] == pytest.approx(total[0])
    assert exposed[0] == pytest.approx(total[0]) and overlapped[0] < 0.35 * total[0]
    grads_only = dp(overlap_grad_reduce=False, overlap_param_gather=True)[1][0]
    gathers_only = dp(overlap_param_gather=False)[1][0]
    assert overlapped[0] < grads_only < exposed[0] or (zero == 1 and stack != "megatron")
    assert overlapped[0] < gathers_only < exposed[0] or (zero == 1 and stack != "megatron")
    if stack == "megatron" and zero == 1:  # reduce-scatter of fp32 gradients, all-gather of bf16 weights
        rs, ag = 7 / 8 * 1.6e9 / 1e11, 7 / 8 * 0.8e9 / 1e11
        assert grads_only == pytest.approx(rs + ag / 10) and gathers_only == pytest.approx(rs / 10 + ag)
    if stack == "trsim":  # comm_overlap of each overlapped part hides; ZeRO-3 reduce-scatters the gradients
        grads = (2 if zero == 1 else 1) * 7 / 8 * 1.6e9 / 1e11
        gathers = 2 * 7 / 8 * 0.8e9 / 1e11 if zero == 3 else 0.0
        assert overlapped[0] == pytest.approx(0.3 * (grads + gathers))
        assert gathers_only == pytest.approx(0.3 * grads + gathers)


def test_zero3_gradients_and_last_backward_gathers_share_one_window(tiny):
    """FSDP-style ZeRO-3: the last micro-batch's backward carries the gradient reduction and that
    micro-batch's weight gathers; one backward cannot hide both twice."""
    h = tiny.hardware.model_copy(update={"gpus_per_node": 8, "intranode_bandwidth": 1e11, "collective_latency_s": 0.0,
                                         "collective_base_latency_s": 0.0,
                                         "collective_efficiency": 1.0})
    t = tiny.training.model_copy(update={"zero_stage": 3, "gradient_bytes": 4, "weight_bytes": 2})
    P, n, L = np.array([4e8]), 8, 4
    # the gradients reduce-scattered (not all-reduced: no updated weights to gather back), layer by layer
    rs, ag = 7 / 8 * 1.6e9 / 1e11, 7 / 8 * 0.8e9 / 1e11         # 0.014 s, 0.007 s
    w = 0.012                            # hides either's hideable part alone (all but one layer's), not both
    total, exposed = collectives.data_parallel_time(P, t, h, n, n, stack="huggingface", backward_window=np.array([w]),
                                                    forward_window=np.array([1.0]), micro_batches=1, layers=L)
    assert total[0] == pytest.approx(rs + 2 * ag)
    assert exposed[0] == pytest.approx((rs + ag - w) + ag / L)   # forward: the first layer's gather waits
    trsim = collectives.data_parallel_time(P, t, h, n, n, stack="trsim")[0]
    assert trsim[0] == pytest.approx(rs + 2 * ag)


def test_megatron_refuses_param_gather_overlap_without_grad_reduce_overlap(tiny_doc):
    doc = copy.deepcopy(tiny_doc)
    doc["training"].update(stack="megatron", zero_stage=1, overlap_grad_reduce=False, overlap_param_gather=True)
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict(doc)
    assert "--overlap-param-gather without --overlap-grad-reduce" in str(e.value)
    doc["training"].pop("overlap_param_gather")                  # unset: follows overlap_grad_reduce
    assert scenario_from_dict(doc).training.param_gather_overlapped is False


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_data_parallel_windows_are_the_forward_and_the_backward_with_its_recompute(recompute):
    """The distributed optimizer's gathers hide under one micro-batch's forward (a third of the work that is
    not recompute) and its reduce-scatters under the backward (the rest, the recomputed forward included)."""
    from trsim.simulator.simulate import evaluate, schedule_plans
    doc = yaml.safe_load(open("scenarios/vila_u_7b_64gpu_tp2_pp2.yaml"))
    doc["parallelism"] = {"tensor": 8, "sequence_parallel": True}       # one adapter per data-parallel group
    doc["training"].update(recompute=recompute, task_mixing="ideal", stack="megatron", zero_stage=1)
    doc["tasks"] = {"u": doc["tasks"]["understanding"]}
    doc["schedules"] = {"baseline": {}}
    scn = scenario_from_dict(doc)
    plans = schedule_plans(scn, "baseline")
    ev = evaluate(scn, plans)
    stage = ev["stage_time"]                                           # [1, 1]: one stage, one task
    rec = ev["breakdown"].get("recompute", 0.0) / scn.grad_accumulation
    fwd = (stage - rec) / 3
    from trsim.simulator import memory
    params = memory.stage_parameters(scn.model, list(plans.values()), parallel.single_stage(scn.model.num_layers), 8)
    n = scn.data_parallel
    _, exposed = collectives.data_parallel_time(params, scn.training, scn.hardware, n, n * 8,
                                                stack="megatron", backward_window=stage - fwd, forward_window=fwd)
    assert ev["breakdown"]["communication_exposed"][0] == pytest.approx(float(exposed[0, 0]), rel=1e-9)
    assert ev["breakdown"]["communication_exposed"][0] > 0


def test_tensor_parallel_traffic_by_hand(tiny):
    from trsim.simulator.plan import Layout, compile_points
    m = tiny.model  # d = 32
    hw = tiny.hardware.model_copy(update={"collective_latency_s": 0.0, "collective_base_latency_s": 0.0, "intranode_bandwidth": 1e9,
                                          "gpus_per_node": 8, "collective_efficiency": 1.0})
    c = costs.counts(compile_points(None, Layout.from_task(tiny.tasks["u"]), m.num_layers))  # 18 tokens
    B, e = 2, 2
    row = 18 * 32 * e * B
    ar = 2 * (2 - 1) / 2 * row / 1e9
    tp = collectives.tensor_parallel_time(c, m, B, e, parallel.Shard(tensor=2), hw, "none")
    assert tp["layer"][0, 0] == pytest.approx(4 * ar)  # fwd: O and MLP outputs; bwd: QKV and MLP inputs
    sp = collectives.tensor_parallel_time(c, m, B, e, parallel.Shard(tensor=2, sequence_parallel=True), hw, "none")
    assert sp["layer"][0, 0] == pytest.approx(4 * ar)  # same bytes as all-gather + reduce-scatter pairs
    full = collectives.tensor_parallel_time(c, m, B, e, parallel.Shard(tensor=2), hw, "full")
    assert full["layer"][0, 0] == pytest.approx(6 * ar)  # the recomputed forward's all-reduces again


def test_pipeline_sends_by_hand_whole_sharded_and_scattered(tiny):
    """Each stage sends the live hidden states once forward and once backward (the end stages once). With
    sequence parallelism a rank sends its 1/t slice; Megatron's scatter/gather (its default without it)
    sends the slice across nodes and all-gathers the slices over NVLink on the far side."""
    from trsim.simulator.plan import Layout, compile_points
    m = tiny.model  # d = 32, 4 layers
    hw = tiny.hardware.model_copy(update={"collective_latency_s": 0.0, "collective_base_latency_s": 0.0,
                                          "internode_latency_s": 0.0, "intranode_bandwidth": 4e9,
                                          "internode_bandwidth": 1e9, "gpus_per_node": 8,
                                          "collective_efficiency": 0.5})
    c = costs.counts(compile_points(None, Layout.from_task(tiny.tasks["u"]), m.num_layers))  # 18 tokens
    B, e, t = 2, 2, 4
    stages = parallel.stage_layout(ParallelismSpec(pipeline=2, tensor=t), m.num_layers)
    full = B * 18 * 32 * e                  # one micro-batch's hidden states
    # tensor 4 x data 2 = 8 GPUs a stage: the two stages are on different nodes (1e9 B/s)
    plain = collectives.pipeline_p2p_time(c, m, B, e, parallel.Shard(tensor=t), hw, stages, 2)
    assert plain[0] == pytest.approx([full / 1e9, full / 1e9])
    sp = collectives.pipeline_p2p_time(c, m, B, e, parallel.Shard(tensor=t, sequence_parallel=True), hw, stages, 2,
                                       scatter_gather=True)
    assert sp[0] == pytest.approx([full / t / 1e9] * 2)  # already sharded: nothing to scatter
    sg = collectives.pipeline_p2p_time(c, m, B, e, parallel.Shard(tensor=t), hw, stages, 2, scatter_gather=True)
    gather = full * (t - 1) / t / (4e9 * 0.5)
    assert sg[0] == pytest.approx([full / t / 1e9 + gather] * 2)


def test_overlapped_tensor_parallel_traffic():
    """Userbuffer overlap: the first of t chunks always waits; the rest hides behind the GEMMs."""
    comm, gemm = np.array([8.0, 8.0, 8.0]), np.array([0.0, 4.0, 100.0])
    assert collectives.overlapped(comm, gemm, 8).tolist() == [8.0, 4.0, 1.0]
    base = _vila(parallelism=dict(tensor=4, sequence_parallel=True))
    over = _vila(parallelism=dict(tensor=4, sequence_parallel=True, tensor_comm_overlap=True))
    a, b = simulate(base).schedules[0].step, simulate(over).schedules[0].step
    assert b.time_breakdown_s["tensor_parallel"] < a.time_breakdown_s["tensor_parallel"]
    assert b.time_s < a.time_s and b.time_breakdown_s["matmul"] == a.time_breakdown_s["matmul"]


# ------------------------------------------------------------------------------------- mixing
def test_expected_max_over_replicas_by_hand():
    # tasks of 3 s and 1 s per micro-batch, half each, one stage
    T = [np.array([[3.0]]), np.array([[1.0]])]
    # one micro-batch per replica, 2 replicas: E[max] = 3 (1 - 1/4) + 1/4 = 2.5
    assert mixing.homogeneous_step(T, [0.5, 0.5], 1, 2, 1)[0] == pytest.approx(2.5)
    # two micro-batches: times 2, 4, 6 with probabilities 1/4, 1/2, 1/4; max of two draws:
    # 2 (1/16) + 4 (9/16 - 1/16) + 6 (1 - 9/16) = 4.75
    assert mixing.homogeneous_step(T, [0.5, 0.5], 2, 2, 1)[0] == pytest.approx(4.75)
    assert mixing.homogeneous_step(T, [0.5, 0.5], 2, 1, 1)[0] == pytest.approx(4.0)  # one replica: the mean
    assert mixing.compositions(3, 3).shape == (10, 3)
    assert mixing.multinomial_pmf(mixing.compositions(5, 3), np.array([0.2, 0.3, 0.5])).sum() == pytest.approx(1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-3, 5), min_size=2, max_size=3), st.integers(1, 12), st.integers(1, 256),
       st.integers(1, 3))
def test_straggler_step_is_never_below_the_mean(times, m, dp, p):
    rng = np.random.default_rng(len(times) * 1000 + m)
    T = [np.asarray(t * rng.uniform(0.5, 1.5, size=(1, p))) for t in times]
    f = rng.dirichlet(np.ones(len(times)))
    mean = parallel.pipeline_time(sum(fi * t for fi, t in zip(f, T)), m, 1)[0]
    got = mixing.homogeneous_step(T, list(f), m, dp, 1)[0]
    assert got >= mean * (1 - 1e-12)
    assert got <= m * max(t.max() for t in T) + sum(t.sum() for t in T) + 1e-12


def test_straggler_wait_is_never_negative_where_no_draw_waits():
    """Where every task's micro-batch takes the same time on the slowest stage (HiMix's understanding and
    the generation micro-batch on a 4-stage, recompute-full layout), the straggler step equals the mean up
    to rounding; it is reported as 0, never as -0.00 ms (found by tests/fuzzing.py 10000 4242)."""
    doc = yaml.safe_load(open("scenarios/vila_u_7b_64gpu_tp2_pp4.yaml"))
    doc["training"]["recompute"] = "full"
    res = simulate(scenario_from_dict(doc))
    for s in res.schedules:
        assert s.step.time_breakdown_s.get("straggler_wait", 0.0) >= 0.0, s.name
        assert s.step.task_mixing["straggler_loss"] >= 0.0, s.name
        assert s.step.task_mixing["homogeneous_step_s"] >= s.step.task_mixing["ideal_step_s"]


# ------------------------------------------------------------------------------------ invariants
def _vila(**over):
    doc = yaml.safe_load(open("scenarios/vila_u_7b_64gpu_tp2_pp2.yaml"))
    for k, v in over.items():
        doc[k].update(v) if isinstance(v, dict) else doc.__setitem__(k, v)
    return scenario_from_dict(doc)


def test_explicit_trivial_layout_changes_nothing(tiny_doc):
    a = simulate(scenario_from_dict(tiny_doc)).to_dict()
    b = simulate(scenario_from_dict(_with(tiny_doc, dict(tensor=1, pipeline=1, virtual_stages=1, context=1,
                                                         sequence_parallel=True), recompute="none",
                                          precision="bf16", stack="trsim", task_mixing="ideal"))).to_dict()
    for s in b["schedules"]:
        assert s["step"]["parallel"].pop("sequence_parallel") is True  # no tensor ranks to shard over
    for s in a["schedules"]:
        s["step"]["parallel"].pop("sequence_parallel")
    assert a["schedules"] == b["schedules"]


@pytest.mark.parametrize("tied", [False, True])
def test_more_pipeline_stages_never_raise_per_gpu_weights(tied):
    from trsim.simulator.config import ModelSpec
    m = ModelSpec(num_layers=30, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  intermediate_size=128, vocab_size=5000, tie_word_embeddings=tied)
    per_gpu = []
    for p in range(1, 31):
        st_ = parallel.stage_layout(ParallelismSpec(pipeline=p), 30)
        per_gpu.append(memory.stage_parameters(m, [], st_, 1).max())
    assert all(b <= a for a, b in zip(per_gpu, per_gpu[1:]))
    assert per_gpu[0] == costs.base_parameters(m)
    t2 = memory.stage_parameters(m, [], parallel.stage_layout(ParallelismSpec(), 30), 2)[0, 0]
    assert t2 < per_gpu[0] / 2 + 30 * 2 * 64 + 64 + 1  # matrices and vocabulary halve, norms stay


@pytest.mark.parametrize("stack", ["megatron", "huggingface"])
@pytest.mark.parametrize("scenario", ["scenarios/paper_vila_u_3b.yaml", "scenarios/llava_fastv_pyramid.yaml",
                                      "scenarios/tiny_cpu.yaml"])
def test_keeping_99_percent_of_the_tokens_is_never_slower_than_baseline(stack, scenario):
    """A compacting executor pays for a change of the token set once, fused into its neighbours; so
    dropping 1% of the image tokens from any layer on never costs more than it saves. (The reference
    executor, stack trsim, really copies the working rows at a change and writes them back: there a
    late 1% drop can cost more than it saves, and the model says so.)"""
    doc = yaml.safe_load(open(scenario))
    task = next(iter(doc["tasks"]))
    L = scenario_from_dict(doc).model.num_layers
    doc["training"]["stack"] = stack
    doc["schedules"] = {"baseline": {}, "drop": {task: {"method": "drop", "from_layer": 1, "keep": 0.99}}}
    doc["sweep"] = {"schedule": "drop", "task": task, "parameter": "from_layer", "range": [1, L - 1, 1]}
    res = simulate(scenario_from_dict(doc))
    assert min(res.sweep["speedup"]) >= 1.0, (stack, res.sweep["speedup"])


def test_fp8_runs_decoder_gemms_at_the_fp8_peak(tiny_doc):
    from trsim.simulator.presets import HARDWARE_PRESETS
    hw = scenario_from_dict(dict(tiny_doc, hardware=dict(preset="h100-sxm", num_gpus=1))).hardware
    assert hw.peak_flops_fp8 == 1979e12 and HARDWARE_PRESETS["a100-sxm-80g"].get("peak_flops_fp8") is None
    big = (8192, 8192, 8192)
    bf16, fp8 = costs.linear_time(*big, hw), costs.linear_time(*big, hw, "fp8")
    # a large GEMM runs at the measured maximum of each precision (the mamf table's cap)
    assert fp8 < bf16 and bf16 / fp8 == pytest.approx(
        1979 * hw.matmul_efficiency_fp8 * hw.matmul_max_shape_factor_fp8
        / (989 * hw.matmul_efficiency * hw.matmul_max_shape_factor), rel=0.02)
    base = _vila()
    fast = _vila(training=dict(precision="fp8"))
    a, b = simulate(base).schedules[0], simulate(fast).schedules[0]
    assert b.step.time_s < a.step.time_s and b.step.flops == a.step.flops


def test_recompute_levels_in_time_memory_and_hardware_flops(tiny_doc):
    res = {r: simulate(scenario_from_dict(_with(tiny_doc, recompute=r))).schedules[0].step
           for r in ("none", "selective", "full")}
    assert res["none"].hardware_flops == res["none"].flops
    assert res["none"].flops < res["selective"].hardware_flops < res["full"].hardware_flops
    assert res["none"].time_s < res["selective"].time_s < res["full"].time_s
    mem = {r: s.memory_breakdown_bytes["activations_and_logits"] for r, s in res.items()}
    assert mem["full"] < mem["selective"] < mem["none"]
    assert res["full"].hfu > res["full"].mfu


def test_pipeline_report_and_homogeneous_straggler_on_the_worked_example():
    res = simulate(_vila())
    for s in res.schedules:
        par, mix = s.step.parallel, s.step.task_mixing
        assert par["data_parallel"] == 16 and par["layers_per_stage"] == [16, 16]
        assert len(par["stage_time_s"]) == 2 and par["stage_peak_memory_bytes"][0] > 0
        assert par["suggested_step_time_s"] <= s.step.time_s + 1e-12
        assert sum(par["min_max_layers_per_stage"]) == 32
        assert mix["homogeneous_step_s"] >= mix["ideal_step_s"] and s.step.time_s == mix["homogeneous_step_s"]
    # the step adds up: components at the slowest stage x micro-batches + bubble + wait + optimizer + comm
    b = res.schedules[0].step.time_breakdown_s
    assert sum(v for k, v in b.items() if k != "communication_total") == pytest.approx(res.schedules[0].step.time_s)


def test_stage_zero_holds_the_most_activations():
    ev_doc = _vila()
    from trsim.simulator.simulate import evaluate, schedule_plans
    ev = evaluate(ev_doc, schedule_plans(ev_doc, "baseline"))
    peak = np.asarray(ev["stage_peak"])[0]
    static = ev_doc.model  # noqa: F841
    assert peak.shape == (2,)
    inflight = parallel.in_flight(2, 1, ev_doc.grad_accumulation)
    assert inflight.tolist() == [2, 1]


def test_context_parallel_ring_hides_behind_attention_for_long_sequences(tiny):
    from trsim.simulator.plan import Layout, compile_points
    from trsim.simulator.config import Task
    task = Task(samples=1, segments=[dict(name="t", kind="text", tokens=32768)])
    c = costs.counts(compile_points(None, Layout.from_task(task), 1))
    m = tiny.model
    hw = scenario_from_dict({**copy.deepcopy(__import__("conftest").TINY),
                             "hardware": dict(preset="h100-sxm", num_gpus=1)}).hardware
    shard = parallel.Shard(context=4)
    att = costs.microbatch_terms(c, m, hw, 1, 2, shard)["attention"]
    exposed = collectives.context_parallel_time(c, m, 1, 2, shard, hw, att)
    block = 32768 / 4 * 2 * m.num_key_value_heads * m.head_dim * 2
    step = block / hw.intranode_bandwidth + hw.collective_base_latency_s + hw.collective_latency_s
    fwd = att / (1 + hw.attention_backward_ratio)
    waits = max(0, step - fwd[0, 0] / 4) + max(0, 2 * step - (att[0, 0] - fwd[0, 0]) / 4)
    # what hides still costs the SMs the transfers hold (collectives.contention)
    want = 3 * (waits + (3 * step - waits) * hw.collective_compute_units / hw.compute_units)
    assert exposed[0, 0] == pytest.approx(want)


def test_zero_shards_over_data_and_context_ranks(tiny_doc):
    """Context-parallel ranks hold the same weights (Megatron-Core's data-parallel-with-context group):
    ZeRO-3 over 2 data x 2 context ranks keeps a quarter of the weights per GPU."""
    doc = _with(tiny_doc, dict(context=2), zero_stage=3, global_batch_size=4)
    doc["hardware"]["num_gpus"] = 4
    scn = scenario_from_dict(doc)
    assert scn.data_parallel == 2
    step = simulate(scn).schedules[0].step
    params = simulate(scenario_from_dict(_with(tiny_doc, zero_stage=0))).schedules[0].parameters
    assert step.memory_breakdown_bytes["weights"] == pytest.approx(params * 2 / 4)
    assert step.memory_breakdown_bytes["optimizer"] == pytest.approx(params * 12 / 4)


def test_host_bound_steps_take_the_longer_of_host_and_device(tiny_doc):
    """A small model at micro-batch 1 on an H100 is dispatch-bound: its step follows the host's
    per-layer cost, not the width; a large one is device-bound and the host term vanishes."""
    doc = dict(tiny_doc, hardware=dict(preset="h100-sxm", num_gpus=1))
    small = simulate(scenario_from_dict(doc)).schedules[0].step
    wide_doc = copy.deepcopy(doc)
    wide_doc["model"].update(hidden_size=2 * doc["model"]["hidden_size"])
    wide = simulate(scenario_from_dict(wide_doc)).schedules[0].step
    assert small.time_breakdown_s["host_bound"] > 0
    device = sum(v for k, v in small.time_breakdown_s.items()
                 if k not in ("host_bound", "communication_total", "optimizer", "communication_exposed",
                              "communication_contention"))
    assert wide.time_s == pytest.approx(small.time_s, rel=0.02) and device < small.time_s
    none = copy.deepcopy(doc)
    none["hardware"]["host_layer_s"] = 0.0
    assert simulate(scenario_from_dict(none)).schedules[0].step.time_breakdown_s["host_bound"] == 0.0
    big = simulate(_vila(training=dict(micro_batch_size=16, global_batch_size=512))).schedules[0].step
    assert big.time_breakdown_s["host_bound"] == 0.0


def test_min_max_split_prices_host_bound_layers_at_their_dispatch_cost():
    """When dispatch sets a stage's pace, the per-layer costs behind the min-max split are the host's,
    so a host-bound model is split evenly rather than by its (smaller) device times."""
    from trsim.simulator.simulate import layer_costs, schedule_plans
    scn = _vila(training=dict(micro_batch_size=1, global_batch_size=128))
    plans = schedule_plans(scn, "unified")
    per_layer = layer_costs(scn, plans)
    host = scn.hardware.host_layer_s * (1.4 if scn.training.recompute == "full" else 1.0)
    assert per_layer.min() >= host * (1 - 1e-12)
    report = simulate(scn).schedules[-1].step.parallel
    assert report["min_max_layers_per_stage"] == [16, 16]


def test_interleaved_pipeline_gets_a_split_of_whole_chunks_that_is_never_slower():
    """With virtual stages each stage keeps whole chunks, so the search moves v layers at a time. A 1M-token
    vocabulary makes the last stage (LM head and loss) the straggler: layers move to the first stage."""
    doc = dict(name="il", model=dict(preset="llama-2-7b", num_layers=16, vocab_size=1_000_000),
               hardware=dict(preset="h100-sxm", num_gpus=4), parallelism=dict(pipeline=2, virtual_stages=2),
               training=dict(micro_batch_size=2, global_batch_size=16, zero_stage=1, stack="megatron"),
               tasks=dict(t=dict(samples=1, segments=[dict(name="x", kind="text", tokens=4096, target=True)])))
    step = simulate(scenario_from_dict(doc)).schedules[0].step
    par = step.parallel
    split = par["suggested_layers_per_stage"]
    assert "min_max_layers_per_stage" not in par  # no contiguous partition describes interleaved stages
    assert sum(split) == 16 and all(n % 2 == 0 and n >= 2 for n in split)
    assert split[0] > split[1] and par["suggested_step_time_s"] < step.time_s
    doc["parallelism"]["layers_per_stage"] = split  # the suggestion, run as given, takes the time it promised
    again = simulate(scenario_from_dict(doc)).schedules[0].step
    assert again.time_s == pytest.approx(par["suggested_step_time_s"], rel=1e-12)
    assert again.parallel["suggested_step_time_s"] <= again.time_s


def test_profiled_case_prediction_waits_for_the_host(tiny):
    """predict_case (what validate and calibrate compare with profiler cases) takes max(host, device)
    like the step model, so GPU profiles of small models can determine host_layer_s."""
    from trsim.simulator.plan import Layout, compile_points
    from trsim.simulator.presets import HARDWARE_PRESETS
    from trsim.simulator.simulate import predict_case
    from trsim.validate.fit import base_hardware
    hw = base_hardware("h100-sxm")
    plan = compile_points(None, Layout.from_task(next(iter(tiny.tasks.values()))), tiny.model.num_layers)
    kw = dict(weight_bytes=2, gradient_bytes=2, optimizer_bytes=12, activation_bytes=2)
    slow = predict_case(tiny.model, hw, plan, 1, **kw)
    fast = predict_case(tiny.model, hw.model_copy(update={"host_layer_s": 0.0}), plan, 1, **kw)
    assert slow["time_s"]["host_bound"] > 0 and fast["time_s"]["host_bound"] == 0
    # the host dispatches the layers and then the micro-batch's own work (embedding, loss, schedule)
    assert slow["fwd_bwd_s"] == pytest.approx(tiny.model.num_layers * HARDWARE_PRESETS["h100-sxm"]["host_layer_s"]
                                              + HARDWARE_PRESETS["h100-sxm"]["step_overhead_s"])


def test_a_host_bound_micro_batch_pays_its_work_outside_the_layers_on_the_host(tiny_doc):
    """Dispatch-bound, a micro-batch takes the host's time for its layers plus its work outside them
    (step_overhead_s: embedding, loss, schedule), which the device-side price carries too and which
    used to vanish inside max(host, device); the per-layer costs behind the stage split leave it out."""
    from trsim.simulator.simulate import layer_costs, schedule_plans
    doc = copy.deepcopy(dict(tiny_doc, hardware=dict(preset="h100-sxm", num_gpus=1, step_overhead_s=5e-3)))
    scn = scenario_from_dict(doc)
    step = simulate(scn).schedules[0].step
    assert step.time_breakdown_s["host_bound"] > 0
    per_step = sum(v for k, v in step.time_breakdown_s.items()
                   if k not in ("communication_total", "optimizer", "communication_exposed",
                                "communication_contention"))
    M = scn.training.global_batch_size // scn.training.micro_batch_size
    hw = scn.hardware
    again = 1.4 if scn.training.recompute == "full" else 1.0
    assert per_step == pytest.approx(M * (scn.model.num_layers * hw.host_layer_s * again + hw.step_overhead_s),
                                     rel=1e-9)
    per_layer = layer_costs(scn, schedule_plans(scn, next(iter(scn.schedules))))
    assert per_layer[:-1] == pytest.approx(hw.host_layer_s * again, rel=1e-12)  # the last one holds the LM head


def test_full_recompute_reruns_the_layers_not_the_lm_head(tiny_doc):
    """Activation checkpointing wraps the decoder layers, so full recompute runs their forward again but
    not the LM head's (Megatron's hardware-FLOPs formula, 96Bslh^2(1 + s/6h + V/16lh), counts its LM head
    three times, not four): hardware FLOPs = model FLOPs + the layers' forward, and the recompute time
    holds no LM-head GEMM or loss (a vocabulary 64 times larger leaves it where it was)."""
    from trsim.simulator import costs
    from trsim.simulator.plan import compile_schedule

    def step(vocab):
        doc = _with(tiny_doc, recompute="full")
        doc["model"]["vocab_size"] = vocab
        scn = scenario_from_dict(doc)
        res = simulate(scn).schedules[0]
        c = costs.counts(compile_schedule(scn, "baseline", "u"), scn.conventions.lm_head)
        return res.step, costs.lm_head_flops(c, scn.model), scn.training.global_batch_size
    s, lm, G = step(64)
    assert s.hardware_flops - s.flops == pytest.approx(s.flops / 3 - G * lm, rel=1e-12)
    big, _, _ = step(64 * 64)
    assert big.time_breakdown_s["recompute"] == pytest.approx(s.time_breakdown_s["recompute"], rel=1e-9)
    assert big.time_breakdown_s["matmul"] > s.time_breakdown_s["matmul"]


def test_hidden_data_parallel_traffic_costs_the_sms_its_collectives_hold():
    """FSDP's weight gathers and gradient reduce-scatters hide under compute, but each running NCCL kernel
    holds ``collective_compute_units`` of the GPU's SMs: the step pays that share of every hidden second,
    exactly, and nothing when the collectives hold none."""
    from trsim.simulator.simulate import evaluate, schedule_plans
    doc = yaml.safe_load(open("scenarios/vila_u_7b_64gpu_tp2_pp2.yaml"))
    doc["parallelism"] = {}
    doc["training"].update(task_mixing="ideal", stack="huggingface", zero_stage=3)
    doc["tasks"] = {"u": doc["tasks"]["understanding"]}
    doc["schedules"] = {"baseline": {}}
    scn = scenario_from_dict(doc)
    ev = evaluate(scn, schedule_plans(scn, "baseline"))
    bd = ev["breakdown"]
    hidden = bd["communication_total"][0] - bd["communication_exposed"][0]
    hw = scn.hardware
    assert hw.collective_compute_units == 24 and hw.compute_units == 132
    assert hidden > 0.1 * ev["step_time"][0]                   # FSDP hides most of its traffic here
    assert bd["communication_contention"][0] == pytest.approx(hidden * 24 / 132, rel=1e-12)
    doc["hardware"]["collective_compute_units"] = 0
    free = scenario_from_dict(doc)
    ev0 = evaluate(free, schedule_plans(free, "baseline"))
    assert ev0["breakdown"]["communication_contention"][0] == 0.0
    assert ev["step_time"][0] - ev0["step_time"][0] == pytest.approx(bd["communication_contention"][0], rel=1e-9)
    doc["hardware"]["collective_compute_units"] = 132           # every SM: nothing left to compute on
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict(doc)
    assert "collective_compute_units < compute_units (132), got 132" in str(e.value)


def test_context_parallel_ring_hidden_steps_cost_their_contention(tiny):
    """Ring attention's K/V passes hide under the attention of the block at hand; the hidden part costs its
    SM share, the exposed part is whole."""
    from trsim.simulator.parallel import Shard
    from trsim.simulator.simulate import schedule_plans
    from trsim.validate.fit import base_hardware
    hw0 = base_hardware("h100-sxm")
    assert hw0.collective_compute_units > 0
    hw_free = hw0.model_copy(update=dict(collective_compute_units=0))
    m = tiny.model
    plan = next(iter(schedule_plans(tiny, "baseline").values()))
    cnt = costs.counts(plan, tiny.conventions.lm_head)
    shard = Shard(tensor=1, context=4)
    for attention in (np.full_like(cnt.nq, 1e-6, dtype=float), np.full_like(cnt.nq, 1.0, dtype=float)):
        with0 = collectives.context_parallel_time(cnt, m, 2, 2, shard, hw_free, attention)
        with1 = collectives.context_parallel_time(cnt, m, 2, 2, shard, hw0, attention)
        block = 2 * cnt.nkv / 4 * 2 * m.num_key_value_heads * m.head_dim * 2
        step = collectives.point_to_point(block, collectives.link_bandwidth(hw0, 4, 1), hw0,
                                          across_nodes=collectives.spans_nodes(hw0, 4, 1))
        hidden = 3 * 3 * step - with0                             # three ring steps, 1 + 2 transfers each
        assert np.allclose(with1 - with0, hidden * 24 / 132, rtol=1e-9, atol=0)
