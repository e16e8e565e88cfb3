"""profile / calibrate / validate with hostile inputs: results files that pass the schema but hold bad
contents, bad flags, bad output paths. Each is exit code 2 and one line naming the file and field."""
import copy
import json
from pathlib import Path

import pytest

from trsim.cli import main

DATA = Path(__file__).parent / "data"
RESULTS = json.loads((DATA / "results_tiny_cpu.json").read_text())   # trsim profile scenarios/tiny_cpu.yaml ...


def _case(d):
    return d["cases"][0]


BAD_CONTENTS = [
    (lambda d: _case(d).update(memory=None), "cases.0", "memory measurements for a case with status ok"),
    (lambda d: _case(d).update(time=None), "cases.0", "time measurements"),
    (lambda d: _case(d)["plan"].pop("present"), "cases.0.plan.present", "required"),
    (lambda d: _case(d)["plan"]["mode"][0].append(0), "cases.0.plan", "one value per segment"),
    (lambda d: _case(d)["plan"]["mode"].pop(), "cases.0.plan", "one row per layer"),
    (lambda d: _case(d)["plan"]["present"][0].__setitem__(0, 10**6), "cases.0.plan", "at most each segment"),
    (lambda d: _case(d)["time"]["forward_backward"].update(median_s=0.0), "cases.0.time.forward_backward.median_s",
     "> 0"),
    (lambda d: _case(d)["time"]["forward_backward"].update(median_s=-1.0), "cases.0.time.forward_backward.median_s",
     "> 0"),
    (lambda d: _case(d)["time"]["optimizer"].update(min_s=float("nan")), "<file>", "finite numbers"),
    (lambda d: _case(d)["time"]["forward_backward"].update(samples=True), "cases.0.time.forward_backward.samples",
     "got true"),
    (lambda d: _case(d).update(layer_weights=[1.0]), "cases.0", "one layer weight per profiled layer"),
    (lambda d: _case(d)["memory"].update(activation_saved_bytes="big"), "cases.0.memory.activation_saved_bytes",
     "whole number"),
    (lambda d: d["model"].update(num_layers=0), "model.num_layers", ">= 1"),
    (lambda d: d.update(schema="trsim.profile/0"), "schema", "trsim.profile/1"),
    (lambda d: d.update(cases="none"), "cases", "a list"),
    (lambda d: _case(d).update(status="fine"), "cases.0.status", "one of ok, oom or error"),
    # integers the simulator's arithmetic cannot hold, or the scenario's bounds refuse (the fuzzer found
    # tracebacks from int64 conversion and from TrainingSpec's own bound)
    (lambda d: _case(d)["plan"]["segments"][0].update(tokens=2**64), "cases.0.plan.segments.0.tokens",
     "<= 1,000,000,000"),
    (lambda d: _case(d)["plan"]["rank"][0].__setitem__(0, 2**64), "cases.0.plan.rank.0.0", "<= 4,611,686"),
    (lambda d: _case(d)["plan"]["rank"][0].__setitem__(0, 10**6), "cases.0.plan", "rank[0] at most each segment"),
    (lambda d: _case(d).update(micro_batch=2**20 + 1), "cases.0.micro_batch", "<= 1,048,576"),
]


@pytest.mark.parametrize("command", ["validate", "calibrate"])
@pytest.mark.parametrize("mutate,field,needle", BAD_CONTENTS)
def test_bad_results_contents(tmp_path, capsys, command, mutate, field, needle):
    doc = copy.deepcopy(RESULTS)
    mutate(doc)
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    out = tmp_path / "cal.json"
    args = [command, str(p)] + (["--out", str(out)] if command == "calibrate" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"trsim: error: {p}: {field}: expected"), err
    assert needle in err, err
    assert not out.exists()


