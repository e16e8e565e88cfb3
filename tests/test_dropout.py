"""Dropout (training.hidden_dropout / attention_dropout): its memory traffic by hand, where recompute runs
it again, the masks the stacks keep (Korthikanti et al.'s 34 s b h), and bad values refused."""
import subprocess
import sys

import numpy as np
import pytest
import yaml

from trsim.simulator import costs, memory, scenario_from_dict, simulate
from trsim.simulator.config import ModelSpec, Task
from trsim.simulator.parallel import Shard
from trsim.simulator.plan import Layout, compile_points

GPT = ModelSpec(num_layers=2, hidden_size=256, num_attention_heads=8, num_key_value_heads=8, head_dim=32,
                intermediate_size=1024, mlp="gelu", vocab_size=1000)


def _counts(tokens, layers=2):
    task = Task(samples=1, segments=[dict(name="text", kind="text", tokens=tokens)])
    return costs.counts(compile_points(None, Layout.from_task(task), layers))


def _hw(kernel):
    doc = dict(name="x", model=GPT.model_dump(), hardware=dict(preset="a100-sxm-80g", num_gpus=1,
                                                                 attention_kernel=kernel),
               tasks=dict(t=dict(samples=1, segments=[dict(name="text", kind="text", tokens=64)])))
    return scenario_from_dict(doc).hardware


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("t,sp", [(1, False), (4, True), (4, False)])
def test_hidden_dropout_bytes_by_hand(fused, t, sp):
    """Two sites per layer on the query rows x hidden size; a fused site writes the mask (1 byte), a kernel of
    its own reads and writes the tensor too (2e + 1); backward reads gradient and mask, writes the gradient."""
    s, B, e, d = 300, 3, 2, GPT.hidden_size
    c = _counts(s)
    got = costs.dropout_bytes(c, GPT, _hw("flash2"), B, e, Shard(tensor=t, sequence_parallel=sp),
                              costs.Dropout(hidden=True, fused_hidden=fused))
    rows = B * s * 2 * d / (t if sp else 1)
    assert got["forward"][0, 0] == pytest.approx(rows * (1 if fused else 2 * e + 1))
    assert got["backward"][0, 0] == pytest.approx(rows * (2 * e + 1))
    assert got["attention_forward"][0, 0] == 0


@pytest.mark.parametrize("kernel,priced", [("math", True), ("flash2", False), ("mem_efficient", False)])
def test_attention_dropout_costs_bytes_only_where_the_scores_are_a_tensor(kernel, priced):
    """The math kernel materialises every head's whole query x key rectangle (also for a causal mask); a
    separate dropout kernel reads and writes it and writes a mask, and backward does the same."""
    s, B, e, t = 200, 2, 2, 2
    c = _counts(s)
    got = costs.dropout_bytes(c, GPT, _hw(kernel), B, e, Shard(tensor=t), costs.Dropout(attention=True))
    want = B * (GPT.num_attention_heads / t) * s * s * (2 * e + 1) if priced else 0.0
    assert got["forward"][0, 0] == pytest.approx(want) and got["backward"][0, 0] == pytest.approx(want)
    assert got["attention_forward"][0, 0] == pytest.approx(want)


def _doc(kernel="math", recompute="none", **training):
    return dict(name="gpt", model=GPT.model_dump(),
                # no host dispatch: this small model would wait on the host and hide device time
                hardware=dict(preset="a100-sxm-80g", num_gpus=1, attention_kernel=kernel, host_layer_s=0.0),
                training=dict(micro_batch_size=4, global_batch_size=4, zero_stage=0, recompute=recompute,
                              **training),
                tasks=dict(t=dict(samples=1, segments=[dict(name="text", kind="text", tokens=1024, target=True)])))


def _step(doc):
    return simulate(scenario_from_dict(doc)).schedules[0].step


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_dropout_time_in_the_step_and_what_recompute_runs_again(recompute):
    base = _step(_doc(recompute=recompute))
    drop = _step(_doc(recompute=recompute, hidden_dropout=0.1, attention_dropout=0.1))
    sc = scenario_from_dict(_doc())
    c = _counts(1024)
    by = costs.dropout_bytes(c, GPT, sc.hardware, 4, 2, Shard(), costs.Dropout(hidden=True, attention=True))
    bw = sc.hardware.memory_bandwidth * sc.hardware.bandwidth_efficiency
    per_layer = {k: float(v[0, 0]) / bw for k, v in by.items()}
    # and each dropout kernel's fixed time: the scenario's stack fuses hidden dropout forward (no kernel of
    # its own), backward has one a site; the math kernel's attention dropout one each way
    k = sc.hardware.memory_bound_kernel_s
    kf, kb, ka = 1 * k, 3 * k, 1 * k
    again = {"none": 0.0, "selective": per_layer["attention_forward"] + ka,
             "full": per_layer["forward"] + kf}[recompute]
    want = GPT.num_layers * (per_layer["forward"] + kf + per_layer["backward"] + kb + again)
    assert drop.time_s - base.time_s == pytest.approx(want, rel=1e-9)
    # the probability does not matter: a mask is drawn and applied whatever p is
    assert _step(_doc(recompute=recompute, hidden_dropout=0.5, attention_dropout=0.01)).time_s == drop.time_s


