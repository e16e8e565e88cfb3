"""calibrate and validate: rich tables, JSON, plots. The model lives in the simulator, the fit in fit.py."""
from __future__ import annotations

import json

import numpy as np
from rich.table import Table

from trsim.profiler.schema import load_results
from trsim.simulator.calibration import load_calibration
from trsim.simulator.errors import ScenarioError
from trsim.simulator.fileio import atomic_write_json

from .fit import PARAMS, Case, base_hardware, calibration_document, cases_from_results, fit, hardware_for


def _load(paths):
    loaded = [(p, load_results(p)) for p in paths]
    cases = cases_from_results(loaded)
    if not cases:
        raise ScenarioError(paths[0], "cases", "at least one case with status 'ok'")
    env = loaded[0][1].environment.model_dump()
    return loaded, cases, env


def calibrate_command(args, console) -> int:
    from pathlib import Path
    loaded, cases, env = _load(args.results)
    preset = args.hardware or hardware_for(env.get("gpu"), env.get("device", "cpu"))
    res = fit(cases, base_hardware(preset))
    doc = calibration_document(res, args.results, env, preset)
    atomic_write_json(args.out, doc)
    if args.format == "json":
        print(json.dumps(doc, indent=1))
        return 0
    t = Table(title=f"calibration of {preset} from {len(cases)} cases ({env.get('gpu') or env.get('device')})",
              title_justify="left")
    for col in ("parameter", "value", "std error", "note"):
        t.add_column(col, justify="left" if col in ("parameter", "note") else "right")
    for k in PARAMS:
        t.add_row(k, f"{res.values[k]:.4g}", f"{res.std[k]:.2g}", "at bound" if k in res.at_bound else "")
    console.print(t)
    console.print(f"rms log residual {res.residual_rms:.3f}; written to {args.out} "
                  f"(load it with hardware: {{preset: {preset}, calibration: {Path(args.out)}}})")
    return 0


def _flops_mismatches(cases: list[Case]) -> list[str]:
    """Counted FLOPs against the analytic FLOPs recomputed now from each case's plan."""
    from trsim.profiler.run import analytic_counts
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


def _pct(pred, meas):
    return 100.0 * (pred - meas) / meas


def cross_validate(cases: list[Case], hw0, folds_by: str) -> dict[int, dict]:
    """Predict every case from a fit on the other groups (by schedule or by size); case index -> prediction."""
    key = (lambda c: c.schedule) if folds_by == "schedule" else (lambda c: c.size)
    groups = sorted({key(c) for c in cases})
    if len(groups) < 2:
        return {}
    out = {}
    for g in groups:
        train = [c for c in cases if key(c) != g]
        hw = fit(train, hw0).hardware
        for i, c in enumerate(cases):
            if key(c) == g:
                out[i] = c.predict(hw)
    return out


def _summary(errs):
    a = np.abs(np.asarray([e for e in errs if e is not None and np.isfinite(e)]))
    return (float(np.median(a)), float(a.max())) if a.size else (None, None)


def validate_command(args, console) -> int:
    loaded, cases, env = _load(args.results)
    preset = args.hardware or hardware_for(env.get("gpu"), env.get("device", "cpu"))
    hw0 = base_hardware(preset)
    mismatches = _flops_mismatches(cases)
    report = {"results_files": list(args.results), "hardware_preset": preset, "gpu": env.get("gpu"),
              "device": env.get("device"), "flops_mismatches": mismatches, "cases": []}
    if args.calibration:
        cal = load_calibration(args.calibration, expected_hardware=preset, force=args.force)
        report["calibration"] = cal.summary(args.calibration, forced=args.force and cal.hardware_preset != preset)
        hw = hw0.model_copy(update=cal.values())
        preds = {"calibration": {i: c.predict(hw) for i, c in enumerate(cases)}}
    else:
        preds = {"leave-one-schedule-out": cross_validate(cases, hw0, "schedule"),
                 "leave-one-size-out": cross_validate(cases, hw0, "size")}
    for i, c in enumerate(cases):
        m = c.measured
        row = {"case": c.name, "source": c.source, "measured_fwd_bwd_s": m["fwd_bwd_s"],
               "measured_activation_bytes": m["activation_bytes"], "measured_peak_bytes": m["peak_bytes"]}
        any_pred = next((p[i] for p in preds.values() if i in p), None) or c.predict(hw0)
        row["predicted_activation_bytes"] = any_pred["activation_bytes"]
        row["activation_error_pct"] = _pct(any_pred["activation_bytes"], m["activation_bytes"])
        row["predicted_peak_bytes"] = any_pred["peak_bytes"]
        row["peak_error_pct"] = _pct(any_pred["peak_bytes"], m["peak_bytes"]) if m["peak_bytes"] else None
        for name, p in preds.items():
            if i in p:
                row[f"{name}_fwd_bwd_s"] = p[i]["fwd_bwd_s"]
                row[f"{name}_error_pct"] = _pct(p[i]["fwd_bwd_s"], m["fwd_bwd_s"])
        report["cases"].append(row)
    summary = {}
    for name in preds:
        summary[f"step_time_{name}"] = _summary([r.get(f"{name}_error_pct") for r in report["cases"]])
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
        for m in mismatches:
            console.print(f"[red]FLOPs mismatch[/red] {m}")
        return 1
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
