"""calibrate and validate: rich tables, JSON, plots. The model lives in the simulator, the fit in fit.py."""
from __future__ import annotations

import json
import sys

import numpy as np
from rich.table import Table

from trsim.profiler.schema import load_results
from trsim.simulator.calibration import apply_calibration, load_calibration
from trsim.simulator.errors import ScenarioError
from trsim.simulator.fileio import atomic_write_json

from .crossval import folds, held_out, parse_scheme
from .fit import (Case, base_hardware, calibration_document, cases_from_results, fit, hardware_for,
                  held_out_record)


class _FlopsItem:
    """A case seen by the one-constant FLOPs predictor: its model FLOPs (forward x 3) and measured time."""
    def __init__(self, case: Case, prediction: dict):
        self.flops = 3.0 * prediction["flops_forward"]
        self.measured_time = case.measured["fwd_bwd_s"]


def _load(paths):
    loaded = [(p, load_results(p)) for p in paths]
    cases = cases_from_results(loaded)
    if not cases:
        raise ScenarioError(paths[0], "cases", "at least one case with status 'ok'")
    env = loaded[0][1].environment.model_dump()
    return loaded, cases, env


def _print_fit(res, preset: str, what: str, console) -> None:
    t = Table(title=f"calibration of {preset} from {what}", title_justify="left")
    for col in ("parameter", "value", "std error", "note"):
        t.add_column(col, justify="left" if col in ("parameter", "note") else "right")
    for k in res.values:
        std = res.std[k]
        note = f"fixed at preset: {res.fixed[k]}" if k in res.fixed else ("at bound" if k in res.at_bound else "")
        t.add_row(k, f"{res.values[k]:.4g}", "not estimable" if std is None else f"{std:.2g}", note)
    for k, why in res.varies.items():
        t.add_row(k, "-", "-", f"not in the calibration: {why}")
    console.print(t)


def _write_calibration(res, sources, env, preset, args, console, what: str, check=None) -> int:
    """Write the fit, then (``check``: a function returning fit.held_out_record's dict) its held-out check
    into the same file: the refits take several times the fit, and an interruption keeps the fit."""
    from pathlib import Path
    from trsim.simulator.calibration import write_calibration
    write_calibration(args.out, calibration_document(res, sources, env, preset))
    held = check() if check is not None else None
    doc = calibration_document(res, sources, env, preset, held)
    write_calibration(args.out, doc)
    if args.format == "json":
        print(json.dumps(doc, indent=1))
        return 0
    _print_fit(res, preset, what, console)
    if res.fixed:
        console.print(f"[yellow]not identifiable from these data, fixed at the preset:[/yellow] {', '.join(res.fixed)}")
    console.print(f"rms log residual {res.residual_rms:.3f}; written to {args.out} "
                  f"(load it with hardware: {{preset: {preset}, calibration: {Path(args.out)}}})")
    if held is not None:
        console.print(held_out_text(held), markup=False, highlight=False)
    return 0


def held_out_text(h: dict) -> str:
    """One line on a calibration's own held-out check (the calibration file's fit.held_out)."""
    if not h.get("folds"):
        return f"held out: {h.get('note') or 'not cross-validated'}"
    if h.get("median_abs_pct") is None:
        return f"held out ({h['folds']} folds): none scored ({h.get('note') or 'no fold could be fitted'})"
    return (f"held out ({h['folds']} folds): median {h['median_abs_pct']:.1f}%, max {h['max_abs_pct']:.1f}% "
            f"absolute error over {h['items']} measurements it did not see"
            + (f"; {h['note']}" if h.get("note") else ""))


def _inputs(args):
    if bool(args.results) == bool(getattr(args, "runs", None)):
        raise ScenarioError("<arguments>", "results", "expected profiler results files or --runs RUNS (one of them)")


def calibrate_command(args, console) -> int:
    _inputs(args)
    if args.runs:
        from .runs import common_hardware, load_runs
        runs, _, _ = load_runs(args.runs)
        preset = args.hardware or common_hardware(runs, args.runs)
        hw0 = _hw0(preset, args.runs)
        res = fit(runs, hw0)
        env = {"device": "measured training runs", "torch": "n/a (training runs)"}
        return _write_calibration(res, [args.runs], env, preset, args, console, f"{len(runs)} runs",
                                  lambda: held_out_record(runs, hw0, args.held_out_folds))
    loaded, cases, env = _load(args.results)
    _refuse_flops_mismatch(cases)
    preset = args.hardware or hardware_for(env.get("gpu"), env.get("device", "cpu"))
    hw0 = base_hardware(preset)
    res = fit(cases, hw0)
    return _write_calibration(res, args.results, env, preset, args, console,
                              f"{len(cases)} cases ({env.get('gpu') or env.get('device')})",
                              lambda: held_out_record(cases, hw0, args.held_out_folds))


