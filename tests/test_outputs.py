"""Output for people and scripts: nothing truncated when piped or narrow, sweep rows in CSV, umask
permissions, --detail adds up, OOM rows flagged and never recommended, presets show the efficiencies."""
import csv
import io
import json
import os
import re
import stat
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from trsim.cli import main, print_simulation
from trsim.simulator import scenario_from_dict, simulate


def test_piped_narrow_output_never_truncates(tmp_path):
    env = {**os.environ, "COLUMNS": "40"}
    p = subprocess.run([sys.executable, "-m", "trsim", "simulate", "scenarios/paper_vila_u_3b.yaml", "--detail"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "…" not in p.stdout
    doc = json.loads(subprocess.run([sys.executable, "-m", "trsim", "simulate", "scenarios/paper_vila_u_3b.yaml",
                                     "--format", "json"], capture_output=True, text=True).stdout)
    for s in doc["schedules"]:   # every step time and cost appears whole on the schedule's row
        row = next(line for line in p.stdout.splitlines() if re.match(rf"│ {re.escape(s['name'])}\s+│", line))
        assert f"{s['step']['time_s'] * 1e3:,.1f} ms" in row and f"${s['budget']['cost_usd']:,.0f}" in row


def test_narrow_terminal_folds_instead_of_cutting(tiny):
    buf = io.StringIO()
    console = Console(file=buf, width=40, force_terminal=True, color_system=None)
    print_simulation(simulate(tiny), console, detail=True)
    assert "…" not in buf.getvalue()


def test_csv_has_sweep_rows(tmp_path, capsys):
    assert main(["simulate", "scenarios/paper_table2_hmgen.yaml", "--format", "csv",
                 "--out", str(tmp_path / "o.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    sweep = [r for r in rows if r["sweep_parameter"]]
    assert len(sweep) == 13 and [float(r["sweep_value"]) for r in sweep] == list(range(13))
    assert all(r["step_time_s"] and r["speedup"] for r in sweep)
    assert list(csv.DictReader(open(tmp_path / "o.csv"))) == rows


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        for name in ("o.json", "o.csv"):
            assert main(["simulate", "scenarios/tiny_cpu.yaml", "--format", "json", "--out", str(tmp_path / name)]) == 0
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644
        os.umask(0o077)
        assert main(["simulate", "scenarios/tiny_cpu.yaml", "--format", "json", "--out", str(tmp_path / "p.json")]) == 0
        assert stat.S_IMODE(os.stat(tmp_path / "p.json").st_mode) == 0o600
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary files left


def test_detail_shows_how_the_step_time_adds_up(capsys):
    assert main(["simulate", "scenarios/vila_u_7b_budget.yaml", "--detail"]) == 0
    out = capsys.readouterr().out
    assert "tokens / sample" in out and "fwd FLOPs / sample" in out and "fwd+bwd / µbatch" in out
    assert "activations / µbatch" in out and "how the step time adds up" in out
    assert "exposed communication" in out and "optimizer step" in out
    res = simulate(scenario_from_dict(yaml.safe_load(open("scenarios/vila_u_7b_budget.yaml"))))
    s = res.schedules[0]
    block = out[out.index(f"{s.name}: how the step time adds up"):]
    rows = {}
    for line in block.splitlines()[4:]:
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) != 4:
            break
        rows[cells[0]] = float(cells[2].removesuffix(" ms").replace(",", ""))
    assert set(rows) == {"compute: understanding", "compute: generation", "optimizer step", "exposed communication",
                         "hidden communication's contention", "step"}
    assert rows["hidden communication's contention"] == pytest.approx(
        s.step.time_breakdown_s["communication_contention"] * 1e3, abs=0.01)
    total = s.step.time_s * 1e3
    # the terms listed (compute per task, optimizer, communication exposed and its contention) add up to the step
    assert abs(rows.pop("step") - total) < 0.01 and abs(sum(rows.values()) - total) < 0.03


def test_oom_rows_flagged_and_never_recommended(tmp_path, capsys, tiny_doc):
    tiny_doc["tasks"]["u"]["segments"][1]["tokens"] = 2000
    tiny_doc["schedules"] = {k: tiny_doc["schedules"][k] for k in ("baseline", "pyramid", "hmgen", "drop")}
    res = simulate(scenario_from_dict(tiny_doc))
    by = {s.name: s for s in res.schedules}
    # a memory size where the fastest reduced schedule does not fit but a slower one does
    fast, slow = sorted((by["pyramid"], by["hmgen"]), key=lambda s: -s.speedup)
    assert fast.step.peak_memory_bytes > slow.step.peak_memory_bytes, "precondition: the faster needs more memory"
    limit = (fast.step.peak_memory_bytes + slow.step.peak_memory_bytes) / 2
    tiny_doc["hardware"]["memory_bytes"] = limit
    tiny_doc["sweep"] = {"schedule": "drop", "parameter": "keep", "values": [0.1, 0.5, 1.0]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny_doc))
    assert main(["simulate", str(p)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│ ")}
    assert "(OOM)" in rows[fast.name] and "(OOM)" not in rows[slow.name]
    summary = next(line for line in out.splitlines() if "step speedup predicted" in line)
    assert summary.startswith(f"{slow.name} on ")
    sweep_rows = [line for line in out.splitlines() if re.match(r"│\s+(0\.1|0\.5|1)\s+│", line)]
    assert len(sweep_rows) == 3 and "(OOM)" in sweep_rows[-1] and "(OOM)" not in sweep_rows[0]
    assert "out of memory" in out
    assert main(["simulate", str(p), "--format", "json"]) == 0
    sw = json.loads(capsys.readouterr().out)["sweep"]
    assert sw["fits"] == [pk <= limit for pk in sw["peak_memory_bytes"]] and sw["fits"][0] and not sw["fits"][-1]


def test_no_recommendation_when_nothing_fits(tmp_path, capsys, tiny_doc):
    tiny_doc["hardware"]["memory_bytes"] = 1024
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny_doc))
    assert main(["simulate", str(p)]) == 0
    out = capsys.readouterr().out
    assert "no reduced schedule fits" in out and "step speedup predicted" not in out


def test_presets_show_the_efficiency_values(capsys):
    from trsim.simulator.calibration import calibratable_parameters
    from trsim.simulator.presets import HARDWARE_PRESETS
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "efficiency values that drive the time model" in out
    for param in calibratable_parameters():
        assert len(re.findall(rf"│ {param}\s+│", out)) == 1, param   # each row once
    row = next(line for line in out.splitlines() if re.search(r"│ matmul_efficiency\s+│", line))
    assert f"{HARDWARE_PRESETS['h100-sxm']['matmul_efficiency']:.4g}" in row


def test_broken_pipe_is_quiet(tmp_path, tiny_doc):
    tiny_doc["sweep"] = {"schedule": "drop", "parameter": "keep", "range": [0, 1, 0.0001]}   # ~2 MB of CSV
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny_doc))
    r = subprocess.run(f"{sys.executable} -m trsim simulate {p} --format csv | head -c 10", shell=True,
                       capture_output=True, text=True)
    assert r.stdout == "schedule,t" and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
