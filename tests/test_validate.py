"""Calibration recovers known parameters; cross-validation never predicts a case from a fit that saw
it; FLOPs mismatches fail the command; and the whole CPU path runs end to end."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from trsim.simulator import scenario_from_dict
from trsim.simulator.plan import compile_schedule
from trsim.validate import fit as F
from trsim.validate.crossval import folds, held_out


TRUTH = dict(matmul_efficiency=0.6, matmul_half_k=40.0, matmul_overhead_s=1e-5, attention_efficiency=0.3,
             attention_half_keys=20.0, bandwidth_efficiency=0.4, gather_efficiency=0.2, layer_overhead_s=3e-4,
             step_overhead_s=2e-3)


def synthetic_cases(tiny_doc, truth, sizes=((1, 10), (8, 40)), depths=(4,), schedules=None):
    cases = []
    for L in depths:
        for B, img in sizes:
            doc = copy.deepcopy(tiny_doc)
            doc["tasks"]["u"]["segments"][1]["tokens"] = img
            doc["model"]["num_layers"] = L
            if L < 4:
                doc["schedules"] = {k: v for k, v in doc["schedules"].items() if k in ("baseline", "drop", "himix")}
            scn = scenario_from_dict(doc)
            for s in schedules or scn.schedules:
                plan = compile_schedule(scn, s, "u")
                c = F.Case(source="synthetic", schedule=s, task="u", model=scn.model, plan=plan, micro_batch=B,
                           settings=dict(weight_bytes=4, gradient_bytes=4, optimizer_bytes=8, activation_bytes=4,
                                         attention="causal", lm_head="all"),
                           measured={}, flops={}, device="cuda")  # per-class times fitted (device times)
                p = c.predict(truth)
                c.measured = {"classes_s": {k: p["time_s"][k] for k in F.CLASSES}, "fwd_bwd_s": p["fwd_bwd_s"],
                              "activation_bytes": p["activation_bytes"], "peak_bytes": None}
                cases.append(c)
    return cases


def test_fit_recovers_known_parameters_and_names_what_one_depth_cannot_separate(tiny_doc):
    hw0 = F.base_hardware("cpu")
    truth = F.with_params(hw0, {**TRUTH, "layer_overhead_s": hw0.layer_overhead_s})
    res = F.fit(synthetic_cases(tiny_doc, truth), hw0, prior=False)
    # every profiled case has 4 layers: a per-layer and a per-micro-batch cost cannot be told apart; on
    # the CPU host and device are one processor, so the overlapped host-dispatch term moves nothing; and one
    # device runs no collective
    assert set(res.fixed) == {"layer_overhead_s", "host_layer_s", "collective_efficiency"}
    assert "step_overhead_s" in res.fixed["layer_overhead_s"] and "no measurement" in res.fixed["host_layer_s"]
    assert "no measurement" in res.fixed["collective_efficiency"]
    assert res.std["layer_overhead_s"] is None
    assert "matmul_efficiency_fp8" not in F.params_for(hw0)  # the CPU has no fp8 ceiling to fit
    for k in F.params_for(hw0):
        assert res.values[k] == pytest.approx(getattr(truth, k), rel=1e-3), k
    assert res.residual_rms < 1e-6


def test_two_depths_make_the_layer_cost_identifiable(tiny_doc):
    hw0 = F.base_hardware("cpu")
    truth = F.with_params(hw0, TRUTH)
    cases = synthetic_cases(tiny_doc, truth, sizes=((1, 10), (4, 40)), depths=(2, 4),
                            schedules=("baseline", "drop", "himix"))
    res = F.fit(cases, hw0, prior=False)
    assert "layer_overhead_s" not in res.fixed and "step_overhead_s" not in res.fixed
    assert res.values["layer_overhead_s"] == pytest.approx(3e-4, rel=1e-3)
    assert res.values["step_overhead_s"] == pytest.approx(2e-3, rel=1e-3)


def test_one_case_cannot_determine_nine_parameters(tiny_doc):
    hw0 = F.base_hardware("cpu")
    cases = synthetic_cases(tiny_doc, F.with_params(hw0, TRUTH), sizes=((2, 10),), schedules=("baseline",))
    res = F.fit(cases, hw0)
    assert res.measurements <= 5 and len(F.params_for(hw0)) - len(res.fixed) <= res.measurements
    assert all(res.fixed[k] for k in res.fixed)                 # each fixed parameter says why
    assert all(res.std[k] is None for k in res.fixed)           # no made-up 1e-16 standard errors
    free = [k for k in F.params_for(hw0) if k not in res.fixed]
    assert all(res.std[k] is None or res.std[k] > 0 for k in free)


def test_cross_validation_never_sees_the_held_out_group_or_an_identical_plan(tiny_doc):
    tiny_doc["schedules"]["baseline_copy"] = {}            # compiles to the baseline's plan
    tiny_doc["schedules"]["drop_nothing"] = {"u": {"method": "drop", "from_layer": 1, "keep": 1.0}}
    cases = synthetic_cases(tiny_doc, F.base_hardware("cpu"), sizes=((1, 10), (2, 20)))
    sigs = [c.signature for c in cases]
    assert len(set(sigs)) < len(sigs)                       # the set holds identical plans
    for scheme in (("group", "schedule"), ("group", "size"), ("loo", None), ("k", 3)):
        fs = folds(cases, scheme)
        assert sorted(i for f in fs for i in f) == list(range(len(cases)))
        seen = []
        held = held_out(cases, F.base_hardware("cpu"), scheme,
                        fit_fn=lambda train, hw0: (seen.append(train), _Fixed(hw0))[1])
        assert len(seen) == len(fs) and set(held) == set(range(len(cases)))
        for test, train in zip(fs, seen):
            test_sigs = {sigs[i] for i in test}
            assert not test_sigs & {c.signature for c in train}
            assert len(train) + len(test) == len(cases)
        if scheme == ("group", "schedule"):
            # each schedule with a plan of its own is held out on its own
            groups = [{cases[i].schedule for i in f} for f in fs]
            assert {"himix"} in groups and any({"baseline", "baseline_copy"} <= g for g in groups)


def test_k_fold_split_of_runs_does_not_move_when_a_preset_constant_does(monkeypatch):
    """Folds are dealt by the runs' configurations as written, not by their presets' values: nudging a
    preset constant (here by one part in 10^15, which once moved Selene's held-out median from 1.3% to
    2.1%) re-prices the runs but holds out the same runs together; identical runs still share a fold."""
    from trsim.simulator import presets
    from trsim.validate.runs import load_runs
    from trsim.validate.suite import PUBLISHED

    def split(path):
        runs, _, _ = load_runs(path)
        return runs, [sorted(runs[i].name for i in f) for f in folds(runs, ("k", 5))]

    path = PUBLISHED / "megatron_selene_a100.yaml"
    runs0, before = split(path)
    a100 = dict(presets.HARDWARE_PRESETS["a100-sxm-80g"])
    monkeypatch.setitem(presets.HARDWARE_PRESETS, "a100-sxm-80g",
                        {**a100, "collective_latency_s": a100["collective_latency_s"] * (1 + 1e-15),
                         "bandwidth_efficiency": 0.5})
    runs1, after = split(path)
    assert [r.signature for r in runs1] != [r.signature for r in runs0]   # the resolved runs did change
    assert after == before and len(before) == 5
    # two runs of one configuration under different names still land in one fold
    twin = copy.deepcopy(runs1[3])
    twin.name = "twin"
    fs = folds(runs1 + [twin], ("k", 5))
    assert any({3, len(runs1)} <= set(f) for f in fs)


def test_k_fold_splits_of_the_published_runs_are_pinned():
    """README's held-out figures come from these 5-fold splits. A change that moves them (a new scenario or
    model field that enters the runs' digests, say: adding ModelSpec.sliding_window, None everywhere, once
    re-dealt every source but one) must be deliberate: re-run the suite, update README's tables and this
    digest together. Korthikanti's split is spelled out, the others by the digest of every split."""
    import hashlib
    from trsim.validate.runs import load_runs
    from trsim.validate.suite import PUBLISHED
    split = {}
    for path in sorted(PUBLISHED.glob("*.yaml")):
        runs, _, _ = load_runs(path, allow_unsupported=True)
        split[path.name] = [sorted(runs[i].name for i in f) for f in folds(runs, ("k", 5))]
    assert split["korthikanti_a100.yaml"] == [
        ["gpt3-175B-selective-sp", "megatron-1T-selective-sp"], ["megatron-1T-full", "megatron-22B-full"],
        ["gpt3-175B-full", "megatron-22B-selective-sp"], ["turing-530B-full"], ["turing-530B-selective-sp"]]
    digest = hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()
    assert digest == "3de744fc3bf54158925e04b194dbb970be307ce7f6cdcf19e8d8c80bfe519908"