def _hw0(preset: str, where: str):
    from trsim.simulator.presets import HARDWARE_PRESETS
    if preset not in HARDWARE_PRESETS:
        raise ScenarioError(where, "hardware", f"expected a hardware preset ({', '.join(HARDWARE_PRESETS)}) to "
                            f"start the fit from, got {preset!r}; pass --hardware")
    return base_hardware(preset)


def _flops_mismatches(cases: list[Case]) -> list[str]:
    """Counted FLOPs against the analytic FLOPs recomputed now from each case's plan."""
    from trsim.simulator.costs import analytic_counts
    bad = []
    for c in cases:
        ana = analytic_counts(c.plan, c.model, c.micro_batch, c.settings["attention"], c.settings["lm_head"])
        for counter, v in c.flops.items():
            if counter == "analytic":
                continue
            keys = [k for k in ("per_layer_forward", "lm_head_forward", "forward", "backward") if v.get(k) is not None]
            if any(v[k] != ana[k] for k in keys):
                bad.append(f"{c.name}: {counter} counted {v['forward']:,} forward FLOPs, analytic {ana['forward']:,}")
    return bad


def _refuse_flops_mismatch(cases: list[Case]) -> None:
    """A case whose counted FLOPs disagree with the plan's did not execute the plan the simulator prices:
    fitting the time model to it would calibrate against the wrong work, so calibrate refuses."""
    bad = [(c, m) for c in cases for m in _flops_mismatches([c])[:1]]
    if bad:
        case, first = bad[0]
        raise ScenarioError(case.source, "cases.flops", f"expected counted FLOPs equal to the simulator's for "
                            f"every case, got {len(bad)} case(s) that differ ({first})")


def _pct(pred, meas):
    return 100.0 * (pred - meas) / meas


def cross_validate(cases: list[Case], hw0, folds_by: str) -> dict[int, dict]:
    """Predict every case from a fit on the other folds (``crossval`` schemes); case index -> prediction."""
    out = {}
    for i, r in held_out(cases, hw0, parse_scheme(folds_by)).items():
        if r["predicted_s"] is not None:
            out[i] = {"fwd_bwd_s": r["predicted_s"]}
    return out


def _summary(errs):
    a = np.abs(np.asarray([e for e in errs if e is not None and np.isfinite(e)]))
    return (float(np.median(a)), float(a.max())) if a.size else (None, None)


def flops_predictor_held_out(items, folds_):
    """The one-constant baseline, time = c x FLOPs, with c fitted (geometric mean) on the training folds."""
    out = {}
    for test in folds_:
        held = set(test)
        train = [i for i in range(len(items)) if i not in held]
        logc = np.mean([np.log(items[i].measured_time / items[i].flops) for i in train])
        for i in test:
            out[i] = float(np.exp(logc) * items[i].flops)
    return out


DEVICE_BOUND = 0.85   # a step whose operators fill at least this share of it is device-bound


