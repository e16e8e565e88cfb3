"""Peak memory of a training step: the simulator's model (at the loss, or in the optimizer step) against
what the reference executor allocates, measured on the CPU from the profiler's allocation events, in
both regimes: one sample (the optimizer step's gradients and temporaries set the peak) and many (the
activations and the loss's gradients do)."""
import pytest
import torch

from trsim.profiler.run import profile_case
from trsim.simulator import memory
from trsim.simulator.config import TrainingSpec
from trsim.simulator.plan import compile_schedule
from trsim.simulator.simulate import predict_case
from trsim.validate.fit import base_hardware


def _measured_and_predicted(scn, schedule, micro_batch):
    torch.set_num_threads(1)
    case = profile_case(scn, schedule, "u", device=torch.device("cpu"), dtype=torch.float32, layers=None,
                        micro_batch=micro_batch, repeats=1, warmup=0, use_fvcore=False, count=False,
                        class_repeats=1)
    assert case["status"] == "ok", case.get("error")
    mem = case["memory"]
    plan = compile_schedule(scn, schedule, "u")
    pred = predict_case(scn.model, base_hardware("cpu"), plan, micro_batch, weight_bytes=4, gradient_bytes=4,
                        optimizer_bytes=8, activation_bytes=4, lm_head=scn.conventions.lm_head)
    held = 4 * pred["parameters"] + 8 * pred["parameters"]  # fp32 weights and AdamW's two fp32 moments
    # what the step adds on top of what lived before it (the measured static also holds the batch and
    # the plan's index and rotary tensors, which the model leaves out)
    return mem["peak_allocated_bytes"] - mem["static_bytes"], pred["peak_bytes"] - held, pred


@pytest.mark.parametrize("schedule", ["baseline", "himix", "hmgen", "drop"])
@pytest.mark.parametrize("micro_batch", [1, 16])
def test_peak_of_a_step_matches_the_executor(tiny, schedule, micro_batch):
    measured, predicted, _ = _measured_and_predicted(tiny, schedule, micro_batch)
    # exact but for the loss scalar and the optimizer's step counters (a few bytes)
    assert abs(predicted - measured) <= 64, (measured, predicted)


def test_both_regimes_are_exercised(tiny):
    """One sample: the optimizer step (gradients plus one sqrt(v) buffer per weight) sets the peak; many:
    the loss, without gradients, which a step of one micro-batch has not allocated yet."""
    m1, _, p1 = _measured_and_predicted(tiny, "baseline", 1)
    assert m1 == pytest.approx(8 * p1["parameters"], abs=64)
    m16, _, p16 = _measured_and_predicted(tiny, "baseline", 16)
    assert m16 > 8 * p16["parameters"] and m16 == pytest.approx(p16["activation_bytes"] + 16 * 8 * 18 * 64, abs=64)


def test_dynamic_selection_adds_only_its_plan_tensors(tiny):
    """Attention-score selection (pyramid here) builds its layers' row indices and rotary rows in every
    forward, where static plans precompute them (weights-like constants the model leaves out of both): the
    step then holds them on top, the same bytes at every micro-batch size, and nothing else differs."""
    extra, step = [], []
    for micro_batch in (1, 4, 16):
        measured, predicted, _ = _measured_and_predicted(tiny, "pyramid", micro_batch)
        extra.append(measured - predicted)
        step.append(measured)
    assert max(extra) - min(extra) <= 64 and 0 < extra[0] < 0.03 * step[0], (extra, step)


def test_gradients_live_at_the_loss_only_where_they_outlive_the_step():
    t = TrainingSpec(micro_batch_size=1, global_batch_size=1)
    assert not memory.gradients_live_at_loss(t, 1) and memory.gradients_live_at_loss(t, 2)
    assert memory.gradients_live_at_loss(t.model_copy(update={"stack": "megatron"}), 1)
    # data-parallel wrappers keep gradient buckets or partitions, FSDP / ZeRO-3 does not
    assert memory.gradients_live_at_loss(t.model_copy(update={"zero_stage": 2}), 1, replicas=8)
    assert not memory.gradients_live_at_loss(t.model_copy(update={"zero_stage": 3}), 1, replicas=8)
    static = {"weights": 10.0, "gradients": 10.0, "optimizer": 20.0}
    assert memory.peak_bytes(static, 100.0, 10.0, False) == 130.0
    assert memory.peak_bytes(static, 100.0, 10.0, True) == 140.0
    assert memory.peak_bytes(static, 1.0, 10.0, False) == 50.0