class _Fixed:
    def __init__(self, hw0):
        self.values, self.fixed, self.hardware = {}, {}, hw0


def runs_doc(tiny_doc, truth_hw=None, configs=((4, 2, 10), (4, 4, 40), (2, 2, 40), (8, 1, 10), (2, 8, 10),
                                              (8, 4, 40), (4, 8, 20), (2, 1, 20))):
    base = {k: v for k, v in tiny_doc.items() if k not in ("schedules", "name")}
    runs = []
    for L, B, img in configs:
        scn = copy.deepcopy(base)
        scn["name"] = f"L{L}-B{B}-i{img}"
        scn["model"]["num_layers"] = L
        scn["training"] = {**scn["training"], "micro_batch_size": B, "global_batch_size": B}
        scn["tasks"]["u"]["segments"][1]["tokens"] = img
        runs.append({"name": scn["name"], "scenario": scn, "measured": {"step_time_s": 1.0}})
    doc = {"source": "synthetic", "runs": runs}
    if truth_hw is not None:
        from trsim.validate.runs import load_runs
        import tempfile, pathlib, yaml
        with tempfile.TemporaryDirectory() as d:
            path = pathlib.Path(d) / "r.yaml"
            path.write_text(yaml.safe_dump(doc))
            loaded, _, _ = load_runs(path)
        for r, raw in zip(loaded, runs):
            raw["measured"]["step_time_s"] = r.predicted_time(r.hardware_with(truth_hw, None))
    return doc


def test_calibrate_from_runs_recovers_step_times_and_names_fixed_parameters(tiny_doc, tmp_path):
    import yaml
    from trsim.cli import main
    truth = {"matmul_efficiency": 0.5, "layer_overhead_s": 4e-4, "step_overhead_s": 3e-3}
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(runs_doc(tiny_doc, truth)))
    cal = tmp_path / "cal.json"
    assert main(["calibrate", "--runs", str(path), "--out", str(cal), "--format", "json"]) == 0
    doc = json.loads(cal.read_text())
    prov = doc["provenance"]
    assert prov["inputs"][0]["sha256"] and prov["trsim_version"] and doc["created"]
    # recorded, never fitted: the attention FLOP convention and the fixed time a memory-bound kernel the
    # fit assumed (a parameter of the file, so applying it reproduces the fit)
    recorded = {"attention_backward_ratio", "memory_bound_kernel_s"}
    assert doc["parameters"]["memory_bound_kernel_s"]["value"] == F.base_hardware("cpu").memory_bound_kernel_s
    fixed = set(doc["fit"]["fixed"]) - recorded
    assert fixed                                             # 8 step times cannot pin 9 parameters
    assert fixed.isdisjoint(doc["fit"]["fitted"]) and fixed | set(doc["fit"]["fitted"]) == set(F.params_for(F.base_hardware("cpu")))
    for k in fixed:
        assert doc["parameters"][k]["std"] is None
        assert any(n.startswith(f"{k} fixed at the preset: ") for n in doc["fit"]["notes"])
    # the fitted model reproduces the truth's step times, including on configurations it never saw
    from trsim.validate.runs import load_runs
    fitted = {k: v["value"] for k, v in doc["parameters"].items()}
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(runs_doc(tiny_doc, truth, configs=((6, 3, 30), (3, 6, 15)))))
    for r in load_runs(new)[0]:
        assert r.predicted_time(r.hardware_with(fitted)) == pytest.approx(r.measured_time, rel=0.02)
    rep = tmp_path / "rep.json"
    assert main(["validate", "--runs", str(path), "--cv", "loo", "--out", str(rep), "--format", "json"]) == 0
    out = json.loads(rep.read_text())
    assert out["summary"]["step_time_held_out"]["max_abs_pct"] < 3.0
    assert main(["validate", "--runs", str(path), "--calibration", str(cal), "--format", "json"]) == 0
    # the file records its own held-out check: 5 refits, each scored on the runs it did not see, exactly as
    # crossval.held_out computes it, and every prediction with the file quotes it
    held = doc["fit"]["held_out"]
    assert held["scheme"] == "k5" and held["folds"] == 5 and held["items"] == 8
    from trsim.validate.crossval import held_out as ho
    runs = load_runs(path)[0]
    hw0 = F.base_hardware("cpu")
    errs = [abs(100 * (h["predicted_s"] / runs[i].measured_time - 1)) for i, h in ho(runs, hw0, ("k", 5)).items()]
    assert held["median_abs_pct"] == pytest.approx(float(np.median(errs)), rel=1e-9)
    assert held["max_abs_pct"] == pytest.approx(max(errs), rel=1e-9) and held["max_abs_pct"] < 3.0
    from trsim.cli import calibration_line
    from trsim.simulator.calibration import load_calibration
    line = calibration_line(load_calibration(cal).summary(str(cal)))
    assert f"held out (5 folds) median {held['median_abs_pct']:.1f}%" in line
    skip = tmp_path / "skip.json"
    assert main(["calibrate", "--runs", str(path), "--out", str(skip), "--held-out-folds", "0", "--format", "json"]) == 0
    assert json.loads(skip.read_text())["fit"]["held_out"]["folds"] == 0
    assert "not cross-validated" in calibration_line(load_calibration(skip).summary(str(skip)))
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump(runs_doc(tiny_doc, truth, configs=((4, 2, 10), (2, 2, 40)))))
    assert main(["calibrate", "--runs", str(two), "--out", str(skip), "--format", "json"]) == 0
    note = json.loads(skip.read_text())["fit"]["held_out"]["note"]
    # and it says what the published sources say of so few runs, and where to read it
    assert "too few" in note and "How many logged runs do you need?" in note
    assert "How many logged runs do you need?" in Path(__file__).parents[1].joinpath("README.md").read_text()


