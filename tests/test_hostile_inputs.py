"""Every class of hostile input the robustness issue lists: refused with exit code 2 and one line
``trsim: error: FILE: FIELD: expected ..., got ...``, never a traceback, a hang or a non-finite number."""
import json
import os
import time

import pytest
import tomli_w
import yaml

from trsim.cli import main


def _err(capsys, args):
    code = main(args)
    out, err = capsys.readouterr()
    err = err.strip()
    assert code == 2, (code, out[-500:], err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("trsim: error: ") and "expected" in err, err
    for internal in ("instance of", "literal[", "Input should", "function-after", "LayerEntry", "pydantic"):
        assert internal not in err, err
    return err


def _write(tmp_path, doc, fmt="yaml"):
    p = tmp_path / f"s.{fmt}"
    if fmt == "json":
        p.write_text(json.dumps(doc))
    elif fmt == "toml":
        p.write_text(tomli_w.dumps(doc))
    else:
        p.write_text(yaml.safe_dump(doc))
    return str(p)


# ------------------------------------------------------------------------------ duplicate keys
@pytest.mark.parametrize("fmt,text", [
    ("yaml", "name: a\nname: b\n"),
    ("json", '{"name": "a", "name": "b"}'),
    ("toml", 'name = "a"\nname = "b"\n'),
])
def test_duplicate_keys_refused(tmp_path, capsys, fmt, text):
    p = tmp_path / f"s.{fmt}"
    p.write_text(text)
    err = _err(capsys, ["simulate", str(p)])
    assert str(p) in err and ("name" in err or "overwrite" in err)


def test_nested_duplicate_yaml_key_refused(tmp_path, capsys, tiny_doc):
    text = yaml.safe_dump(tiny_doc).replace("  num_gpus: 1\n", "  num_gpus: 1\n  num_gpus: 4\n")
    p = tmp_path / "s.yaml"
    p.write_text(text)
    assert "num_gpus: expected each key once" in _err(capsys, ["simulate", str(p)])


# ------------------------------------------------------------------------ booleans and strings
@pytest.mark.parametrize("fmt", ["yaml", "json", "toml"])
@pytest.mark.parametrize("path,value,needle", [
    (("tasks", "u", "segments", 1, "tokens"), True, "a whole number, got true"),
    (("hardware", "num_gpus"), True, "a whole number, got true"),
    (("training", "zero_stage"), True, "got true"),
    (("training", "epochs"), False, "got false"),
    (("hardware", "price_per_gpu_hour"), "2.5", "a number, got '2.5'"),
    (("training", "activation_checkpointing"), 1, "true or false, got 1"),
    (("training", "activation_checkpointing"), "yes", "true or false, got 'yes'"),
    (("schedules", "drop", "u", "keep"), True, "got true"),
])
def test_no_coercion_between_kinds(tmp_path, capsys, tiny_doc, fmt, path, value, needle):
    node = tiny_doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc, fmt)])
    assert ".".join(map(str, path)) in err and needle in err, err


# ------------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["training"].update(epochs=float("inf")), "training.epochs"),
    (lambda d: d["hardware"].update(price_per_gpu_hour=float("nan")), "hardware.price_per_gpu_hour"),
    (lambda d: d["hardware"].update(matmul_efficiency=float("nan")), "hardware.matmul_efficiency"),
    (lambda d: d["schedules"]["drop"]["u"].update(keep=float("nan")), "schedules.drop.u.keep"),
    (lambda d: d.update(sweep={"schedule": "drop", "parameter": "keep", "values": [0.5, float("nan")]}),
     "sweep.values.1"),
    (lambda d: d.update(sweep={"schedule": "drop", "parameter": "keep", "range": [0, float("inf"), 0.1]}),
     "sweep.range.1"),
])
@pytest.mark.parametrize("fmt", ["yaml", "toml"])
def test_nan_and_inf_refused(tmp_path, capsys, tiny_doc, mutate, field, fmt):
    mutate(tiny_doc)
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc, fmt)])
    assert f": {field}: expected" in err and "finite" in err, err


def test_json_nan_constants_refused(tmp_path, capsys, tiny_doc):
    tiny_doc["training"]["epochs"] = float("nan")
    p = tmp_path / "s.json"
    p.write_text(json.dumps(tiny_doc))   # writes the non-standard NaN constant
    assert "finite numbers, got NaN" in _err(capsys, ["simulate", str(p)])


