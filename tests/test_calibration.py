"""Calibration safety: a calibration file is validated like a scenario, refused on other hardware unless
forced, and every output records which calibration (if any) was applied."""
import csv
import io
import json

import pytest
import yaml

from trsim.cli import main
from trsim.simulator.calibration import (CalibrationFile, calibratable_parameters, calibration_document,
                                         load_calibration, write_calibration)


def _cal(path, preset="cpu", device="cpu", gpu=None, **params):
    doc = calibration_document(params or {"matmul_efficiency": 0.5}, hardware_preset=preset,
                               environment={"device": device, "gpu": gpu, "torch": "2.13.0"},
                               results_files=["results.json"], cases=4,
                               fit={"method": "test", "measurements": 4, "fitted": sorted(params or ["matmul_efficiency"]),
                                    "fixed": {"attention_backward_ratio": 2.5}})
    write_calibration(path, doc)
    return doc


def _scenario(tmp_path, tiny_doc, cal="cal.json", **hw):
    tiny_doc["hardware"].update(calibration=cal, **hw)
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny_doc))
    return str(p)


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_round_trip_and_api(tmp_path):
    doc = _cal(tmp_path / "c.json", matmul_efficiency=0.6, layer_overhead_s=1e-4)
    cal = load_calibration(tmp_path / "c.json", expected_hardware="cpu")
    assert isinstance(cal, CalibrationFile) and cal.values() == {"matmul_efficiency": 0.6, "layer_overhead_s": 1e-4}
    assert cal.fit.fixed == {"attention_backward_ratio": 2.5} and doc["schema"] == "trsim.calibration/2"
    assert "matmul_efficiency" in calibratable_parameters() and "peak_flops" not in calibratable_parameters()


def test_outputs_record_the_calibration(tmp_path, tiny_doc, capsys):
    _cal(tmp_path / "cal.json")
    path = _scenario(tmp_path, tiny_doc)
    assert main(["simulate", path, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calibration"]["file"].endswith("cal.json") and doc["calibration"]["parameters"] == {
        "matmul_efficiency": 0.5} and doc["calibration"]["forced"] is False
    assert main(["simulate", path, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["calibration"].endswith("cal.json") for r in rows)
    assert main(["simulate", path]) == 0
    assert "calibration: " + str(tmp_path / "cal.json") in capsys.readouterr().out
    tiny_doc["hardware"].pop("calibration")
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(tiny_doc))
    assert main(["simulate", str(tmp_path / "plain.yaml"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"] is None
    assert main(["simulate", str(tmp_path / "plain.yaml")]) == 0
    assert "calibration: none" in capsys.readouterr().out


def test_calibration_for_other_hardware_is_refused_unless_forced(tmp_path, tiny_doc, capsys):
    _cal(tmp_path / "cal.json", preset="cpu")
    path = _scenario(tmp_path, tiny_doc, preset="h100-sxm", num_gpus=1)
    assert main(["simulate", path]) == 2
    err = _err(capsys)
    assert "cal.json: hardware_preset: expected a calibration for h100-sxm" in err and "cpu" in err
    assert "--force" in err
    assert main(["simulate", path, "--force", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calibration"]["forced"] is True and doc["calibration"]["hardware_preset"] == "cpu"


@pytest.mark.parametrize("mutate,field,needle", [
    (lambda d: d["parameters"].update(matmul_efficency={"value": 0.5}), "parameters",
     "parameter names from the time model"),
    (lambda d: d["parameters"].update(matmul_efficiency={"value": 50.0}), "parameters", "<= 20"),
    (lambda d: d["parameters"].update(matmul_efficiency={"value": True}), "parameters.matmul_efficiency.value",
     "a number, got true"),
    (lambda d: d["parameters"].update(matmul_efficiency=0.5), "parameters.matmul_efficiency", "a mapping"),
    (lambda d: d.update(schema="trsim.calibration/9"), "schema", "trsim.calibration/2"),
    (lambda d: d.pop("device"), "device", "required"),
    (lambda d: d.update(parameters={}), "parameters", "at least 1 item"),
])
def test_bad_calibration_contents_blame_the_calibration_file(tmp_path, tiny_doc, capsys, mutate, field, needle):
    doc = _cal(tmp_path / "cal.json")
    mutate(doc)
    (tmp_path / "cal.json").write_text(json.dumps(doc))
    path = _scenario(tmp_path, tiny_doc)
    assert main(["simulate", path]) == 2
    err = _err(capsys)
    assert err.startswith(f"trsim: error: {tmp_path / 'cal.json'}: {field}: expected"), err
    assert needle in err


def test_unreadable_calibration_paths_blame_the_scenario(tmp_path, tiny_doc, capsys):
    (tmp_path / "adir").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name, needle in (("nope.json", "not found"), ("adir", "directory"), ("loop", "symlink loop")):
        path = _scenario(tmp_path, tiny_doc, cal=name)
        assert main(["simulate", path]) == 2
        err = _err(capsys)
        assert f"{path}: hardware.calibration: expected" in err and needle in err, err


def test_duplicate_key_in_calibration_file(tmp_path, tiny_doc, capsys):
    _cal(tmp_path / "cal.json")
    text = (tmp_path / "cal.json").read_text().replace('"cases": 4', '"cases": 4, "cases": 5')
    (tmp_path / "cal.json").write_text(text)
    assert main(["simulate", _scenario(tmp_path, tiny_doc)]) == 2
    assert "cal.json: cases: expected each key once" in _err(capsys)


def test_writer_refuses_an_invalid_document(tmp_path):
    with pytest.raises(ValueError, match="matmul_efficiency"):
        calibration_document({"matmul_efficiency": float("nan")}, hardware_preset="cpu",
                             environment={"device": "cpu", "torch": "x"}, results_files=[], cases=1,
                             fit={"method": "m", "measurements": 1, "fitted": ["matmul_efficiency"]})
    assert not (tmp_path / "c.json").exists()


def test_calibrated_value_the_hardware_cannot_take_blames_the_calibration_file(tmp_path, tiny_doc, capsys):
    # 5 is within a calibration's range (a CPU's nominal peak may be beaten) but not for a datasheet peak
    _cal(tmp_path / "cal.json", preset="h100-sxm", device="cuda", gpu="NVIDIA H100", matmul_efficiency=5.0)
    path = _scenario(tmp_path, tiny_doc, preset="h100-sxm", num_gpus=1)
    assert main(["simulate", path]) == 2
    err = _err(capsys)
    assert err.startswith(f"trsim: error: {tmp_path / 'cal.json'}: parameters: expected matmul_efficiency <= 1"), err