def test_calibration_files_without_a_held_out_record_still_load_and_say_so(tmp_path):
    from trsim.cli import calibration_line
    from trsim.simulator.calibration import load_calibration
    doc = json.loads(open("validate/data/h200/partial/calibration.json").read())
    doc["fit"].pop("held_out", None)                            # as written before trsim recorded it
    doc["schema"] = "trsim.calibration/1"
    p = tmp_path / "old.json"
    p.write_text(json.dumps(doc))
    assert "no held-out check recorded" in calibration_line(load_calibration(p).summary(str(p)))


@pytest.mark.parametrize("bad", ["1", "-2", "x"])
def test_held_out_folds_must_be_zero_or_at_least_two(bad, capsys):
    from trsim.cli import main
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--runs", "r.yaml", "--out", "c.json", "--held-out-folds", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--held-out-folds" in err[0] and "expected 0 or an integer >= 2" in err[0]


def test_runs_file_errors_name_the_field(tiny_doc, tmp_path, capsys):
    import yaml
    from trsim.cli import main
    doc = runs_doc(tiny_doc)
    doc["runs"][1]["measured"]["step_time_s"] = -2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["calibrate", "--runs", str(path), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"trsim: error: {path}: runs[1].measured.step_time_s: expected a positive number")
    assert "\n" not in err and not (tmp_path / "c.json").exists()


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
    assert doc["schema"] == "trsim.calibration/2"
    assert set(doc["parameters"]) == set(F.params_for(F.base_hardware("cpu"))) | {"memory_bound_kernel_s"}
    assert "layer_overhead_s" in doc["fit"]["fixed"]  # one depth: not separable from step_overhead_s
    report, png = tmp_path / "v.json", tmp_path / "v.png"
    assert main(["validate", str(a), str(b), "--out", str(report), "--plot", str(png), "--format", "json"]) == 0
    rep = json.loads(report.read_text())
    assert rep["flops_mismatches"] == [] and rep["summary"]["activation_memory"]["max_abs_pct"] == 0.0
    assert all("leave-one-schedule-out_error_pct" in r and "flops-only-size-out_error_pct" in r
               for r in rep["cases"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    # per case: whether the step is device-bound, and each class's preset price over its measured time
    assert all(isinstance(r["device_bound"], bool) and r["class_time_ratio"]
               and all(0 < v < 1e3 for v in r["class_time_ratio"].values()) for r in rep["cases"])
    # a class measured over 1% of a step that the presets price at nothing is named with its seconds, not
    # given a ratio of zero; the matmuls are always priced
    for r in rep["cases"]:
        assert set(r["unpriced_class_s"]).isdisjoint(r["class_time_ratio"]) and "matmul" not in r["unpriced_class_s"]
        assert all(v >= 0.01 * r["measured_fwd_bwd_s"] for v in r["unpriced_class_s"].values())
    assert all(v["cases"] >= 1 and 0.01 <= v["max_step_share"] <= 1 for v in rep["unpriced_classes"].values())
    assert rep["class_time_ratio"]["matmul"]["cases"] == len(rep["cases"])
    # the CPU profile measures a step's peak too; the model leaves out the batch and the plan's tensors
    assert rep["summary"]["peak_memory"]["max_abs_pct"] < 5, rep["summary"]["peak_memory"]
    # a calibration file is what a scenario's hardware block loads
    assert main(["validate", str(a), "--calibration", str(cal), "--format", "json"]) == 0

    # a FLOPs mismatch fails validate with exit code 1
    tampered = json.loads(a.read_text())
    tampered["cases"][0]["flops"]["flop_counter"]["forward"] += 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tampered))
    assert main(["validate", str(bad), "--format", "json"]) == 1
    # ... and calibrate refuses to fit to it, naming the file, writing nothing
    badcal = tmp_path / "badcal.json"
    assert main(["calibrate", str(bad), "--out", str(badcal)]) == 2
    assert not badcal.exists()


def test_published_suite_runs_and_reports_finite_errors():
    """The suite prices every row it supports and names the rows that need parallel-training support.
    No accuracy target is asserted here: README reports the numbers as they are."""
    from trsim.validate.suite import run_suite, suite_files
    names = {p.stem for p in suite_files()}
    assert {"vtrain_a100", "korthikanti_a100", "mcore_h100", "megatron_selene_a100", "nemo_h100", "flashattention_a100",
            "simumax_b200"} <= names
    results = run_suite(folds=None)                     # every row with the presets
    _evidence_is_current(results)
    results = [r for r in results if r["source"] != "korthikanti_a100"] + run_suite(folds=3, sources=["korthikanti_a100"])
    for r in results:
        assert r["rows"] == r["priced"] + r["needs_parallelism_support"] and r["rows"] > 0
        assert r["citation"]
        for row in r.get("runs", []):
            assert np.isfinite(row["predicted_step_time_s"]) and row["predicted_step_time_s"] > 0
            assert np.isfinite(row["error_pct"])
            if row.get("held_out_step_time_s") is not None:
                assert np.isfinite(row["held_out_error_pct"])
    assert sum(r["priced"] for r in results) > 0
    held = [r for r in results if r["source"] == "korthikanti_a100"][0]
    if held["priced"] >= 2:                               # k-fold calibration within one source, held out
        assert held["summary"]["step_time_held_out"]["median_abs_pct"] is not None