def test_yaml_inf_epochs(tmp_path, capsys):
    text = open("scenarios/tiny_cpu.yaml").read().replace("zero_stage: 0,", "zero_stage: 0, epochs: .inf,")
    p = tmp_path / "s.yaml"
    p.write_text(text)
    assert "training.epochs: expected a finite number, got inf" in _err(capsys, ["simulate", str(p)])


# -------------------------------------------------------------------------- sizes and overflow
def test_long_sequences_stay_physical(tmp_path, capsys):
    """2e7 and 9e8 image tokens at micro-batch 4 once overflowed int64 (MFU 283%, negative step time)."""
    for tokens in (20_000_000, 900_000_000):
        text = open("scenarios/vila_u_7b_budget.yaml").read().replace("tokens: 729", f"tokens: {tokens}")
        p = tmp_path / "s.yaml"
        p.write_text(text)
        assert main(["simulate", str(p), "--format", "json"]) == 0
        doc = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
        for s in doc["schedules"]:
            assert 0 < s["step"]["mfu"] <= 1 and s["step"]["time_s"] > 0 and s["step"]["hfu"] <= 1.0001
            assert s["step"]["flops"] > 0 and s["budget"]["gpu_hours"] > 0


@pytest.mark.parametrize("value,needle", [(2**63, "<= 1,000,000,000"), (2**64 + 1, "<="), (10**30, "<=")])
def test_huge_token_counts_refused(tmp_path, capsys, tiny_doc, value, needle):
    tiny_doc["tasks"]["u"]["segments"][1]["tokens"] = value
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])
    assert "tasks.u.segments.1.tokens" in err and needle in err and len(err) < 400


def test_sweep_size_bounded_up_front(tmp_path, capsys, tiny_doc):
    tiny_doc["sweep"] = {"schedule": "drop", "parameter": "keep", "range": [0, 1, 1e-9]}
    t0 = time.perf_counter()
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])
    assert time.perf_counter() - t0 < 5 and "sweep" in err and "at most 2,000,000 points" in err


def test_deeply_nested_input(tmp_path, capsys):
    for fmt, text in (("yaml", "name: " + "[" * 5000 + "]" * 5000 + "\n"),
                      ("json", '{"name": ' + "[" * 100000 + "]" * 100000 + "}"),
                      ("toml", "name = " + "[" * 3000 + "]" * 3000 + "\n")):
        p = tmp_path / f"deep.{fmt}"
        p.write_text(text)
        err = _err(capsys, ["simulate", str(p)])
        assert str(p) in err


def test_yaml_alias_bomb(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("name: *a8")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    _err(capsys, ["simulate", str(p)])
    assert time.perf_counter() - t0 < 10


# ------------------------------------------------------------------------- methods and tables
@pytest.mark.parametrize("spec,field,needle", [
    ({"method": {"himix": 1}}, "schedules.x.u.method", "one of himix, hmgen, drop, pyramid"),
    ({"method": ["himix"]}, "schedules.x.u.method", "got a list"),
    ({"layers": {"0-3": {"image": "fulll"}}}, "schedules.x.u.layers.0-3.image", "one of full, kv_only or skip"),
    ({"layers": {"0-3": {"image": {"mode": "fulll"}}}}, "schedules.x.u.layers.0-3.image.mode", "one of full"),
    ({"layers": {"0-3": {"image": {"keep": 2}}}}, "schedules.x.u.layers.0-3.image.keep", "<= 1"),
    ({"layers": {"0-3": {"image": {"mood": "full"}}}}, "schedules.x.u.layers.0-3.image.mood", "unknown key"),
    ("himix", "schedules.x.u", "a mapping with 'method'"),
])
def test_schedule_errors_point_into_the_document(tmp_path, capsys, tiny_doc, spec, field, needle):
    tiny_doc["schedules"]["x"] = {"u": spec}
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])
    assert f": {field}: expected" in err and needle in err, err


def test_type_errors_have_no_class_names(tmp_path, capsys, tiny_doc):
    tiny_doc["tasks"]["u"] = 5
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])
    assert "tasks.u: expected a mapping, got 5" in err


