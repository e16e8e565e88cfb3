"""The chunked GPU campaign, run as --dry-run on the CPU: chunking, resume after a kill, packing under the
lent machine's file limits, non-zero exit on any failure; and `trsim profile --resume`."""
import json
import re
import tarfile

import pytest
import torch

import trsim.profiler.run as run
from trsim.profiler import campaign
from trsim.profiler.schema import parse_results

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def call(tmp_path, *extra, out="out1"):
    return campaign.main(["--dry-run", "--results", str(tmp_path / "res"), "--pack-to", str(tmp_path / out), *extra])


def finished(tmp_path) -> dict:
    got = {}
    for f in (tmp_path / "res").glob("*.json"):
        if f.name != "campaign.json":
            doc = json.loads(f.read_text())
            parse_results(doc)  # every partial file is a valid results file
            got.update({(f.stem, c["schedule"], c["task"]): c for c in doc["cases"]})
    return got


def test_grid_has_a_distinct_plan_per_case_and_hmgen_3_differs_from_5():
    from trsim.simulator import scenario_from_dict
    from trsim.simulator.plan import compile_schedule
    for dry in (True, False):
        for p in campaign.grid(dry_run=dry):
            scn = scenario_from_dict(campaign.scenario_doc(p, dry))
            sigs = [compile_schedule(scn, s, t).signature() for s, t in p.cases]
            assert len(set(sigs)) == len(sigs), p.name
    assert ("hmgen-3", "generation") in campaign.grid()[0].cases and ("hmgen-5", "generation") in campaign.grid()[0].cases


