"""The GPU campaign's committed measurements (validate/data/<gpu>/, partial or complete) against the
simulator, with no fitting: every FLOPs count agrees; saved activations are exact but for what CUDA's
attention kernels keep whatever the batch (flash attention's 16-byte random-number state per call,
compiled FlexAttention's block-mask metadata), so the difference is one constant per plan, under 100 kB;
and the peak memory of a whole training step is within 1% (the model leaves out the plan's own index and
rotary tensors and the batch, about 0.5% on the H200's 12-layer 3B slices)."""
from pathlib import Path

import pytest

from trsim.profiler.schema import load_results
from trsim.validate.fit import base_hardware, cases_from_results, hardware_for

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in (ROOT / "validate" / "data").glob("*/**/*.json")
               if p.parent.parent.name != "cpu_grid" and "cpu_grid" not in p.parts
               and p.name not in ("campaign.json", "calibration.json", "validation.json", "full-depth-validation.json"))
GPU_FILES = [p for p in FILES if load_results(p).environment.device.startswith("cuda")]


@pytest.mark.skipif(not GPU_FILES, reason="no GPU campaign results committed")
def test_gpu_measurements_match_the_memory_model_and_flops():
    loaded = [(p, load_results(p)) for p in GPU_FILES]
    cases = cases_from_results(loaded)
    assert len(cases) >= 50
    assert all(c.flops_match for _, doc in loaded for c in doc.cases if c.status == "ok")
    env = loaded[0][1].environment
    hw = base_hardware(hardware_for(env.gpu, env.device))
    worst_peak = 0.0
    act_extra: dict[str, set] = {}
    for c in cases:
        p, m = c.predict(hw), c.measured
        act_extra.setdefault(c.plan.signature(), set()).add(m["activation_bytes"] - p["activation_bytes"])
        worst_peak = max(worst_peak, abs(p["peak_bytes"] / m["peak_bytes"] - 1))
    assert all(len(v) == 1 for v in act_extra.values()), act_extra
    assert all(0 <= x < 100_000 for v in act_extra.values() for x in v), act_extra
    assert worst_peak < 0.01