def _one_line_error(capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("trsim: error: ") and needle in err, err


def test_a_flops_mismatch_leaves_json_output_strict(tmp_path, capsys):
    """validate --format json with counted FLOPs that differ from the simulator's: exit 1, the report alone on
    stdout (strict JSON), the mismatch on stderr; at the largest micro-batch a results file may hold the
    analytic counts are exact integers, not wrapped int64."""
    doc = copy.deepcopy(RESULTS)
    _case(doc)["flops"]["flop_counter"]["forward"] += 2
    doc["cases"][1]["micro_batch"] = 2**20
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    assert main(["validate", str(path), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-finite {c} in the JSON"))
    assert err.count("FLOPs mismatch") == 2, err  # the edited case and the one at 2**20 (counted at 2)
    from trsim.profiler.schema import parse_results
    from trsim.simulator.costs import analytic_counts
    from trsim.validate.fit import cases_from_results
    c = cases_from_results([(str(path), parse_results(doc))])[1]
    a = analytic_counts(c.plan, c.model, c.micro_batch, c.settings["attention"], c.settings["lm_head"])
    assert c.micro_batch == 2**20 and isinstance(a["forward"], int) and a["forward"] == sum(a["per_layer_forward"]) + a["lm_head_forward"] > 2**40


def test_bad_flags_are_one_line(capsys):
    _one_line_error(capsys, ["profile", "scenarios/tiny_cpu.yaml", "--device", "gpu"], "cpu, cuda or cuda:N")
    _one_line_error(capsys, ["validate", "x.json", "--hardware", "h900"], "expected one of a100-sxm-80g")
    _one_line_error(capsys, ["calibrate", "x.json", "--out", "c.json", "--hardware", "h900"], "expected one of")
    _one_line_error(capsys, ["profile", "scenarios/tiny_cpu.yaml", "--repeats", "0"], "positive whole number")
    _one_line_error(capsys, ["simulate"], "required")


def test_results_path_problems(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "bad.json").write_text('{"schema": "trsim.profile/1", "schema": "x"}')
    for path, needle in ((tmp_path / "d", "directory"), (tmp_path / "none.json", "not found"),
                         (tmp_path / "bad.json", "each key once")):
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and needle in err, err


@pytest.mark.parametrize("args,needle", [
    (["calibrate", str(DATA / "results_tiny_cpu.json"), "--out", "{tmp}/cal.txt"], ".json"),
    (["calibrate", str(DATA / "results_tiny_cpu.json"), "--out", "{tmp}"], "directory"),
    (["calibrate", str(DATA / "results_tiny_cpu.json"), "--out", "{tmp}/afile/cal.json"], "a file in the way"),
    (["validate", str(DATA / "results_tiny_cpu.json"), "--plot", "{tmp}/p.xyz"], ".png"),
    (["profile", "scenarios/tiny_cpu.yaml", "--out", "{tmp}/r.csv"], ".json"),
    (["simulate", "scenarios/tiny_cpu.yaml", "--out", "{tmp}/afile/x.json"], "a file in the way"),
    (["simulate", "scenarios/paper_table2_hmgen.yaml", "--plot", "{tmp}/p.docx"], ".png"),
])
def test_output_paths_checked_before_the_work(tmp_path, capsys, args, needle):
    (tmp_path / "afile").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]   # nothing written, nothing half-written


def test_calibration_for_other_hardware_refused_by_validate(tmp_path, capsys):
    from trsim.simulator.calibration import calibration_document, write_calibration
    cal = tmp_path / "h100.json"
    write_calibration(cal, calibration_document(
        {"matmul_efficiency": 0.6}, hardware_preset="h100-sxm", environment={"device": "cuda", "gpu": "NVIDIA H100",
                                                                              "torch": "2.5"},
        results_files=[], cases=10, fit={"method": "m", "measurements": 10, "fitted": ["matmul_efficiency"]}))
    res = str(DATA / "results_tiny_cpu.json")
    assert main(["validate", res, "--calibration", str(cal)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{cal}: hardware_preset: expected a calibration for cpu" in err and "NVIDIA H100" in err
    doc = json.loads(cal.read_text())
    doc["parameters"]["matmul_efficiency"]["value"] = 50.0   # > 20: out of range even against a nominal peak
    cal.write_text(json.dumps(doc))
    assert main(["validate", res, "--calibration", str(cal), "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{cal}: parameters: expected" in err and "matmul_efficiency" in err
