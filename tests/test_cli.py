"""The command line: outputs for scripts, and one clear line with exit code 2 for every bad input."""
import csv
import io
import json
import subprocess
import sys

import pytest
import yaml

from trsim.cli import main


def run(*args):
    p = subprocess.run([sys.executable, "-m", "trsim", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_simulate_json_has_the_contract_keys(capsys):
    assert main(["simulate", "scenarios/paper_vila_u_3b.yaml", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"] == "vila-u-3b-unified"
    s = doc["schedules"][1]
    for k in ("name", "tasks", "step", "flops_ratio", "speedup", "budget"):
        assert k in s
    t = s["tasks"]["understanding"]
    assert len(t["per_layer_flops_forward"]) == 28
    for k in ("tokens", "flops_forward", "flops_backward", "lm_head_flops_forward"):
        assert k in t
    assert set(s["step"]) >= {"flops", "time_s", "peak_memory_bytes", "mfu"}
    assert set(s["budget"]) >= {"gpu_hours", "cost_usd", "wall_days"}


def test_simulate_csv_one_row_per_schedule_and_task(capsys):
    assert main(["simulate", "scenarios/paper_vila_u_3b.yaml", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 5 * 2 and rows[0]["schedule"] == "baseline"


def test_sweep_plot(tmp_path):
    out = tmp_path / "sweep.png"
    assert main(["simulate", "scenarios/paper_table2_hmgen.yaml", "--plot", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_presets_lists_models_and_hardware(capsys):
    assert main(["presets", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["models"]["llama-3.2-3b"]["num_key_value_heads"] == 8 and "h100-sxm" in doc["hardware"]


def _write(tmp_path, doc, name="s.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return str(p)


BAD = [
    (lambda d: d.update(colour="blue"), "colour: expected one of the keys name, description, model"),
    (lambda d: d["model"].update(preset="llama-9"), "model.preset"),
    (lambda d: d["schedules"].update(x={"u": {"method": "magic"}}), "schedules.x.u.method"),
    (lambda d: d["tasks"]["u"]["segments"][1].update(tokens=0), "tasks.u.segments.1.tokens"),
    (lambda d: d["tasks"]["u"]["segments"][1].update(tokens=-3), "tasks.u.segments.1.tokens"),
    (lambda d: d["schedules"].update(x={"u": {"method": "drop", "from_layer": 1, "keep": 1.5}}), "schedules.x.u.keep"),
    (lambda d: d["schedules"].update(x={"u": {"method": "himix", "from_layer": 9}}), "schedules.x.u.from_layer"),
    (lambda d: d["schedules"].update(x={"u": {"method": "pyramid", "stages": [[1, 0.2], [2, 0.5]]}}),
     "schedules.x.u.stages"),
    (lambda d: d["model"].update(num_key_value_heads=3), "model"),
    (lambda d: d["schedules"].update(x={"nope": {"method": "himix"}}), "schedules.x.nope"),
    (lambda d: d["training"].update(global_batch_size=3), "training.global_batch_size"),
    (lambda d: d["schedules"].update(x={"u": {"method": "hmgen", "shallow": 3}}), "schedules.x.u.shallow"),
]


@pytest.mark.parametrize("mutate,field", BAD)
def test_bad_scenarios_exit_2_with_one_line(tmp_path, tiny_doc, mutate, field):
    mutate(tiny_doc)
    path = _write(tmp_path, tiny_doc)
    code, out, err = run("simulate", path)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"trsim: error: {path}: ") and field in lines[0]


def test_malformed_missing_and_non_mapping_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    for path, needle in ((str(bad), "well-formed"), (str(tmp_path / "missing.yaml"), "not found")):
        code, _, err = run("simulate", path)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    code, _, err = run("simulate", str(lst))
    assert code == 2 and "mapping" in err


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    code, out, err = run("simulate", str(p))
    assert code == 2 and "pwned" not in out


def test_toml_and_json_scenarios_load(tmp_path, tiny_doc):
    import tomllib  # noqa: F401
    j = tmp_path / "s.json"
    j.write_text(json.dumps(tiny_doc))
    assert main(["simulate", str(j), "--format", "json"]) == 0


def test_hf_config_and_calibration_paths(tmp_path, tiny_doc, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 32,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2,
                                                      "intermediate_size": 48, "vocab_size": 64,
                                                      "hidden_act": "silu"}))
    tiny_doc["model"] = {"hf_config": "config.json"}
    cal = tmp_path / "cal.json"
    from trsim.simulator.calibration import calibration_document, write_calibration
    write_calibration(cal, calibration_document(
        {"matmul_efficiency": 0.5}, std={"matmul_efficiency": 0.01}, hardware_preset="cpu",
        environment={"device": "cpu", "torch": "2.13.0"}, results_files=["r.json"], cases=3,
        fit={"method": "test", "measurements": 3, "fitted": ["matmul_efficiency"]}))
    tiny_doc["hardware"]["calibration"] = "cal.json"
    assert main(["simulate", _write(tmp_path, tiny_doc), "--format", "json"]) == 0
    tiny_doc["hardware"]["calibration"] = "nope.json"
    code, _, err = run("simulate", _write(tmp_path, tiny_doc, "t.yaml"))
    assert code == 2 and "hardware.calibration" in err