def validate_command(args, console) -> int:
    if getattr(args, "published", False):
        from .suite import check_sources, published_command
        check_sources(getattr(args, "sources", None))
        return published_command(args, console)
    for flag in ("transfer", "folds", "sources", "few_runs"):
        given = getattr(args, flag, None)
        if given is not None and given is not False:  # (--folds 0 is given: 0 == False, so no membership test)
            flag = flag.replace("_", "-")
            raise ScenarioError("<arguments>", flag, f"expected --{flag} with --published (it sets up the "
                                f"published-runs suite), got it without")
    _inputs(args)
    if args.runs:
        return validate_runs_command(args, console)
    loaded, cases, env = _load(args.results)
    preset = args.hardware or hardware_for(env.get("gpu"), env.get("device", "cpu"))
    hw0 = base_hardware(preset)
    mismatches = _flops_mismatches(cases)
    report = {"results_files": list(args.results), "hardware_preset": preset, "gpu": env.get("gpu"),
              "device": env.get("device"), "flops_mismatches": mismatches, "cases": []}
    uncalibrated = [c.predict(hw0) for c in cases]  # the uncalibrated prices: memory, FLOPs, class times
    if args.calibration:
        cal = load_calibration(args.calibration, expected_hardware=preset, force=args.force)
        report["calibration"] = cal.summary(args.calibration, forced=args.force and cal.hardware_preset != preset)
        hw = apply_calibration(hw0, cal, args.calibration)
        preds = {"calibration": {i: c.predict(hw) for i, c in enumerate(cases)}}
    else:
        preds = {"leave-one-schedule-out": cross_validate(cases, hw0, "schedule"),
                 "leave-one-size-out": cross_validate(cases, hw0, "size")}
        for name, scheme in (("flops-only-schedule-out", "schedule"), ("flops-only-size-out", "size")):
            fs = folds(cases, parse_scheme(scheme))
            if len(fs) > 1:
                items = [_FlopsItem(c, p) for c, p in zip(cases, uncalibrated)]
                preds[name] = {i: {"fwd_bwd_s": v} for i, v in flops_predictor_held_out(items, fs).items()}
    for i, c in enumerate(cases):
        m = c.measured
        row = {"case": c.name, "source": c.source, "measured_fwd_bwd_s": m["fwd_bwd_s"],
               "measured_activation_bytes": m["activation_bytes"], "measured_peak_bytes": m["peak_bytes"]}
        any_pred = preds["calibration"][i] if "calibration" in preds else uncalibrated[i]  # memory: no fitting
        row["predicted_activation_bytes"] = any_pred["activation_bytes"]
        row["activation_error_pct"] = _pct(any_pred["activation_bytes"], m["activation_bytes"])
        row["predicted_peak_bytes"] = any_pred["peak_bytes"]
        row["peak_error_pct"] = _pct(any_pred["peak_bytes"], m["peak_bytes"]) if m["peak_bytes"] else None
        for name, p in preds.items():
            if i in p:
                row[f"{name}_fwd_bwd_s"] = p[i]["fwd_bwd_s"]
                row[f"{name}_error_pct"] = _pct(p[i]["fwd_bwd_s"], m["fwd_bwd_s"])
        # kernels (or CPU operators) per class against the presets' price of each, and whether the step is
        # device-bound: its operators fill at least DEVICE_BOUND of it (the rest is host time)
        classes = m.get("classes_s") or {}
        if classes:
            preset_time = uncalibrated[i]["time_s"]
            row["device_bound"] = sum(classes.values()) >= DEVICE_BOUND * m["fwd_bwd_s"]
            big = {k: v for k, v in classes.items() if v >= 0.01 * m["fwd_bwd_s"]}
            row["class_time_ratio"] = {k: preset_time[k] / v for k, v in big.items() if preset_time.get(k, 0) > 0}
            # a class the step measures but the presets price at nothing (an index_select outside the layers, the
            # embedding's or the LM head's, counts as a gather in a plan that gathers nothing: 28 us, 1.3% of a
            # micro-batch-1 step of tiny_cpu.yaml) has no ratio: its measured seconds
            row["unpriced_class_s"] = {k: v for k, v in big.items() if not preset_time.get(k, 0) > 0}
        report["cases"].append(row)
    summary = {}
    bound = [r for r in report["cases"] if r.get("device_bound")]
    for name in preds:
        summary[f"step_time_{name}"] = _summary([r.get(f"{name}_error_pct") for r in report["cases"]])
        if 0 < len(bound) < len(report["cases"]):
            summary[f"step_time_{name}_device_bound"] = _summary([r.get(f"{name}_error_pct") for r in bound])
    ratios: dict[str, list] = {}
    unpriced: dict[str, list] = {}
    for r in report["cases"]:
        for k, v in r.get("class_time_ratio", {}).items():
            ratios.setdefault(k, []).append(v)
        for k, v in r.get("unpriced_class_s", {}).items():
            unpriced.setdefault(k, []).append(v / r["measured_fwd_bwd_s"])
    report["class_time_ratio"] = {k: {"median": float(np.median(v)), "min": min(v), "max": max(v), "cases": len(v)}
                                  for k, v in ratios.items()}
    report["unpriced_classes"] = {k: {"cases": len(v), "max_step_share": max(v)} for k, v in unpriced.items()}
    floor = memory_bound_floor([c.measured.get("classes_s", {}).get("memory_bound") for c in cases],
                               [u["time_s"]["memory_bound"] for u in uncalibrated], [c.model.num_layers for c in cases])
    if floor is not None:
        report["memory_bound_floor"] = floor
    summary["activation_memory"] = _summary([r["activation_error_pct"] for r in report["cases"]])
    summary["peak_memory"] = _summary([r["peak_error_pct"] for r in report["cases"]])
    report["summary"] = {k: {"median_abs_pct": v[0], "max_abs_pct": v[1]} for k, v in summary.items()}
    if args.out:
        atomic_write_json(args.out, report)
    if args.format == "json":
        print(json.dumps(report, indent=1))
    else:
        _print_report(report, preds, console)
    if args.plot:
        _plot(report, preds, args.plot)
    if mismatches:
        for m in mismatches:  # (with --format json, stdout carries the report alone: strict JSON)
            if args.format == "json":
                print(f"FLOPs mismatch {m}", file=sys.stderr)
            else:
                console.print(f"[red]FLOPs mismatch[/red] {m}")
        return 1
    return 0