def _evidence_is_current(results):
    """The evidence every uncalibrated simulation quotes (validate/published/evidence.json) is what the suite
    gives with the model as it is now: a change to the model or the runs files that moves it fails here
    until the file is written again (its command is in the file)."""
    from trsim.validate.suite import EVIDENCE, evidence
    shipped, now = json.loads(EVIDENCE.read_text()), evidence(results)
    assert shipped["written_by"] == now["written_by"]
    assert shipped["presets"] == now["presets"], f"stale: run {now['written_by']}"
    pooled = [e for r in results for e in (x["error_pct"] for x in r.get("runs", [])) if r["hardware"] == "h100-sxm"]
    assert now["presets"]["h100-sxm"]["runs"] == len(pooled)
    assert now["presets"]["h100-sxm"]["max_abs_pct"] == round(max(map(abs, pooled)), 2)


def test_simulate_quotes_the_published_evidence_for_its_preset_and_none_when_calibrated(tmp_path):
    """An uncalibrated prediction says how far its preset is from published runs (or that none exists); a
    calibrated one does not borrow the preset's evidence."""
    import yaml
    from trsim.cli import main
    from trsim.simulator.simulate import published_evidence
    out = tmp_path / "r.json"
    assert main(["simulate", "scenarios/paper_vila_u_3b.yaml", "--format", "json", "--out", str(out)]) == 0
    ev = json.loads(out.read_text())["evidence"]
    assert ev["preset"] == "h100-sxm" and ev["applies"] and ev["runs"] > 0
    assert set(ev["sources"]) == {"llmfoundry_mpt_h100", "mcore_h100", "nemo_h100"}
    from trsim.validate.suite import EVIDENCE
    shipped = json.loads(EVIDENCE.read_text())["presets"]["h100-sxm"]
    assert ev["max_abs_pct"] == shipped["max_abs_pct"] and ev["sources"] == shipped["sources"]
    assert published_evidence("cpu")["runs"] == 0
    from trsim.cli import evidence_line
    assert "no published training run" in evidence_line(published_evidence("cpu"))
    assert "mcore_h100" in evidence_line(ev) and f"{ev['max_abs_pct']:.1f}%" in evidence_line(ev)
    # the evidence follows the preset, not the name, and not a preset whose time model the scenario changes
    doc = yaml.safe_load(open("scenarios/tiny_cpu.yaml"))
    for hardware, applies, preset in ((dict(preset="cpu", name="b200"), True, "cpu"),
                                      (dict(preset="h100-sxm", attention_kernel="cudnn", price_per_gpu_hour=9), True,
                                       "h100-sxm"),
                                      (dict(preset="h100-sxm", matmul_efficiency=0.2), False, "h100-sxm")):
        scn = scenario_from_dict({**doc, "hardware": {**hardware, "num_gpus": 1}})
        got = published_evidence(scn.hardware_preset, scn.hardware_overrides)
        assert (got["preset"], got["applies"]) == (preset, applies), hardware
    assert "matmul_efficiency" in published_evidence("h100-sxm", ("matmul_efficiency",))["why"]
    custom = published_evidence(None)
    assert not custom["applies"] and "custom hardware" in evidence_line(custom)
    cal = tmp_path / "cal.json"
    runs = tmp_path / "runs.yaml"
    runs.write_text(yaml.safe_dump({"source": "t", "runs": [
        {"name": f"b{b}", "scenario": {**doc, "training": {**doc["training"], "micro_batch_size": b,
                                                            "global_batch_size": b}},
         "measured": {"step_time_s": 0.01 * b}} for b in (1, 2, 4)]}))
    assert main(["calibrate", "--runs", str(runs), "--out", str(cal), "--format", "json"]) == 0
    doc["hardware"] = {**doc["hardware"], "calibration": str(cal)}
    scn = tmp_path / "s.yaml"
    scn.write_text(yaml.safe_dump(doc))
    assert main(["simulate", str(scn), "--format", "json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["evidence"] is None


def test_evidence_range_weights_each_source_equally_and_scales_each_schedule(tmp_path):
    """The range every uncalibrated prediction quotes is the 10th-90th percentile of measured / predicted over
    the preset's published runs, a source of many rows weighing no more than one of few; the line prices each
    schedule's step with it, and says nothing once a calibration or custom hardware takes the preset's place."""
    from trsim.validate.suite import evidence, weighted_quantiles
    x = np.random.default_rng(1).normal(size=57)
    assert weighted_quantiles(x, np.ones_like(x), (0.1, 0.5, 0.9)) == pytest.approx(
        np.quantile(x, [0.1, 0.5, 0.9], method="hazen"), rel=1e-12)
    # 99 runs measured 10% slower than predicted (error -9.09%), 1 run exactly right: pooled by run even the
    # 10th percentile would be 1.10x; by source the one run holds half the weight
    many = {"source": "many", "hardware": "h100-sxm", "runs": [{"error_pct": 100 / 1.1 - 100}] * 99}
    one = {"source": "one", "hardware": "h100-sxm", "runs": [{"error_pct": 0.0}]}
    q = evidence([many, one])["presets"]["h100-sxm"]["measured_over_predicted"]
    assert q["p10"] == pytest.approx(1.0, abs=1e-3) and q["p90"] == pytest.approx(1.1, abs=1e-3)
    assert 1.0 < q["p50"] <= 1.1
    assert evidence([many])["presets"]["h100-sxm"]["measured_over_predicted"]["p10"] == pytest.approx(1.1, abs=1e-3)
    import yaml
    from trsim.cli import evidence_band_line
    from trsim.simulator import simulate as run
    res = run(scenario_from_dict(yaml.safe_load(open("scenarios/paper_vila_u_3b.yaml"))))
    band = res.evidence["measured_over_predicted"]
    line = evidence_band_line(res)
    for s in res.schedules:
        assert f"{s.name} {s.step.time_s * band['p10'] * 1e3:,.1f} to {s.step.time_s * band['p90'] * 1e3:,.1f} ms" in line
    assert f"{band['p10']:.2f}x to {band['p90']:.2f}x" in line
    for ev in ({**res.evidence, "applies": False, "why": "x"}, {**res.evidence, "runs": 0}):
        res.evidence = ev
        assert evidence_band_line(res) is None


def test_a_missing_evidence_file_says_so_rather_than_claiming_no_runs(monkeypatch):
    import importlib
    from trsim.cli import evidence_line
    S = importlib.import_module("trsim.simulator.simulate")
    monkeypatch.setattr(S, "_evidence_doc", lambda: None)
    ev = S.published_evidence("h100-sxm")
    assert not ev["applies"] and "missing" in evidence_line(ev) and "no published training run" not in evidence_line(ev)


def test_published_runs_files_are_what_the_transcription_writes(tmp_path, monkeypatch):
    """validate/published/*.yaml are reproducible from the cited public figures."""
    import importlib.util
    import pathlib
    from trsim.validate import derive_presets as D
    if not (D.data_dir() / "vtrain_megatron_deepspeed_a100_single_node.csv").exists():
        pytest.skip("published figures not present")
    src = pathlib.Path(__file__).resolve().parents[1] / "validate" / "published" / "transcribe.py"
    spec = importlib.util.spec_from_file_location("transcribe", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "HERE", tmp_path)
    assert mod.main([]) == 0
    for f in tmp_path.glob("*.yaml"):
        assert f.read_text() == (src.parent / f.name).read_text(), f.name


@pytest.mark.parametrize("name, rows", [("mpt_h100", 70), ("mpt_a100", 139)])
def test_llmfoundry_runs_files_load_and_price_every_row(name, rows):
    """validate/published/llmfoundry_mpt_*.yaml: every row of the cited tables is a run trsim prices (none unsupported), each
    a pure data-parallel FSDP layout whose micro-batches fill the global batch, with a finite prediction."""
    import math
    import pathlib
    from trsim.validate.runs import load_runs
    path = pathlib.Path(__file__).resolve().parents[1] / "validate" / "published" / f"llmfoundry_{name}.yaml"
    runs, unsupported, _ = load_runs(path)
    assert len(runs) == rows and not unsupported
    assert len({r.name for r in runs}) == rows
    for r in runs:
        t, tags = r.scenario.training, r.tags
        assert r.scenario.num_gpus == tags["gpus"] and t.zero_stage in (2, 3)
        assert tags["gpus"] * tags["mbs"] * tags["ga"] == t.global_batch_size
        assert (t.recompute == "full") == (tags["ac"] == "True")
        assert math.isfinite(r.predicted_time()) and r.predicted_time() > 0


def test_calibrate_from_runs_recovers_the_host_dispatch_cost(tiny_doc, tmp_path):
    """Dispatch-bound runs (a tiny model on an H100: the GPU waits for the host) determine host_layer_s:
    synthetic runs made with 3 ms per layer give it back, and the fit predicts unseen depths."""
    import yaml
    from trsim.cli import main
    from trsim.validate.runs import load_runs
    doc = dict(tiny_doc, hardware=dict(preset="h100-sxm", num_gpus=1))
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(runs_doc(doc, {"host_layer_s": 3e-3})))
    cal = tmp_path / "cal.json"
    assert main(["calibrate", "--runs", str(path), "--out", str(cal), "--format", "json"]) == 0
    out = json.loads(cal.read_text())
    assert "host_layer_s" in out["fit"]["fitted"]
    assert out["parameters"]["host_layer_s"]["value"] == pytest.approx(3e-3, rel=0.02)
    fitted = {k: v["value"] for k, v in out["parameters"].items()}
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(runs_doc(doc, {"host_layer_s": 3e-3}, configs=((6, 3, 30), (3, 6, 15)))))
    for r in load_runs(new)[0]:
        assert r.predicted_time(r.hardware_with(fitted)) == pytest.approx(r.measured_time, rel=0.02)