def test_chunks_resume_after_a_kill_and_pack_within_limits(tmp_path, monkeypatch):
    # call 1: a chunk of three cases
    assert call(tmp_path, "--max-cases", "3") == 0
    first = finished(tmp_path)
    assert len(first) == 3 and all(c["status"] == "ok" and c["flops_match"] for c in first.values())
    assert all(c["plan_signature"] and c["time"]["classes_stats"]["matmul"]["samples"] == 2 for c in first.values())
    out = sorted(p.name for p in (tmp_path / "out1").iterdir())
    assert out == sorted(campaign.PACK_FILES)
    summary = json.loads((tmp_path / "out1" / "campaign-summary.json").read_text())
    assert summary["finished"] == 3 and summary["remaining"] > 0 and not summary["failures"]

    # call 2 is killed in its second case: the first case it finished is kept
    real, n = run.profile_case, {"i": 0}

    def killed(*a, **k):
        n["i"] += 1
        if n["i"] == 2:
            raise KeyboardInterrupt  # the machine is taken back mid-case
        return real(*a, **k)
    monkeypatch.setattr(run, "profile_case", killed)
    with pytest.raises(KeyboardInterrupt):
        call(tmp_path, "--max-cases", "5", out="out2")
    second = finished(tmp_path)
    with tarfile.open(tmp_path / "out2" / "campaign-results.tar.gz") as tar:  # packed before the kill
        packed = {json.load(tar.extractfile(m))["cases"].__len__() for m in tar.getmembers() if m.name.startswith("tiny-")}
    assert packed == {4}
    assert len(second) == 4 and all(second[k] == first[k] for k in first)  # nothing finished is lost or redone
    state = json.loads((tmp_path / "res" / "campaign.json").read_text())
    started = {k: v for k, v in state["cases"].items() if "wall_s" not in v}
    assert len(started) == 1 and list(started.values())[0]["attempts"] == 1

    # call 3 resumes: earlier cases are skipped, the killed case runs again
    monkeypatch.setattr(run, "profile_case", real)
    calls = []
    monkeypatch.setattr(run, "profile_case", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    assert call(tmp_path, "--max-cases", "2", out="out3") == 0
    assert len(calls) == 2 and len(finished(tmp_path)) == 6
    assert not set(calls) & {k[1:] for k in second if k[0] == "tiny-l12-img10-b1"}

    # what came back unpacks to the same results here
    here = tmp_path / "here"
    assert campaign.main(["--unpack", str(tmp_path / "out3" / "campaign-results.tar.gz"), "--results", str(here)]) == 0
    for f in (tmp_path / "res").glob("*.json"):
        assert (here / f.name).read_text() == f.read_text()


def test_whole_grid_then_calibrate_and_validate_run_and_files_fit_the_limits(tmp_path):
    assert call(tmp_path, "--calibrate-min-cases", "14") == 0
    summary = json.loads((tmp_path / "out1" / "campaign-summary.json").read_text())
    assert summary["complete"] and summary["remaining"] == 0 and not summary["failures"]
    assert summary["steps"] == {"calibrate": 0, "validate": 0, "validate-full-depth": 0}
    n_cases = sum(len(p.cases) for p in campaign.grid(dry_run=True))
    assert summary["finished"] == n_cases
    files = list((tmp_path / "out1").iterdir())
    assert len(files) <= 3 and all(f.is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    assert all(f.stat().st_size <= 16 * 2**20 for f in files)
    with tarfile.open(tmp_path / "out1" / "campaign-results.tar.gz") as tar:
        names = tar.getnames()
    assert {"calibration.json", "validation.json", "full-depth-validation.json", "campaign.json"} <= set(names)
    # a call with nothing left to do profiles nothing and packs again
    assert call(tmp_path, out="out2") == 0
    assert json.loads((tmp_path / "out2" / "campaign-summary.json").read_text())["ran_this_call"] == 0


def test_calibrate_and_validate_wait_for_the_whole_grid_and_for_budget(tmp_path, monkeypatch):
    """They need no GPU: on the device they run only once every case is in and the budget holds them."""
    assert call(tmp_path, "--calibrate-min-cases", "2", "--max-cases", "14") == 0
    summary = json.loads((tmp_path / "out1" / "campaign-summary.json").read_text())
    assert summary["remaining"] > 0 and summary["steps"] == {}
    assert "not run on the device" in (tmp_path / "out1" / "campaign.log").read_text()
    monkeypatch.setattr(campaign, "ANALYSIS_S", 1e6)   # the rest of the grid, then too little budget left
    assert call(tmp_path, "--calibrate-min-cases", "2", out="out2") == 0
    summary = json.loads((tmp_path / "out2" / "campaign-summary.json").read_text())
    assert summary["complete"] and summary["steps"] == {}
    assert "calibrate/validate skipped" in (tmp_path / "out2" / "campaign.log").read_text()


def test_budget_stops_before_a_case_would_overrun(tmp_path):
    assert call(tmp_path, "--budget-s", str(campaign.RESERVE_S + campaign.FIRST_CASE_S - 1)) == 0
    summary = json.loads((tmp_path / "out1" / "campaign-summary.json").read_text())
    assert summary["ran_this_call"] == 0 and summary["stopped"].startswith("budget")
    st = campaign.State(tmp_path / "x.json", cases={"a": {"kind": "k", "wall_s": 3.0}, "b": {"kind": "k", "wall_s": 5.0},
                                                   "c": {"kind": "other", "wall_s": 50.0}})
    assert st.estimate("k") == 5.0 and st.estimate("new") == campaign.FIRST_CASE_S


@pytest.mark.parametrize("failure", ["error", "flops", "killed twice"])
def test_any_failure_makes_the_exit_code_non_zero_and_is_listed(tmp_path, monkeypatch, failure):
    real = run.profile_case

    def bad(scn, schedule, task, **k):
        c = real(scn, schedule, task, **k)
        if schedule == "himix":
            if failure == "error":
                c.update(status="error", error="RuntimeError: boom")
            else:
                c["flops_match"] = False
        return c
    if failure == "killed twice":
        (tmp_path / "res").mkdir()
        json.dump({"cases": {"tiny-l12-img10-b1/himix/understanding": {"kind": "tiny-slice", "attempts": 2}},
                   "calls": []}, open(tmp_path / "res" / "campaign.json", "w"))
    else:
        monkeypatch.setattr(run, "profile_case", bad)
    assert call(tmp_path, "--max-cases", "3") == 1
    summary = json.loads((tmp_path / "out1" / "campaign-summary.json").read_text())
    assert len(summary["failures"]) == 1 and "himix/understanding" in summary["failures"][0]
    # a case given up on is a failure, not a case still to run: the grid can complete without it
    assert summary["abandoned"] == (1 if failure == "killed twice" else 0)


def test_profile_resume_keeps_finished_cases_and_saves_each_case(tmp_path, monkeypatch):
    from trsim.cli import main
    out = tmp_path / "r.json"
    args = ["profile", "scenarios/tiny_cpu.yaml", "--repeats", "1", "--warmup", "0", "--no-fvcore", "--out", str(out),
            "--format", "json"]
    real, n = run.profile_case, {"i": 0}

    def dies(*a, **k):
        n["i"] += 1
        if n["i"] == 3:
            raise RuntimeError("late failure outside the case")
        return real(*a, **k)
    monkeypatch.setattr(run, "profile_case", dies)
    with pytest.raises(RuntimeError):
        main(args)
    kept = json.loads(out.read_text())["cases"]
    assert len(kept) == 2  # the two finished cases were saved as they finished
    monkeypatch.setattr(run, "profile_case", real)
    ran = []
    monkeypatch.setattr(run, "profile_case", lambda *a, **k: ran.append(a[1:3]) or real(*a, **k))
    assert main(args + ["--resume"]) == 0
    doc = json.loads(out.read_text())
    assert doc["cases"][:2] == kept and (kept[0]["schedule"], kept[0]["task"]) not in ran
    assert len(doc["cases"]) == len(ran) + 2
    assert main(args[:-2] + ["--repeats", "2", "--resume"]) == 2  # other settings: refused, file untouched
    assert json.loads(out.read_text()) == doc


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert call(tmp_path, "--max-cases", "1") == 0
    f = next(p for p in (tmp_path / "res").glob("tiny-*.json"))
    doc = json.loads(f.read_text())
    doc["environment"]["gpu"] = "NVIDIA H100 80GB HBM3"
    f.write_text(json.dumps(doc))
    capsys.readouterr()
    assert call(tmp_path, out="out2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"trsim: error: {f}: environment.gpu: expected None")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(f, arcname="../outside.json")
    assert campaign.main(["--unpack", str(evil), "--results", str(tmp_path / "here")]) == 2
    assert not (tmp_path / "outside.json").exists()