# -------------------------------------------------------------------------------- odd files
def test_named_pipe_does_not_block(tmp_path, capsys):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    assert "named pipe" in _err(capsys, ["simulate", str(fifo)])
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: p.symlink_to(p), "symlink loop"),
    (lambda p: p.write_bytes(b"name: caf\xe9\n"), "not UTF-8"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00n"), "not UTF-8"),
])
def test_odd_scenario_files(tmp_path, capsys, make, needle):
    p = tmp_path / "s.yaml"
    make(p)
    err = _err(capsys, ["simulate", str(p)])
    assert err.startswith(f"trsim: error: {p}: <file>: expected") and needle in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_scenario(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\n")
    p.chmod(0)
    assert "permission denied" in _err(capsys, ["simulate", str(p)])


# ------------------------------------------------------------------------------ long names
def test_detail_is_not_quadratic_in_name_length(tmp_path, capsys, tiny_doc):
    tiny_doc["tasks"]["u"]["segments"][0]["name"] = "n" * 20000
    assert "at most 200 characters" in _err(capsys, ["simulate", _write(tmp_path, tiny_doc), "--detail"])
    tiny_doc["tasks"]["u"]["segments"][0]["name"] = "n" * 200
    tiny_doc["name"] = "[bold]" + "m" * 190      # rich markup in user text is shown, not interpreted
    t0 = time.perf_counter()
    assert main(["simulate", _write(tmp_path, tiny_doc), "--detail"]) == 0
    out = capsys.readouterr().out
    assert time.perf_counter() - t0 < 10 and "[bold]mmm" in out and "n" * 200 in out


def test_sweep_work_bounded_by_plan_size(tmp_path, capsys, tiny_doc):
    tiny_doc["model"]["num_layers"] = 4096
    tiny_doc["schedules"] = {"baseline": {}, "drop": tiny_doc["schedules"]["drop"]}
    tiny_doc["sweep"] = {"schedule": "drop", "parameter": "keep", "range": [0, 1, 0.00001]}
    t0 = time.perf_counter()
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])
    assert "sweep: expected a sweep of at most 200,000,000 plan entries" in err and time.perf_counter() - t0 < 5


def test_scenario_work_bounded(tmp_path, capsys, tiny_doc):
    tiny_doc["model"]["num_layers"] = 4096
    tiny_doc["tasks"]["u"]["segments"] = [{"name": f"s{i}", "kind": "image" if i % 2 else "text", "tokens": 4}
                                          for i in range(1000)]
    tiny_doc["schedules"] = {"baseline": {}, **{f"d{i}": {"u": {"method": "drop", "from_layer": 1, "keep": 0.5}}
                                                 for i in range(5)}}
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])
    assert "schedules: expected at most 10,000,000 plan entries" in err


def test_homogeneous_mixing_bounded_up_front(tmp_path, capsys):
    text = open("scenarios/vila_u_7b_budget.yaml").read()
    text = text.replace("micro_batch_size: 4, global_batch_size: 1024", "micro_batch_size: 1, global_batch_size: 16777216")
    text = text.replace("num_gpus: 128", "num_gpus: 1").replace("zero_stage: 3}", "zero_stage: 3, task_mixing: homogeneous}")
    p = tmp_path / "s.yaml"
    p.write_text(text)
    t0 = time.perf_counter()
    err = _err(capsys, ["simulate", str(p)])
    assert f"{p}: training.task_mixing: expected a homogeneous mix of at most" in err and time.perf_counter() - t0 < 10


@pytest.mark.parametrize("field", ["host_layer_s", "layer_overhead_s"])
def test_overflowing_prices_give_one_line_and_no_numpy_warnings(tmp_path, tiny_doc, field):
    """A per-layer cost at the top of its range overflows the step time: one error line on stderr
    (checked in a real process, since pytest would swallow numpy's RuntimeWarnings), exit code 2."""
    import subprocess
    import sys
    doc = dict(tiny_doc, hardware={**tiny_doc["hardware"], "preset": "h100-sxm", field: 1e308})
    p = _write(tmp_path, doc)
    r = subprocess.run([sys.executable, "-m", "trsim", "simulate", p], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trsim: error: ") and "finite" in lines[0], r.stderr


# --------------------------------------------------------------------------- hardware overrides
@pytest.mark.parametrize("field,value,needle", [
    ("compute_units", 10**400, "hardware.compute_units: expected a number <= 1,048,576"),  # was OverflowError
    ("compute_units", 0, "hardware.compute_units: expected a number >= 1, got 0"),
    ("collective_compute_units", 10**400, "hardware.collective_compute_units: expected a number <= 1,048,576"),
    ("collective_compute_units", -1, "hardware.collective_compute_units: expected a number >= 0, got -1"),
    ("gpus_per_node", 10**400, "hardware.gpus_per_node: expected a number <= 16,777,216"),
    ("matmul_tiles", [], "hardware.matmul_tiles: expected at least 1 item"),                  # was IndexError
    ("matmul_tiles", [[10**400, 128]], "hardware.matmul_tiles.0.0: expected a number <= 1,048,576"),
])
def test_hardware_counts_bounded(tmp_path, capsys, tiny_doc, field, value, needle):
    """SM counts, tiles and node sizes are counts the tile and ring models turn into float64: bounded, and at
    least one tile, so that an integer past float64 or an empty tile list is refused in one line."""
    tiny_doc["hardware"].update(preset="h100-sxm", **{field: value})
    err = _err(capsys, ["simulate", _write(tmp_path, tiny_doc, "json")])
    assert needle in err and len(err) < 400, err


@pytest.mark.parametrize("hardware,needle", [
    ({"compute_units": 16}, "hardware: expected collective_compute_units < compute_units (16), got 24"),
    ({"collective_compute_units": 8, "compute_units": 8}, "collective_compute_units < compute_units (8), got 8"),
])
def test_collective_sms_below_the_gpus(tmp_path, capsys, tiny_doc, hardware, needle):
    """The preset's 24 SMs for collectives against fewer SMs set over it: refused, naming both fields."""
    tiny_doc["hardware"].update(preset="h100-sxm", **hardware)
    assert needle in _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])


