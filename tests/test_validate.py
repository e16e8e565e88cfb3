"""Calibration recovers known parameters; cross-validation never predicts a case from a fit that saw
it; FLOPs mismatches fail the command; and the whole CPU path runs end to end."""
import copy
import json

import numpy as np
import pytest

from trsim.simulator import scenario_from_dict
from trsim.simulator.plan import compile_schedule
from trsim.validate import fit as F
from trsim.validate.commands import cross_validate


def synthetic_cases(tiny_doc, truth):
    cases = []
    for B in (1, 3, 8):
        for img in (10, 40):
            doc = copy.deepcopy(tiny_doc)
            doc["tasks"]["u"]["segments"][1]["tokens"] = img
            scn = scenario_from_dict(doc)
            for s in scn.schedules:
                plan = compile_schedule(scn, s, "u")
                c = F.Case(source="synthetic", schedule=s, task="u", model=scn.model, plan=plan, micro_batch=B,
                           settings=dict(weight_bytes=4, gradient_bytes=4, optimizer_bytes=8, activation_bytes=4,
                                         attention="causal", lm_head="all"),
                           measured={}, flops={}, device="cpu")
                p = c.predict(truth)
                c.measured = {"classes_s": {k: p["time_s"][k] for k in F.CLASSES}, "fwd_bwd_s": p["fwd_bwd_s"],
                              "activation_bytes": p["activation_bytes"], "peak_bytes": None}
                cases.append(c)
    return cases


def test_fit_recovers_known_parameters(tiny_doc):
    hw0 = F.base_hardware("cpu")
    truth = F.with_params(hw0, [0.6, 40.0, 0.3, 20.0, 0.4, 0.2, 3e-4, 2e-3])
    res = F.fit(synthetic_cases(tiny_doc, truth), hw0)
    for k, v in zip(F.PARAMS, [0.6, 40.0, 0.3, 20.0, 0.4, 0.2, 3e-4, 2e-3]):
        assert res.values[k] == pytest.approx(v, rel=1e-3), k
    assert res.residual_rms < 1e-6


def test_cross_validation_never_sees_the_held_out_group(tiny_doc, monkeypatch):
    cases = synthetic_cases(tiny_doc, F.base_hardware("cpu"))
    seen = []
    real = F.fit

    def spy(train, hw0):
        seen.append({c.schedule for c in train})
        return real(train, hw0)
    import trsim.validate.commands as cmd
    monkeypatch.setattr(cmd, "fit", spy)
    preds = cross_validate(cases, F.base_hardware("cpu"), "schedule")
    schedules = sorted({c.schedule for c in cases})
    assert len(seen) == len(schedules) and len(preds) == len(cases)
    for held, train in zip(schedules, seen):
        assert held not in train and train == set(schedules) - {held}
    sizes = {c.size for c in cases}
    seen.clear()
    cross_validate(cases, F.base_hardware("cpu"), "size")
    assert len(seen) == len(sizes)


@pytest.mark.slow
def test_cpu_end_to_end_profile_calibrate_validate(tmp_path):
    from trsim.cli import main
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out, mb in ((a, "1"), (b, "3")):
        assert main(["profile", "scenarios/tiny_cpu.yaml", "--micro-batch", mb, "--repeats", "3", "--warmup", "1",
                     "--out", str(out), "--no-fvcore", "--format", "json"]) == 0
    cal = tmp_path / "cal.json"
    assert main(["calibrate", str(a), str(b), "--out", str(cal), "--format", "json"]) == 0
    doc = json.loads(cal.read_text())
    assert doc["schema"] == "trsim.calibration/1" and set(doc["parameters"]) == set(F.PARAMS)
    report, png = tmp_path / "v.json", tmp_path / "v.png"
    assert main(["validate", str(a), str(b), "--out", str(report), "--plot", str(png), "--format", "json"]) == 0
    rep = json.loads(report.read_text())
    assert rep["flops_mismatches"] == [] and rep["summary"]["activation_memory"]["max_abs_pct"] == 0.0
    assert all("leave-one-schedule-out_error_pct" in r for r in rep["cases"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    # a calibration file is what a scenario's hardware block loads
    assert main(["validate", str(a), "--calibration", str(cal), "--format", "json"]) == 0

    # a FLOPs mismatch fails validate with exit code 1
    tampered = json.loads(a.read_text())
    tampered["cases"][0]["flops"]["flop_counter"]["forward"] += 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tampered))
    assert main(["validate", str(bad), "--format", "json"]) == 1
