"""The GPU campaign's committed measurements (validate/data/<gpu>/, partial or complete) against the
simulator, with no fitting: every FLOPs count agrees; saved activations are exact but for what CUDA's
attention kernels keep whatever the batch (flash attention's 16-byte random-number state per call,
compiled FlexAttention's block-mask metadata), so the difference is one constant per plan, under 100 kB;
and the peak memory of a whole training step is within 1% (the model leaves out the plan's own index and
rotary tensors and the batch, about 0.5% on the H200's 12-layer 3B slices)."""
import json
from pathlib import Path

import pytest

from trsim.profiler.schema import SCHEMA, load_results
from trsim.validate.fit import base_hardware, cases_from_results, hardware_for

ROOT = Path(__file__).resolve().parents[1]
def _gpu_results():
    """Every committed profiler results file measured on CUDA (other JSON files there are skipped)."""
    out = []
    for p in sorted((ROOT / "validate" / "data").glob("*/**/*.json")):
        if "cpu_grid" in p.parts or json.loads(p.read_text()).get("schema") != SCHEMA:
            continue
        doc = load_results(p)
        if doc.environment.device.startswith("cuda"):
            out.append((p, doc))
    return out


def test_gpu_measurements_match_the_memory_model_and_flops():
    loaded = _gpu_results()
    if not loaded:
        pytest.skip("no GPU campaign results committed")
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