def runs_report(runs, hw0, scheme=("k", 5), calibration: dict | None = None) -> dict:
    """Per run: measured, predicted with the presets (or a calibration) and held out under ``scheme``;
    a summary of absolute percentage errors. Shared by ``validate --runs`` and the published suite."""
    ho = held_out(runs, hw0, scheme) if scheme is not None and len(runs) > 1 else {}
    rows = []
    for i, r in enumerate(runs):
        hw = r.hardware_with(calibration, hw0) if calibration else r.hardware
        ev = r.evaluate(hw)
        m = r.measured
        row = {"run": r.name, "tags": r.tags, "measured_step_time_s": m["step_time_s"],
               "predicted_step_time_s": ev["step_time_s"], "error_pct": _pct(ev["step_time_s"], m["step_time_s"])}
        if i in ho:
            h = ho[i]
            row["held_out_step_time_s"] = h["predicted_s"]
            row["held_out_error_pct"] = None if h["predicted_s"] is None else _pct(h["predicted_s"], m["step_time_s"])
            if h.get("error"):
                row["held_out_note"] = h["error"]
        if "peak_memory_bytes" in m:
            row["measured_peak_memory_bytes"] = m["peak_memory_bytes"]
            row["predicted_peak_memory_bytes"] = ev["peak_memory_bytes"]
            row["peak_memory_error_pct"] = _pct(ev["peak_memory_bytes"], m["peak_memory_bytes"])
        rows.append(row)
    summary = {"step_time": _summary([r["error_pct"] for r in rows]),
               "step_time_held_out": _summary([r.get("held_out_error_pct") for r in rows]),
               "peak_memory": _summary([r.get("peak_memory_error_pct") for r in rows])}
    return {"runs": rows, "summary": {k: {"median_abs_pct": v[0], "max_abs_pct": v[1]} for k, v in summary.items()}}