def test_calibrate_from_runs_recovers_the_collective_efficiency(tmp_path):
    """Runs whose data-parallel traffic varies (1 to 64 GPUs, in and across nodes) made with collectives at
    0.4 of the link bandwidth give 0.4 back, and the fit predicts an unseen layout."""
    import yaml
    from trsim.cli import main
    from trsim.validate.runs import load_runs

    def doc(gpus_and_batches):
        runs = []
        for n, mb in gpus_and_batches:
            scn = dict(name=f"g{n}-b{mb}", model=dict(preset="llama-2-7b", num_layers=4),
                       hardware=dict(preset="h100-sxm", num_gpus=n),
                       training=dict(micro_batch_size=mb, global_batch_size=mb * n, zero_stage=0, stack="megatron"),
                       tasks=dict(t=dict(samples=1, segments=[dict(name="x", kind="text", tokens=2048, target=True)])))
            runs.append({"name": scn["name"], "scenario": scn, "measured": {"step_time_s": 1.0}})
        return {"source": "synthetic", "runs": runs}

    def measured(d, path):
        path.write_text(yaml.safe_dump(d))
        for r, raw in zip(load_runs(path)[0], d["runs"]):
            raw["measured"]["step_time_s"] = r.predicted_time(r.hardware_with({"collective_efficiency": 0.4,
                                                                                 "matmul_efficiency": 0.7}))
        path.write_text(yaml.safe_dump(d))
    path = tmp_path / "runs.yaml"
    measured(doc([(1, 1), (1, 4), (2, 1), (8, 1), (8, 2), (16, 1), (64, 1), (64, 4)]), path)
    cal = tmp_path / "cal.json"
    assert main(["calibrate", "--runs", str(path), "--out", str(cal), "--format", "json"]) == 0
    out = json.loads(cal.read_text())
    assert "collective_efficiency" in out["fit"]["fitted"]
    assert out["parameters"]["collective_efficiency"]["value"] == pytest.approx(0.4, rel=0.02)
    fitted = {k: v["value"] for k, v in out["parameters"].items()}
    new = tmp_path / "new.yaml"
    measured(doc([(32, 2), (4, 3)]), new)
    for r in load_runs(new)[0]:
        assert r.predicted_time(r.hardware_with(fitted)) == pytest.approx(r.measured_time, rel=0.02)


def _gpu_runs_doc(tiny_doc, truth: dict, precisions, kernels=(None,)) -> dict:
    """A runs file of a small LLaMA-shaped model on an H100, its step times written by a hardware profile
    with ``truth``; run i's scenario names attention kernel ``kernels[i % len(kernels)]`` (None: the
    preset's)."""
    from trsim.validate.runs import load_runs
    import pathlib, tempfile, yaml
    runs = []
    for i, (prec, L, B) in enumerate((p, L, B) for p in precisions for L, B in ((2, 2), (4, 4), (8, 1), (4, 8))):
        scn = copy.deepcopy({k: v for k, v in tiny_doc.items() if k != "schedules"})
        scn["name"] = f"{prec}-L{L}-B{B}"
        scn["model"].update(num_layers=L, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                            intermediate_size=14336, vocab_size=32000)  # device-bound, not host-bound
        scn["hardware"] = {"preset": "h100-sxm", "num_gpus": 1}
        if kernels[i % len(kernels)]:
            scn["hardware"]["attention_kernel"] = kernels[i % len(kernels)]
        scn["training"] = {**scn["training"], "micro_batch_size": B, "global_batch_size": B, "precision": prec,
                           "activation_bytes": 2}
        scn["tasks"]["u"]["segments"][1]["tokens"] = 1024 * (i % 3 + 1)
        runs.append({"name": scn["name"], "scenario": scn, "measured": {"step_time_s": 1.0}})
    doc = {"source": "synthetic", "runs": runs}
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "r.yaml"
        path.write_text(yaml.safe_dump(doc))
        loaded, _, _ = load_runs(path)
    for r, raw in zip(loaded, runs):
        raw["measured"]["step_time_s"] = r.predicted_time(r.hardware_with(truth, None))
    return doc