@pytest.mark.parametrize("hardware,needle", [
    ({"attention_head_dim_factors": [1e6, 1.0, 1.0]},
     "hardware: expected attention_efficiency x the largest attention_head_dim_factors <= 1 of the datasheet peak"),
    ({"attention_efficiency": 1.0, "attention_head_dim_factors": [1.2, 1.0, 1.0]}, "got 1 x 1.2 = 1.2"),
    ({"preset": "cpu", "attention_head_dim_factors": [1e308, 1.0, 1.0]}, "<= 20 of the nominal peak"),
    ({"attention_backward_ratio": 1e-6}, "hardware.attention_backward_ratio: expected a number >= 2"),
])
def test_attention_cannot_run_faster_than_the_peak(tmp_path, capsys, hardware, needle):
    """A long-sequence run is attention-bound: head-dim factors that lift the efficiency past 1 of the
    datasheet peak, or a backward FLOP convention below the backward's own FLOPs (2 x forward), once
    printed MFUs of 1653% and 141% on an H100; refused now."""
    doc = yaml.safe_load(open("scenarios/vila_u_7b_budget.yaml").read().replace("tokens: 729", "tokens: 2000000"))
    doc["hardware"].update(hardware)
    assert needle in _err(capsys, ["simulate", _write(tmp_path, doc)])


def test_fastest_allowed_attention_stays_physical(tmp_path, capsys):
    """At the edges these bounds allow (efficiency 1 at every head dim and length, backward convention 2) an
    attention-bound step reaches at most the peak."""
    doc = yaml.safe_load(open("scenarios/vila_u_7b_budget.yaml").read().replace("tokens: 729", "tokens: 2000000"))
    doc["training"]["activation_checkpointing"] = False       # a recomputed forward would hold MFU to 3/4
    doc["hardware"].update(attention_efficiency=1.0, attention_head_dim_factors=[1.0, 1.0, 1.0],
                           attention_half_keys=0.0, attention_causal_half_keys=0.0, attention_backward_ratio=2)
    assert main(["simulate", _write(tmp_path, doc), "--format", "json"]) == 0
    mfus = [s["step"]["mfu"] for s in json.loads(capsys.readouterr().out)["schedules"]]
    assert max(mfus) > 0.95 and all(0 < m <= 1 for m in mfus), mfus


@pytest.mark.parametrize("hardware", [{"peak_flops": 5e-324, "matmul_efficiency": 0.25},
                                      {"memory_bandwidth": 5e-324, "bandwidth_efficiency": 0.5}])
def test_rates_that_underflow_to_zero_are_refused(tmp_path, capsys, tiny_doc, hardware):
    """The smallest positive rate times an efficiency below 1/2 is 0.0: a GEMM's time once raised
    ZeroDivisionError; now it is inf, refused in one line like any price beyond float64."""
    tiny_doc["hardware"].update(hardware)
    assert "finite numbers" in _err(capsys, ["simulate", _write(tmp_path, tiny_doc)])