def test_fused_attention_dropout_is_free_and_the_huggingface_stack_pays_more_for_hidden_dropout():
    assert _step(_doc("flash2", attention_dropout=0.1)).time_s == _step(_doc("flash2")).time_s
    meg = _step(_doc("flash2", stack="megatron", hidden_dropout=0.1)).time_s - _step(_doc("flash2", stack="megatron")).time_s
    hf = _step(_doc("flash2", stack="huggingface", hidden_dropout=0.1)).time_s - _step(_doc("flash2", stack="huggingface")).time_s
    assert hf > meg > 0


@pytest.mark.parametrize("t,sp", [(1, False), (2, True), (8, True)])
def test_megatron_stack_with_dropout_is_korthikanti_34sbh(t, sp):
    """Korthikanti et al. (2022), per layer with tensor and sequence parallelism: 34 s b h / t bytes besides
    the score term (flash attention: an fp32 log-sum-exp per head instead) and TE's fp32 rsigma (8 s)."""
    s, h, a = 300, GPT.hidden_size, GPT.num_attention_heads
    c = _counts(s, 1)
    got = memory.activation_terms("megatron", c, GPT, 2, Shard(tensor=t, sequence_parallel=sp),
                                  hidden_dropout=True).layer[0, 0]
    assert got == pytest.approx((s * h * 34 + 8 * s) / t + 4 * a * s / t, rel=1e-12)


def test_hidden_dropout_masks_in_the_step_memory():
    base = _step(_doc("flash2", stack="megatron"))
    drop = _step(_doc("flash2", stack="megatron", hidden_dropout=0.1))
    masks = GPT.num_layers * 4 * 1024 * 2 * GPT.hidden_size  # micro-batch 4, two one-byte masks per layer
    got = drop.memory_breakdown_bytes["activations_and_logits"] - base.memory_breakdown_bytes["activations_and_logits"]
    assert got == masks


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.1", True])
def test_bad_dropout_is_one_line(tmp_path, value):
    doc = _doc(hidden_dropout=value)
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    r = subprocess.run([sys.executable, "-m", "trsim", "simulate", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"trsim: error: {p}: training.hidden_dropout: expected"), r.stderr


@pytest.mark.parametrize("stack", ["trsim", "huggingface", "megatron"])
@pytest.mark.parametrize("kernel", ["math", "flash2", "cudnn"])
def test_zero_dropout_prices_exactly_nothing(stack, kernel):
    """Probabilities of 0 switch every dropout term off: zero bytes, not small ones, on any stack and kernel."""
    sc = scenario_from_dict(_doc(kernel if kernel != "cudnn" else "flash2", stack=stack, hidden_dropout=0.0,
                                 attention_dropout=0.0))
    d = costs.Dropout.of(sc.training)
    assert not d.hidden and not d.attention
    got = costs.dropout_bytes(_counts(300), GPT, _hw("math"), 2, 2, Shard(tensor=2, sequence_parallel=True, context=2), d)
    assert all(np.all(v == 0) for v in got.values())
    a = memory.activation_terms(stack, _counts(300), GPT, 2, Shard(tensor=2), hidden_dropout=False).layer
    b = memory.activation_terms(stack, _counts(300), GPT, 2, Shard(tensor=2)).layer
    assert np.array_equal(a, b)


def test_dropout_bytes_and_masks_split_over_context_ranks():
    s, B, e = 256, 2, 2
    c = _counts(s)
    one = costs.dropout_bytes(c, GPT, _hw("math"), B, e, Shard(tensor=2), costs.Dropout(hidden=True, attention=True))
    four = costs.dropout_bytes(c, GPT, _hw("math"), B, e, Shard(tensor=2, context=4),
                               costs.Dropout(hidden=True, attention=True))
    for k in one:
        assert four[k][0, 0] == pytest.approx(one[k][0, 0] / 4), k
    m1 = memory.activation_terms("megatron", c, GPT, 2, Shard(tensor=2), hidden_dropout=True).layer
    m0 = memory.activation_terms("megatron", c, GPT, 2, Shard(tensor=2)).layer
    m4 = memory.activation_terms("megatron", c, GPT, 2, Shard(tensor=2, context=4), hidden_dropout=True).layer
    m40 = memory.activation_terms("megatron", c, GPT, 2, Shard(tensor=2, context=4)).layer
    assert (m1 - m0)[0, 0] == 2 * s * GPT.hidden_size and (m4 - m40)[0, 0] == pytest.approx(2 * s * GPT.hidden_size / 4)


@pytest.mark.parametrize("stack", ["trsim", "huggingface", "megatron"])
@pytest.mark.parametrize("t", [1, 2, 8])
def test_masks_split_over_tensor_ranks_only_with_sequence_parallelism(stack, t):
    """Without sequence parallelism every tensor rank holds the whole hidden state and its masks: Korthikanti's
    s b h (10 + 24 / t) keeps its 2 s b h of masks whole; with it they are split with the rest (34 / t)."""
    s, h = 300, GPT.hidden_size
    c = _counts(s, 1)
    for sp in (False, True):
        with_ = memory.activation_terms(stack, c, GPT, 2, Shard(tensor=t, sequence_parallel=sp), hidden_dropout=True)
        without = memory.activation_terms(stack, c, GPT, 2, Shard(tensor=t, sequence_parallel=sp))
        assert (with_.layer - without.layer)[0, 0] == pytest.approx(2 * s * h / (t if sp else 1))
        assert with_.selective[0, 0] == without.selective[0, 0]  # selective recompute keeps the masks