def _gpu_runs(tiny_doc, truth: dict, precisions, kernels=(None,)):
    """The runs of ``_gpu_runs_doc``, loaded."""
    from trsim.validate.runs import load_runs
    import pathlib, tempfile, yaml
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "r.yaml"
        path.write_text(yaml.safe_dump(_gpu_runs_doc(tiny_doc, truth, precisions, kernels)))
        return load_runs(path)[0]


def test_fp8_runs_calibrate_the_fp8_gemm_ceiling_and_bf16_runs_leave_it_fixed(tiny_doc):
    """The fp8 GEMM ceiling is a parameter of its own: fp8 step times determine it (beside the bf16 one,
    which the LM head and the bf16 runs set); where no run is fp8 it is fixed and says why."""
    hw0 = F.base_hardware("h100-sxm")
    assert "matmul_efficiency_fp8" in F.params_for(hw0)
    truth = {"matmul_efficiency": 0.6, "matmul_efficiency_fp8": 0.45}
    others = {k: "held for this test" for k in F.params_for(hw0) if k not in truth}
    res = F.fit(_gpu_runs(tiny_doc, truth, ("bf16", "fp8")), hw0, prior=False, fixed=others)
    assert not set(truth) & set(res.fixed)
    for k, v in truth.items():
        assert res.values[k] == pytest.approx(v, rel=1e-3), k
    bf16 = F.fit(_gpu_runs(tiny_doc, truth, ("bf16",)), hw0, prior=False, fixed=others)
    assert "no measurement depends on it" in bf16.fixed["matmul_efficiency_fp8"]
    assert bf16.values["matmul_efficiency_fp8"] == hw0.matmul_efficiency_fp8
    assert bf16.values["matmul_efficiency"] == pytest.approx(0.6, rel=1e-3)
    # a GPU with fp8 tensor cores but no fp8 ceiling of its own starts from the bf16 one, and still fits its own
    bare = hw0.model_copy(update={"matmul_efficiency_fp8": None})
    assert "matmul_efficiency_fp8" in F.params_for(bare)
    res = F.fit(_gpu_runs(tiny_doc, truth, ("bf16", "fp8")), bare, prior=False, fixed=others)
    assert res.values["matmul_efficiency_fp8"] == pytest.approx(0.45, rel=1e-3)
    # a GPU without fp8 has no such parameter: naming it fixed is not an error
    a100 = F.base_hardware("a100-sxm-80g")
    assert "matmul_efficiency_fp8" not in F.params_for(a100)
    assert "matmul_efficiency_fp8" not in F._Problem([], a100, ["matmul_efficiency"], {}, True).x0


def test_a_fit_to_runs_holds_fixed_parameters_at_the_runs_own_kernel_not_the_presets_default(tiny_doc):
    """Runs whose scenarios name an attention kernel are priced with that kernel's curve. A fit to them
    starts from, pulls toward and holds fixed parameters at those values, so applying its result keeps the
    kernel's curve (it used to swap in the preset's default kernel's: every published source names a
    kernel, and a fixed attention parameter silently became FlashAttention-2's)."""
    from trsim.simulator.presets import ATTENTION_KERNELS
    hw0 = F.base_hardware("h100-sxm")
    cudnn = ATTENTION_KERNELS["H100-SXM5-80GB"]["cudnn"]
    assert cudnn["attention_efficiency"] != hw0.attention_efficiency
    truth = {"matmul_efficiency": 0.6}
    runs = _gpu_runs(tiny_doc, truth, ("bf16",), kernels=("cudnn",))
    assert all(r.hardware.attention_kernel == "cudnn" for r in runs)
    for subset in (runs[:1], runs):
        res = F.fit(subset, hw0)
        assert "attention_half_keys" in res.fixed   # step times at two lengths cannot place the knee
        for k in ("attention_efficiency", "attention_half_keys"):
            if k in res.fixed:
                assert res.values[k] == cudnn[k], k
        untouched = {k: res.values[k] for k in res.fixed}
        for r in runs:
            assert r.predicted_time(r.hardware_with(untouched)) == r.predicted_time()
        assert not res.varies and res.hardware.attention_kernel == "cudnn"
    assert res.values["matmul_efficiency"] == pytest.approx(0.6, rel=0.02)


def test_a_fit_to_runs_of_two_kernels_leaves_each_run_its_own_attention_curve(tiny_doc, tmp_path):
    """One fitted value cannot stand for two kernels: parameters that differ between the runs are named,
    left out of the result and of the calibration file, and each run keeps its own."""
    import yaml
    from trsim.cli import main
    hw0 = F.base_hardware("h100-sxm")
    truth = {"matmul_efficiency": 0.6}
    runs = _gpu_runs(tiny_doc, truth, ("bf16",), kernels=("cudnn", "flash2"))
    assert {r.hardware.attention_kernel for r in runs} == {"cudnn", "flash2"}
    res = F.fit(runs, hw0)
    assert {"attention_efficiency", "attention_half_keys"} <= set(res.varies)
    assert "attention kernels cudnn, flash2" in res.varies["attention_efficiency"]
    assert not set(res.varies) & set(res.values) and not set(res.varies) & set(res.fixed)
    assert res.values["matmul_efficiency"] == pytest.approx(0.6, rel=0.02)
    for r in runs:
        hw = r.hardware_with(res.values)
        assert hw.attention_efficiency == r.hardware.attention_efficiency
        assert r.predicted_time(hw) == pytest.approx(r.measured_time, rel=0.02)
    # the same through the CLI: the calibration file leaves them out and says why, and a scenario that
    # applies it keeps its own kernel's curve
    path, cal = tmp_path / "runs.yaml", tmp_path / "cal.json"
    path.write_text(yaml.safe_dump(_gpu_runs_doc(tiny_doc, truth, ("bf16",), kernels=("cudnn", "flash2"))))
    assert main(["calibrate", "--runs", str(path), "--out", str(cal), "--held-out-folds", "0", "--format", "json"]) == 0
    doc = json.loads(cal.read_text())
    assert "attention_efficiency" not in doc["parameters"] and "matmul_efficiency" in doc["parameters"]
    assert any(n.startswith("attention_efficiency not in this calibration: differs between the runs")
               for n in doc["fit"]["notes"])
    from trsim.simulator import scenario_from_dict
    scn = copy.deepcopy({k: v for k, v in tiny_doc.items() if k != "schedules"})
    scn["hardware"] = {"preset": "h100-sxm", "num_gpus": 1, "attention_kernel": "cudnn", "calibration": str(cal)}
    from trsim.simulator.presets import ATTENTION_KERNELS
    hw = scenario_from_dict(scn, base_dir=tmp_path).hardware
    assert hw.attention_efficiency == ATTENTION_KERNELS["H100-SXM5-80GB"]["cudnn"]["attention_efficiency"]
    assert hw.matmul_efficiency == pytest.approx(doc["parameters"]["matmul_efficiency"]["value"])