@pytest.mark.parametrize("host_layer_s", [1e160, 1e305])
def test_huge_finite_step_times_print_in_full(tmp_path, capsys, tiny_doc, host_layer_s):
    """A finite step time whose milliseconds overflow float64 (above 1.8e305 s), or whose product with the
    compute time does (the --detail table's task share, once computed as compute x time / total), printed
    'inf ms' and 'inf%'; the tables show the digits instead."""
    import re
    tiny_doc["hardware"].update(preset="h100-sxm", host_layer_s=host_layer_s)
    p = _write(tmp_path, tiny_doc)
    assert main(["simulate", p, "--format", "json"]) == 0
    step = json.loads(capsys.readouterr().out)["schedules"][0]["step"]["time_s"]
    assert step > 3 * host_layer_s
    assert main(["simulate", p, "--detail"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"(?i)\b-?(inf|nan)( ms|%)", out), [line for line in out.splitlines() if "inf" in line][:3]
    assert re.search(r"\d(,\d{3}){50,}\.\d{2} ms", out), out[:2000]   # 10**160 ms and more, digit by digit


# ------------------------------------------------------------------------------ sliding windows (fuzzed: _set_window)
@pytest.mark.parametrize("model,field,needle", [
    ({"sliding_window": 10**400}, "model.sliding_window", "<= 1,099,511,627,776"),
    ({"sliding_window": 4096.5}, "model.sliding_window", "a whole number, got 4096.5"),
    ({"sliding_window": True}, "model.sliding_window", "got true"),
    ({"sliding_window": "4096"}, "model.sliding_window", "got '4096'"),
    ({"sliding_window": -1}, "model.sliding_window", ">= 1, got -1"),
    ({"sliding_window": 16, "sliding_window_layers": 10**400}, "model.sliding_window_layers", "<= 4096"),
    ({"sliding_window": 16, "sliding_window_layers": 2.5}, "model.sliding_window_layers", "a whole number, got 2.5"),
    ({"sliding_window": 16, "sliding_window_layers": -1}, "model.sliding_window_layers", ">= 0, got -1"),
    ({"sliding_window": 16, "sliding_window_layers": 5}, "model.sliding_window_layers",
     "at most num_layers (4), got 5"),
    ({"sliding_window": 16, "sliding_window_layers": 2, "num_layers": 1}, "model.sliding_window_layers",
     "at most num_layers (1), got 2"),
])
def test_hostile_window_fields_of_a_model_block(tmp_path, capsys, tiny_doc, model, field, needle):
    tiny_doc["model"].update(model)
    p = _write(tmp_path, tiny_doc, "json")
    err = _err(capsys, ["simulate", p])
    assert f"{p}: {field}: expected " in err and needle in err, err


def _results_doc(**changes):
    doc = json.load(open("tests/data/results_tiny_cpu.json"))
    for where, values in changes.items():
        doc[where].update(values)
    return doc


@pytest.mark.parametrize("changes,field,needle", [
    # Found by fuzzing --results: a results file's model (read as ModelSpec, without a scenario's resolution)
    # accepted a windowed-layer count with no window, and named a count above the depth as the whole model ("model:
    # expected sliding_window_layers (5) must be at most num_layers (4)")
    ({"model": {"sliding_window_layers": 2}}, "model.sliding_window_layers", "a count only beside sliding_window"),
    ({"model": {"sliding_window": 16, "sliding_window_layers": 5}}, "model.sliding_window_layers",
     "at most num_layers (4), got 5"),
    ({"model": {"sliding_window": 0, "sliding_window_layers": 2}}, "model.sliding_window", ">= 1, got 0"),
    ({"environment": {"cpu": 5}}, "environment.cpu", "a string, got 5"),
    ({"environment": {"cpu": ["x"]}}, "environment.cpu", "a string"),
])
def test_hostile_window_and_cpu_fields_of_a_results_file(tmp_path, capsys, changes, field, needle):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(_results_doc(**changes)))
    for args in (["validate", str(p), "--format", "json"],
                 ["calibrate", str(p), "--out", str(tmp_path / "c.json"), "--format", "json"]):
        err = _err(capsys, args)
        assert f"{p}: {field}: expected " in err and needle in err, err
    assert not (tmp_path / "c.json").exists()


def test_a_results_file_with_a_window_and_a_cpu_name_reads(tmp_path, capsys):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(_results_doc(model={"sliding_window": 16, "sliding_window_layers": 2},
                                         environment={"cpu": "Intel(R) Xeon(R) (avx512_core_amx)"})))
    assert main(["validate", str(p), "--format", "json"]) in (0, 1)
    json.loads(capsys.readouterr().out)