def validate_runs_command(args, console) -> int:
    from pathlib import Path

    from .runs import common_hardware, load_runs
    runs, _, meta = load_runs(args.runs)
    preset = args.hardware or common_hardware(runs, args.runs)
    hw0 = _hw0(preset, args.runs)
    cal = None
    if args.calibration:
        cal = load_calibration(args.calibration, expected_hardware=preset, force=args.force).values()
    scheme = parse_scheme(args.cv) if args.cv else (None if cal else ("k", 5))
    report = {"runs_file": args.runs, "hardware_preset": preset, "calibration": args.calibration,
              "cv": args.cv or ("k" if scheme else None), **runs_report(runs, hw0, scheme, cal)}
    if args.out:
        atomic_write_json(args.out, report)
    if args.format == "json":
        print(json.dumps(report, indent=1))
        return 0
    label = "calibrated" if cal else "presets"
    t = Table(title=f"{args.runs}: predicted vs measured step time ({preset})", title_justify="left")
    for col in ("run", "measured", label, "held out", "peak memory"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in report["runs"]:
        t.add_row(r["run"], f"{r['measured_step_time_s']:.4g} s",
                  f"{r['predicted_step_time_s']:.4g} s ({_fmt(r['error_pct'], '%')})",
                  "-" if r.get("held_out_step_time_s") is None else
                  f"{r['held_out_step_time_s']:.4g} s ({_fmt(r['held_out_error_pct'], '%')})",
                  _fmt(r.get("peak_memory_error_pct"), "%"))
    console.print(t)
    for k, v in report["summary"].items():
        if v["median_abs_pct"] is not None:
            console.print(f"{k}: median {v['median_abs_pct']:.1f}%, max {v['max_abs_pct']:.1f}% absolute error")
    return 0


def _fmt(x, unit=""):
    return "-" if x is None else f"{x:+.1f}{unit}"


def _print_report(report, preds, console):
    t = Table(title=f"predicted vs measured on {report['gpu'] or report['device']} (hardware {report['hardware_preset']})",
              title_justify="left")
    t.add_column("case")
    t.add_column("measured", justify="right")
    for name in preds:
        t.add_column(f"{name}", justify="right")
    t.add_column("activations", justify="right")
    t.add_column("peak memory", justify="right")
    for r in report["cases"]:
        t.add_row(r["case"], f"{r['measured_fwd_bwd_s'] * 1e3:.2f} ms",
                  *(f"{r[name + '_fwd_bwd_s'] * 1e3:.2f} ms ({_fmt(r[name + '_error_pct'], '%')})"
                    if name + "_fwd_bwd_s" in r else "-" for name in preds),
                  _fmt(r["activation_error_pct"], "%"), _fmt(r["peak_error_pct"], "%"))
    console.print(t)
    s = Table(title="summary: absolute percentage error", title_justify="left")
    for col in ("quantity", "median", "max"):
        s.add_column(col, justify="left" if col == "quantity" else "right")
    for k, v in report["summary"].items():
        s.add_row(k, "-" if v["median_abs_pct"] is None else f"{v['median_abs_pct']:.2f}%",
                  "-" if v["max_abs_pct"] is None else f"{v['max_abs_pct']:.2f}%")
    s.add_row("FLOPs", "exact" if not report["flops_mismatches"] else "[red]MISMATCH[/red]", "")
    console.print(s)
    if report.get("class_time_ratio"):
        r = Table(title="time per operator class, presets: predicted / measured (classes over 1% of a step)",
                  title_justify="left")
        for col in ("class", "cases", "median", "min", "max"):
            r.add_column(col, justify="left" if col == "class" else "right")
        for k, v in report["class_time_ratio"].items():
            r.add_row(k, str(v["cases"]), f"{v['median']:.3f}", f"{v['min']:.3f}", f"{v['max']:.3f}")
        console.print(r)
    for k, v in report.get("unpriced_classes", {}).items():
        console.print(f"{k}: measured in {v['cases']} case(s) whose presets price none of it (up to "
                      f"{v['max_step_share']:.1%} of a step)", markup=False, highlight=False)
    f = report.get("memory_bound_floor")
    if f:
        console.print(f"memory-bound kernels over {f['cases']} cases: measured = {f['scale']:.3f} x price + "
                      f"{f['floor_per_layer_s'] * 1e6:,.0f} us a layer (median {f['median_abs_pct']:.1f}%, max "
                      f"{f['max_abs_pct']:.1f}%); a scale alone ({f['scale_only']:.3f}): median "
                      f"{f['scale_only_median_abs_pct']:.1f}%, max {f['scale_only_max_abs_pct']:.1f}%"
                      + (f" ({f['note']})" if f["note"] else ""), markup=False, highlight=False)


def memory_bound_floor(measured, priced, layers) -> dict | None:
    """How the memory-bound kernels' measured time departs from the presets' price (bytes over bandwidth):
    least squares of measured = scale x price + floor x layers, beside the scale alone. A fixed cost a
    layer (each kernel's launch and ramp, whatever its size) shows as a floor that a scale cannot mimic
    across micro-batch sizes. None without at least three cases that measured the class."""
    pts = [(m, p, L) for m, p, L in zip(measured, priced, layers) if m is not None and m > 0 and p > 0]
    if len(pts) < 3:
        return None
    m, p, L = (np.array(x, dtype=float) for x in zip(*pts))
    A = np.stack([p, L], axis=1)
    (scale, per_layer), *_ = np.linalg.lstsq(A, m, rcond=None)
    only = float(p @ m / (p @ p))
    two, one = np.abs(A @ [scale, per_layer] / m - 1), np.abs(only * p / m - 1)
    return {"cases": len(pts), "scale": float(scale), "floor_per_layer_s": float(per_layer),
            "median_abs_pct": float(100 * np.median(two)), "max_abs_pct": float(100 * two.max()),
            "scale_only": only, "scale_only_median_abs_pct": float(100 * np.median(one)),
            "scale_only_max_abs_pct": float(100 * one.max()),
            "note": ("a floor per layer and a per-step cost are the same thing when every case has one depth"
                     if len(set(L.tolist())) == 1 else "")}


def _plot(report, preds, path):
    from trsim.cli import require_matplotlib
    from trsim.simulator.fileio import atomic_savefig
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(5, 5))
    meas = [r["measured_fwd_bwd_s"] * 1e3 for r in report["cases"]]
    for name, marker in zip(preds, "os^"):
        xs = [r["measured_fwd_bwd_s"] * 1e3 for r in report["cases"] if name + "_fwd_bwd_s" in r]
        ys = [r[name + "_fwd_bwd_s"] * 1e3 for r in report["cases"] if name + "_fwd_bwd_s" in r]
        ax.scatter(xs, ys, marker=marker, label=name, alpha=0.7)
    lo, hi = min(meas) * 0.8, max(meas) * 1.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured forward+backward (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(f"{report['gpu'] or report['device']}: held-out predictions")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    atomic_savefig(fig, path)
    plt.close(fig)