def test_one_dispatch_bound_run_moves_the_host_cost_not_a_parameter_it_barely_sees():
    """A single step time determines one parameter. It must be one that step depends on strongly: a
    dispatch-bound vTrain step (host work per layer) once left the memory-bandwidth efficiency, which
    touches that step only through the optimizer's 0.5%, as the last free parameter, and it went to 0.16."""
    from trsim.validate.runs import load_runs
    from trsim.validate.suite import PUBLISHED
    runs, _, _ = load_runs(PUBLISHED / "vtrain_a100.yaml")
    run = [r for r in runs if r.name == "vtrain-2g-h1024-L12-tp1-pp1-dp2-mb1-gb32"][0]
    hw0 = F.base_hardware("a100-sxm-80g")
    res = F.fit([run], hw0)
    free = [k for k in res.values if k not in res.fixed]
    assert free == ["host_layer_s"]
    # fixed as a weak partner in an unresolvable direction (which partner it names depends on the order
    # of fixing: the host cost, or the collective efficiency of its equally weak data-parallel traffic)
    assert "not separable from" in res.fixed["bandwidth_efficiency"]
    assert res.values["bandwidth_efficiency"] == hw0.bandwidth_efficiency
    assert run.predicted_time(run.hardware_with(res.values)) == pytest.approx(run.measured_time, rel=1e-3)


def test_every_fitted_parameter_has_a_place_in_the_order_of_fixing():
    assert set(F.FIX_ORDER) == set(F.PARAMS) and len(F.FIX_ORDER) == len(F.PARAMS)


def test_memory_bound_floor_recovers_a_per_layer_cost_that_a_scale_cannot():
    """Measured memory-bound time = 1.4 x price + 200 us a layer (the shape the H200 campaign shows): the
    two-term fit gives both back exactly; a scale alone misses the small micro-batches."""
    from trsim.validate.commands import memory_bound_floor
    price = np.array([2.6e-3, 5.2e-3, 10.5e-3, 15.5e-3, 3.0e-3, 12e-3])
    layers = np.array([12, 12, 12, 12, 28, 28])
    measured = 1.4 * price + 200e-6 * layers
    f = memory_bound_floor(list(measured), list(price), list(layers))
    assert f["scale"] == pytest.approx(1.4) and f["floor_per_layer_s"] == pytest.approx(200e-6)
    assert f["median_abs_pct"] < 1e-6 and f["scale_only_max_abs_pct"] > 20 and f["note"] == ""
    one_depth = memory_bound_floor(list(measured[:4]), list(price[:4]), list(layers[:4]))
    assert "one depth" in one_depth["note"]
    assert memory_bound_floor([None, 1.0], [1.0, 1.0], [1, 1]) is None


def test_held_out_record_scores_only_finite_predictions_and_says_what_it_left_out(monkeypatch):
    """A fold that could not be fitted, or priced a measurement as NaN, is left out of the scores and named;
    the record stays a valid (finite) part of a calibration file."""
    from types import SimpleNamespace
    from trsim.simulator.calibration import HeldOut
    from trsim.validate import crossval
    from trsim.validate.commands import held_out_text
    items = [SimpleNamespace(signature=str(i), measured_time=1.0) for i in range(4)]
    monkeypatch.setattr(crossval, "held_out", lambda items, hw0, scheme: {
        0: {"predicted_s": 1.1, "fold": 0}, 1: {"predicted_s": float("nan"), "fold": 1},
        2: {"predicted_s": None, "fold": 2}, 3: {"predicted_s": 0.8, "fold": 3}})
    rec = F.held_out_record(items, None, 5)
    assert rec["items"] == 2 and rec["median_abs_pct"] == pytest.approx(15) and rec["max_abs_pct"] == pytest.approx(20)
    assert rec["note"].startswith("2 measurement(s)")
    HeldOut.model_validate(rec)
    assert rec["note"] in held_out_text(rec)
    monkeypatch.setattr(crossval, "held_out", lambda items, hw0, scheme: {i: {"predicted_s": None, "fold": i}
                                                                          for i in range(4)})
    none = F.held_out_record(items, None, 5)
    assert none["items"] == 0 and "none scored" in held_out_text(none) and "4 measurement(s)" in held_out_text(none)


def test_transfer_predicts_each_source_from_a_fit_on_the_others_only(tmp_path):
    """Leave one source out: a source's transfer predictions are exactly those of a calibration fitted to the
    other sources of its preset, never to its own runs; a preset with one source has nothing to transfer."""
    import shutil

    from trsim.validate.fit import base_hardware
    from trsim.validate.runs import load_runs
    from trsim.validate.suite import PUBLISHED, transfer
    for stem in ("flashattention_a100", "korthikanti_a100", "simumax_b200"):
        shutil.copy(PUBLISHED / f"{stem}.yaml", tmp_path / f"{stem}.yaml")
    moved = transfer(tmp_path)
    assert set(moved) == {"flashattention_a100", "korthikanti_a100"}  # B200 has a single source
    fa, _, _ = load_runs(tmp_path / "flashattention_a100.yaml")
    ko, _, _ = load_runs(tmp_path / "korthikanti_a100.yaml")
    hw0 = base_hardware("a100-sxm-80g")
    for stem, train, test in (("flashattention_a100", ko, fa), ("korthikanti_a100", fa, ko)):
        m = moved[stem]
        assert m["trained_on"] == [s for s in ("flashattention_a100", "korthikanti_a100") if s != stem]
        res = F.fit(train, hw0)
        want = {r.name: 100 * (r.predicted_time(r.hardware_with(res.values, hw0)) / r.measured["step_time_s"] - 1)
                for r in test}
        assert m["predicted"] == m["rows"] == len(test)
        assert m["errors_pct"] == pytest.approx(want, rel=1e-9)
        assert m["max_abs_pct"] == pytest.approx(max(map(abs, want.values())))
    # the printed tables: the presets' signed median beside the absolute ones, each transfer row
    from rich.console import Console

    from trsim.validate.suite import print_suite, print_transfer, run_suite
    results = run_suite(tmp_path, folds=None)
    console = Console(record=True, width=250)
    print_suite(results, console)
    print_transfer(results, moved, console)
    text = console.export_text()
    fa = [r for r in results if r["source"] == "flashattention_a100"][0]
    signed = float(np.median([x["error_pct"] for x in fa["runs"]]))
    assert f"{signed:+.1f}%" in text
    for stem, m in moved.items():
        assert stem in text and f"{m['median_abs_pct']:.1f}%" in text
    console = Console(record=True, width=250)
    print_transfer(results, {}, console)
    assert "nothing to move" in console.export_text()


def test_few_runs_fits_each_random_set_alone_and_scores_only_the_runs_outside_it(tmp_path, capsys):
    """--few-runs: every training set is a deterministic draw of N distinct configurations; its fit sees
    only those runs and is scored on every other run of the source (recomputed here set by set)."""
    import shutil

    from trsim.validate.crossval import _units
    from trsim.validate.fit import base_hardware
    from trsim.validate.runs import load_runs
    from trsim.validate.suite import PUBLISHED, _draw, few_runs, print_few_runs
    shutil.copy(PUBLISHED / "flashattention_a100.yaml", tmp_path / "flashattention_a100.yaml")
    out = few_runs(tmp_path, sizes=(1, 2, 5), draws=2)["flashattention_a100"]
    runs, _, _ = load_runs(tmp_path / "flashattention_a100.yaml")
    assert out["rows"] == out["configurations"] == len(runs) == 5
    assert set(out["sizes"]) == {"1", "2"}            # five configurations leave none to score at N = 5
    presets = [abs(100 * (r.predicted_time() / r.measured_time - 1)) for r in runs]
    assert out["presets"]["median_abs_pct"] == pytest.approx(float(np.median(presets)))
    hw0 = base_hardware("a100-sxm-80g")
    unit_of = _units([r.signature for r in runs])
    for n in (1, 2):
        pooled, worse = [], 0
        for d in range(2):
            units = _draw("flashattention_a100", n, d, 5)
            assert units == _draw("flashattention_a100", n, d, 5) and len(set(units)) == n
            train = [r for r, u in zip(runs, unit_of) if u in units]
            res = F.fit(train, hw0)
            e = [abs(100 * (r.predicted_time(r.hardware_with(res.values)) / r.measured_time - 1))
                 for r, u in zip(runs, unit_of) if u not in units]
            pooled += e
            worse += np.median(e) > np.median([p for p, u in zip(presets, unit_of) if u not in units])
        got = out["sizes"][str(n)]
        assert got["scored"] == len(pooled) == 2 * (5 - n) and got["refused"] == 0
        assert got["median_abs_pct"] == pytest.approx(float(np.median(pooled)), rel=1e-9)
        assert got["p90_abs_pct"] == pytest.approx(float(np.percentile(pooled, 90)), rel=1e-9)
        assert got["worse_than_presets"] == worse / 2
    from rich.console import Console
    console = Console(record=True, width=250)
    print_few_runs({"flashattention_a100": out}, console)
    assert f"{out['sizes']['1']['median_abs_pct']:.1f} / {out['sizes']['1']['p90_abs_pct']:.1f}" in console.export_text()
    # the flag needs the suite, and a size of at least one run
    from trsim.cli import main
    assert main(["validate", "--few-runs", "1"]) == 2
    assert "expected --few-runs with --published" in capsys.readouterr().err
    from trsim.validate.suite import main as suite_main
    with pytest.raises(SystemExit) as exc:
        suite_main(["--few-runs", "0"])
    assert exc.value.code == 2 and "expected a number of runs >= 1" in capsys.readouterr().err


def test_trsim_validate_published_takes_folds_and_sources(capsys):
    """trsim validate --published --folds 0 --sources NAME: the presets-only table of one source, in seconds;
    an unknown source, or --folds / --sources without --published, is refused in one line."""
    import json as _json

    from trsim.cli import main
    from trsim.validate.suite import PUBLISHED
    runs = str(PUBLISHED / "korthikanti_a100.yaml")
    assert main(["validate", "--published", "--folds", "0", "--sources", "korthikanti_a100", "--format", "json"]) == 0
    doc = _json.loads(capsys.readouterr().out)
    assert [r["source"] for r in doc["sources"]] == ["korthikanti_a100"]
    assert doc["sources"][0]["summary"]["step_time_held_out"]["median_abs_pct"] is None  # no k-fold asked for
    for argv, needle in ((["validate", "--published", "--folds", "0", "--sources", "nosuch"], "sources"),
                         (["validate", "--runs", runs, "--folds", "0"], "--folds with --published"),
                         (["validate", "--runs", runs, "--sources", "a"], "--sources with --published")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("trsim: error: ") and needle in err[0], err
    with pytest.raises(SystemExit):  # argparse: a 1-fold or negative k is not a k-fold
        main(["validate", "--published", "--folds", "1"])


def test_transfer_needs_the_published_suite(capsys):
    from trsim.cli import main
    from trsim.validate.suite import PUBLISHED
    assert main(["validate", "--runs", str(PUBLISHED / "korthikanti_a100.yaml"), "--transfer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trsim: error: ") and "--transfer with --published" in err[0]


def test_a_parameter_with_too_weak_an_effect_is_fixed_not_taken_for_a_direction_of_its_own():
    """Three columns, the third a combination of the first two at a millionth of their size: column
    normalisation alone would call the set degenerate and fix whichever comes first in FIX_ORDER; the weak
    one is fixed instead, by name, and a column at the threshold's edge is not."""
    from trsim.validate.fit import DATA_SIGMA, WEAK_EFFECT, _unidentified
    depth = np.array([2.0, 4.0, 8.0, 4.0])
    J = np.stack([0.3 * depth / depth.max(), np.full(4, 0.2), 1e-6 * (depth + 3)], axis=1)
    names = ["host_layer_s", "step_overhead_s", "bandwidth_efficiency"]
    pick, why, _ = _unidentified(J, names)
    assert pick == "bandwidth_efficiency" and why.startswith("too weak an effect")
    J[:, 2] = 1.01 * WEAK_EFFECT * DATA_SIGMA * (depth + 3) / (depth + 3).max()
    pick, why, _ = _unidentified(J, names)
    assert not why.startswith("too weak")  # strong enough to count: now the degenerate set is named


def test_published_suite_plot_and_a_bad_plot_path(tmp_path, capsys):
    """--plot draws every priced row (presets, and held out where computed); a path matplotlib cannot write
    is refused before any work, in one line."""
    pytest.importorskip("matplotlib")
    from trsim.validate.suite import main as suite_main
    from trsim.validate.suite import plot_suite, run_suite
    results = run_suite(folds=None, sources=["korthikanti_a100", "flashattention_a100"])
    png = tmp_path / "suite.png"
    plot_suite(results, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "suite.txt"
    assert suite_main(["--folds", "0", "--sources", "korthikanti_a100", "--plot", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trsim: error: ") and "--plot" in err[0] and not bad.exists()
    with pytest.raises(ValueError):
        plot_suite([], tmp_path / "empty.png")
    # an unknown source and an unwritable evidence path are refused before any work, in one line
    for argv, needle in ((["--folds", "0", "--sources", "nosuch", "--plot", str(png)], "sources"),
                         (["--folds", "0", "--sources", "korthikanti_a100", "--evidence", str(bad)], "--evidence")):
        assert suite_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("trsim: error: ") and needle in err[0], err
