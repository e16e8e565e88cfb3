"""``trsim``: the command line. Subcommands: simulate, presets, profile, profile-grid, calibrate, validate."""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from decimal import Decimal

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trsim.simulator.errors import ScenarioError

GiB = 2**30


def _fmt_si(x: float, unit: str) -> str:
    """3 significant figures with an SI prefix: no small number shows as 0.000."""
    for f, p in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= f:
            return f"{x / f:,.3g} {p}{unit}"
    return f"{x:.3g} {unit}"


def _ms(seconds: float, decimals: int = 1, times: float = 1.0) -> str:
    """``seconds`` x ``times`` in milliseconds, digits grouped; finite for every finite time: x 1e3 in float64
    overflows to inf above 1.8e305 s (an input at the top of its range prices that), so such a time is
    scaled as a decimal instead."""
    ms = seconds * times * 1e3
    if not math.isfinite(ms):
        ms = Decimal(seconds) * Decimal(times) * 1000
    return f"{ms:,.{decimals}f}"


def _fmt_bytes(x: float) -> str:
    for f, p in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= f:
            return f"{x / f:,.2f} {p}"
    return f"{x:,.0f} B"


def _fmt_money(x: float) -> str:
    return f"${x:,.0f}"


def _fmt_hours(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:,.1f}"


def print_simulation(res, console: Console, detail: bool = False) -> None:
    title = (f"{esc(res.scenario)}: {esc(res.model)} on {res.num_gpus} x {esc(res.hardware)}"
             + (f"\n[dim]{esc(res.description)}[/dim]" if res.description else ""))
    t = table(title, ("schedule", "FLOPs ratio", "paper formula", "speedup", "step time", "MFU", "peak memory",
                      "GPU-hours", "cost", "saved"), left=("schedule",))
    for s in res.schedules:
        fits = "" if s.step.fits else " [red](OOM)[/red]"
        t.add_row(esc(s.name), f"{s.exact_flops_ratio:.3f}x", f"{s.paper_flops_ratio:.3f}x", f"{s.speedup:.2f}x",
                  f"{_ms(s.step.time_s)} ms", f"{s.step.mfu:.1%}",
                  f"{s.step.peak_memory_bytes / GiB:,.1f} GiB{fits}", _fmt_hours(s.budget.gpu_hours),
                  _fmt_money(s.budget.cost_usd),
                  f"{_fmt_hours(s.budget.gpu_hours_saved)} h / {_fmt_money(s.budget.cost_saved_usd)}")
    console.print(t)
    if detail:
        for s in res.schedules:
            print_detail(s, console)
    for s in res.schedules:
        for w in s.warnings:
            console.print(f"[yellow]warning[/yellow] {esc(s.name)}: {esc(w)}")
    print_recommendation(res, console)
    print_layout(res, console)
    if res.sweep:
        print_sweep(res.sweep, console)
    console.print(calibration_line(res.calibration), markup=False, highlight=False)
    if res.evidence is not None:
        console.print(evidence_line(res.evidence), markup=False, highlight=False)
        band = evidence_band_line(res)
        if band:
            console.print(band, markup=False, highlight=False)


def evidence_line(ev: dict) -> str:
    """How far the uncalibrated preset's step times are from published training runs (validate/published)."""
    if not ev.get("applies", True):
        return f"evidence: none that applies ({ev['why']}); calibrate from your own logged steps: trsim calibrate --runs"
    if not ev.get("runs"):
        return (f"evidence: no published training run is priced on the {ev['preset']} preset; its step times are "
                f"unvalidated (calibrate from your own logged steps: trsim calibrate --runs)")
    per = ", ".join(f"{k} {v['median_abs_pct']:.1f}% ({v['runs']} runs)" for k, v in ev["sources"].items())
    return (f"evidence: the {ev['preset']} preset's step times against published training runs, median absolute "
            f"error by source: {per}; max {ev['max_abs_pct']:.1f}%; {ev['too_fast_fraction']:.0%} of the runs "
            f"predicted too fast (README \"Published-runs validation\")")


def evidence_band_line(res) -> str | None:
    """Each schedule's step time as it would be had the preset erred here as it did on the published runs
    (the 10th to 90th percentile of measured / predicted, each source weighted equally)."""
    ev = res.evidence
    q = ev.get("measured_over_predicted") if ev.get("applies", True) and ev.get("runs") else None
    if not q:
        return None
    spans = ", ".join(f"{s.name} {_ms(s.step.time_s, times=q['p10'])} to {_ms(s.step.time_s, times=q['p90'])} ms"
                      for s in res.schedules)
    return (f"evidence range: measured / predicted on those runs {q['p10']:.2f}x to {q['p90']:.2f}x (10th-90th "
            f"percentile, median {q['p50']:.2f}x, each source weighted equally); erring so here, step times: {spans}. "
            f"GPU-hours and cost scale alike; the runs measured no token reduction, so the schedules' ratios "
            f"to baseline are not covered by them")


def print_layout(res, console: Console) -> None:
    """One line per schedule on the pipeline's stages and on the straggler of task-homogeneous micro-batches."""
    for s in res.schedules:
        par, mix = s.step.parallel, s.step.task_mixing
        if par.get("pipeline", 1) > 1:
            stages = ", ".join(_ms(t) for t in par["stage_time_s"])
            line = (f"{s.name}: pipeline stages {par['layers_per_stage']} layers, micro-batch {stages} ms per stage, "
                    f"imbalance {par['imbalance']:.1%}, bubble {par['bubble_fraction']:.1%}")
            if "min_max_layers_per_stage" in par:
                line += f"; compute-balanced split {par['min_max_layers_per_stage']}"
            if "suggested_layers_per_stage" in par:
                line += (f"; best split {par['suggested_layers_per_stage']}"
                         + (f" ({par['virtual_stages']} chunks each)" if par["virtual_stages"] > 1 else "")
                         + f": step {_ms(par['suggested_step_time_s'])} ms")
            console.print(line, markup=False, highlight=False)
        if mix and abs(mix["homogeneous_step_s"] - mix["ideal_step_s"]) > 0:
            console.print(f"{s.name}: task-homogeneous micro-batches over {par.get('data_parallel', 1)} data-parallel "
                          f"replicas: step {_ms(mix['homogeneous_step_s'])} ms against "
                          f"{_ms(mix['ideal_step_s'])} ms for the ideal mean (straggler loss "
                          f"{mix['straggler_loss']:.1%}; task_mixing: {mix['mode']})", markup=False, highlight=False)


def esc(text) -> str:
    """User text (names, descriptions) is never read as rich markup."""
    return escape(str(text))


_COMPUTE_EXCLUDED = ("optimizer", "communication_exposed", "communication_contention", "communication_total",
                     "pipeline_bubble", "straggler_wait")
# what the step adds after its micro-batches, in the order "how the step time adds up" lists them
_AFTER = (("optimizer", "optimizer step"), ("communication_exposed", "exposed communication"),
          ("communication_contention", "hidden communication's contention"))
_WAITS = (("pipeline_bubble", "pipeline bubble", "warm-up and cool-down of the other stages"),
          ("straggler_wait", "straggler wait", "slowest of the data-parallel replicas' task draws"))


def print_detail(s, console: Console) -> None:
    """Per task: costs of one sample and of one micro-batch; then how the step time adds up."""
    d = table(f"{esc(s.name)}: per task",
              ("task", "tokens / sample", "fwd FLOPs / sample", "LM head share", "matmul / µbatch",
               "attention / µbatch", "memory-bound / µbatch", "gather / µbatch", "overhead / µbatch",
               "host wait / µbatch", "fwd+bwd / µbatch", "activations / µbatch"), left=("task",))
    for name, tr in s.tasks.items():
        tb = tr.time_breakdown_s
        d.add_row(esc(name), f"{tr.tokens:,}", _fmt_si(tr.flops_forward, "FLOP"),
                  f"{tr.lm_head_flops_forward / tr.flops_forward:.0%}" if tr.flops_forward else "-",
                  *(f"{_ms(tb.get(k, 0), 2)} ms" for k in ("matmul", "attention", "memory_bound", "gather",
                                                          "overhead", "host_bound")),
                  f"{_ms(tr.microbatch_time_s, 2)} ms", _fmt_bytes(tr.activation_bytes))
    console.print(d)
    # step = sum over tasks of (its share of the micro-batches x micro-batches per step x its micro-batch time)
    #        + the terms of _AFTER
    bd = s.step.time_breakdown_s
    compute = sum(v for k, v in bd.items() if k not in _COMPUTE_EXCLUDED)
    per_mb = sum(tr.sample_fraction * tr.microbatch_time_s for tr in s.tasks.values())
    n_mb = s.step.parallel.get("micro_batches_per_step") or (compute / per_mb if per_mb else 0.0)
    staged = s.step.parallel.get("pipeline", 1) > 1
    c = table(f"{esc(s.name)}: how the step time adds up", ("term", "how", "time / step", "share"), left=("term", "how"))
    total = s.step.time_s
    for name, tr in s.tasks.items():
        # the task's share first: compute x its micro-batch time overflows where each is large but finite
        part = compute * (tr.sample_fraction * tr.microbatch_time_s / per_mb) if per_mb else 0.0
        c.add_row(f"compute: {esc(name)}", f"{tr.sample_fraction:.0%} of {n_mb:,.0f} micro-batches x "
                  f"{_ms(tr.microbatch_time_s, 2)} ms" + (" (all stages; the slowest stage's share)" if staged
                                                             else ""),
                  f"{_ms(part, 2)} ms", f"{part / total:.1%}")
    for key, label, how in _WAITS:
        if key in bd:
            c.add_row(label, how, f"{_ms(bd[key], 2)} ms", f"{bd[key] / total:.1%}")
            compute += bd[key]
    hows = {"optimizer": "AdamW over memory bandwidth",
            "communication_exposed": f"{_ms(bd.get('communication_total', 0.0), 2)} ms total, the rest hidden "
                                     "behind compute",
            "communication_contention": "SMs the hidden collectives hold while they run"}
    for key, label in _AFTER:
        v = bd.get(key, 0.0)
        if key == "communication_contention" and not v:
            continue
        c.add_row(label, hows[key], f"{_ms(v, 2)} ms", f"{v / total:.1%}")
    rest = total - compute - sum(bd.get(k, 0.0) for k, _ in _AFTER)
    if abs(rest) > 1e-9 * total:
        c.add_row("other", "", f"{_ms(rest, 2)} ms", f"{rest / total:.1%}")
    c.add_row("[bold]step[/bold]", "", f"[bold]{_ms(total, 2)} ms[/bold]", "100.0%")
    console.print(c)
    for name, tr in s.tasks.items():
        rows = "; ".join(f"layers {r['layers']}: " + ", ".join(
            f"{seg} {v['mode']} {v['present']}" for seg, v in r["segments"].items()) for r in tr.plan)
        console.print(f"  {s.name}/{name} plan (tokens present per sample): {rows}", markup=False, highlight=False,
                      soft_wrap=True)


def print_recommendation(res, console: Console) -> None:
    """The fastest reduced schedule among those that fit in memory; never one that does not fit."""
    reduced = [s for s in res.schedules if s.name != "baseline"]
    fitting = [s for s in reduced if s.step.fits]
    best = max(fitting, key=lambda s: s.speedup, default=None)
    if best is not None:
        console.print(f"[bold]{esc(best.name)}[/bold] on {esc(res.model)}: {best.exact_flops_ratio:.2f}x FLOPs, "
                      f"{best.speedup:.2f}x step speedup predicted on {res.num_gpus} x {esc(res.hardware)}, "
                      f"{best.budget.gpu_hours_saved:,.0f} GPU-hours ({_fmt_money(best.budget.cost_saved_usd)}) saved.")
    elif reduced:
        console.print(f"[red]no reduced schedule fits in the memory of one {esc(res.hardware)}[/red]; none is "
                      f"recommended (see the peak memory column)")


def calibration_line(cal: dict | None) -> str:
    """Which calibration produced the step times (every output records it)."""
    if not cal:
        return "calibration: none (the hardware preset's uncalibrated efficiency values)"
    forced = " - FORCED onto other hardware" if cal.get("forced") else ""
    h = cal.get("held_out")
    if h and h.get("median_abs_pct") is not None:
        check = (f"; held out ({h['folds']} folds) median {h['median_abs_pct']:.1f}%, max {h['max_abs_pct']:.1f}% "
                 f"over {h['items']} measurements" + (f", {h['note']}" if h.get("note") else ""))
    elif h:
        check = f"; held out: {h.get('note') or 'not cross-validated'}"
    else:
        check = "; no held-out check recorded in the file"
    return (f"calibration: {cal['file']} (fitted for {cal['hardware_preset']} on {cal.get('gpu') or cal['device']}, "
            f"torch {cal['torch']}, {cal['cases']} cases, {cal['created']}{check}){forced}")


def print_sweep(sw: dict, console: Console, limit: int = 40) -> None:
    fits = sw.get("fits") or [True] * len(sw["values"])
    n_oom = len(fits) - sum(fits)
    t = table(f"sweep of {esc(sw['parameter'])} ({esc(sw['schedule'])}/{esc(sw['task'])}), {len(sw['values'])} points"
              + (f", [red]{n_oom} out of memory[/red]" if n_oom else ""),
              (sw["parameter"], "FLOPs ratio", "paper formula", "speedup", "step time", "MFU", "peak memory",
               "GPU-hours"))
    n = len(sw["values"])
    idx = list(range(n)) if n <= limit else list(range(limit // 2)) + list(range(n - limit // 2, n))
    for j, i in enumerate(idx):
        if n > limit and j == limit // 2:
            t.add_row("...", *[""] * 7)
        oom = "" if fits[i] else " [red](OOM)[/red]"
        t.add_row(f"{sw['values'][i]:g}", f"{sw['exact_flops_ratio'][i]:.3f}x", f"{sw['paper_flops_ratio'][i]:.3f}x",
                  f"{sw['speedup'][i]:.2f}x", f"{_ms(sw['step_time_s'][i])} ms", f"{sw['mfu'][i]:.1%}",
                  f"{sw['peak_memory_bytes'][i] / GiB:,.1f} GiB{oom}", _fmt_hours(sw["gpu_hours"][i]))
    console.print(t)


CSV_COLUMNS = ["schedule", "task", "sweep_parameter", "sweep_value", "tokens", "flops_forward", "flops_backward",
               "lm_head_flops_forward", "microbatch_time_s", "activation_bytes", "step_time_s", "step_flops",
               "flops_ratio", "paper_flops_ratio", "speedup", "peak_memory_bytes", "fits", "mfu", "gpu_hours",
               "cost_usd", "calibration"]


def simulation_csv(res) -> str:
    """One row per schedule and task, then one row per sweep point (per-task columns empty there)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    cal = res.calibration["file"] if res.calibration else ""
    for s in res.schedules:
        for name, tr in s.tasks.items():
            w.writerow(dict(schedule=s.name, task=name, tokens=tr.tokens, flops_forward=tr.flops_forward,
                            flops_backward=tr.flops_backward, lm_head_flops_forward=tr.lm_head_flops_forward,
                            microbatch_time_s=tr.microbatch_time_s, activation_bytes=tr.activation_bytes,
                            step_time_s=s.step.time_s, step_flops=s.step.flops, flops_ratio=s.flops_ratio,
                            paper_flops_ratio=s.paper_flops_ratio, speedup=s.speedup,
                            peak_memory_bytes=s.step.peak_memory_bytes, fits=s.step.fits, mfu=s.step.mfu,
                            gpu_hours=s.budget.gpu_hours, cost_usd=s.budget.cost_usd, calibration=cal))
    sw = res.sweep
    if sw:
        fits = sw.get("fits") or [None] * len(sw["values"])
        for i, v in enumerate(sw["values"]):
            w.writerow(dict(schedule=sw["schedule"], task=sw["task"], sweep_parameter=sw["parameter"], sweep_value=v,
                            step_time_s=sw["step_time_s"][i], flops_ratio=sw["flops_ratio"][i],
                            paper_flops_ratio=sw["paper_flops_ratio"][i], speedup=sw["speedup"][i],
                            peak_memory_bytes=sw["peak_memory_bytes"][i], fits=fits[i], mfu=sw["mfu"][i],
                            gpu_hours=sw["gpu_hours"][i], cost_usd=sw["cost_usd"][i], calibration=cal))
    return buf.getvalue()


def plot_sweep(sw: dict, path: str) -> None:
    from trsim.simulator.fileio import atomic_savefig
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    x = sw["values"]
    ax.plot(x, sw["speedup"], "o-", label="predicted step speedup")
    ax.plot(x, [1 / r if r else float("nan") for r in sw["exact_flops_ratio"]], "s--",
            label="ideal speedup (1 / FLOPs ratio)")
    ax.set_xlabel(sw["parameter"])
    ax.set_ylabel("x baseline")
    ax2 = ax.twinx()
    ax2.plot(x, sw["exact_flops_ratio"], "^:", color="gray", label="FLOPs ratio")
    ax2.set_ylabel("FLOPs ratio")
    ax2.set_ylim(0, max(1.05, max(sw["exact_flops_ratio"]) * 1.05))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="best", fontsize=8)
    ax.set_title(f"{sw['schedule']}/{sw['task']}: sweep of {sw['parameter']}")
    ax.grid(alpha=0.3)
    atomic_savefig(fig, path)
    plt.close(fig)


def require_matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        raise ScenarioError("--plot", "matplotlib", "matplotlib installed (pip install -e '.[plot]')")


def plot_suffixes() -> tuple[str, ...]:
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase
    return tuple(f".{k}" for k in FigureCanvasBase.get_supported_filetypes())


def check_outputs(args, out_suffixes=(".json", ".csv")) -> None:
    """--out and --plot are checked before any work: a run never fails at the end for want of a path."""
    from trsim.simulator.fileio import check_writable
    if getattr(args, "out", None):
        check_writable(args.out, "--out", out_suffixes)
    if getattr(args, "plot", None):
        check_writable(args.plot, "--plot", plot_suffixes())


def check_finite(doc, where: str) -> None:
    """No output ever carries a NaN or an infinity: inputs whose costs overflow float64 are refused."""
    from trsim.simulator.errors import describe
    stack = [(doc, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise ScenarioError(where, path.lstrip(".") or "<results>", f"inputs whose predicted costs are finite "
                                f"numbers, got {describe(v)} (the inputs are beyond what the model can price)")
        if isinstance(v, dict):
            stack.extend((x, f"{path}.{k}") for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, f"{path}.{i}") for i, x in enumerate(v))


def cmd_simulate(args, console: Console) -> int:
    from trsim.simulator.config import load_scenario
    from trsim.simulator.fileio import atomic_write_json, atomic_write_text
    from trsim.simulator.simulate import simulate
    check_outputs(args)
    scn = load_scenario(args.scenario, force_calibration=args.force)
    if args.plot and scn.sweep is None:
        raise ScenarioError(args.scenario, "sweep", "a sweep block, since --plot draws the swept parameter, got none")
    try:
        res = simulate(scn)
    except ScenarioError as err:  # raised while pricing (e.g. a sweep value): the fault is in the scenario
        raise err.located(args.scenario)
    check_finite(res.to_dict(include_sweep=False), args.scenario)
    if not res.sweep_is_finite():
        check_finite(res.to_dict(), args.scenario)  # names the first value that is not finite
    if args.format == "json":
        for piece in res.json_chunks():  # a large sweep is written column by column, never held as text
            sys.stdout.write(piece)
    elif args.format == "csv":
        sys.stdout.write(simulation_csv(res))
    else:
        print_simulation(res, console, detail=args.detail)
    if args.out:
        if args.out.lower().endswith(".csv"):
            atomic_write_text(args.out, simulation_csv(res))
        else:
            atomic_write_text(args.out, res.json_chunks())
    if args.plot:
        plot_sweep(res.sweep, args.plot)
        if args.format == "table":
            console.print(f"plot written to {args.plot}", markup=False, highlight=False)
    return 0


def cmd_presets(args, console: Console) -> int:
    from trsim.simulator.presets import HARDWARE_PRESETS, MODEL_PRESETS
    if args.format == "json":
        print(json.dumps({"models": MODEL_PRESETS, "hardware": HARDWARE_PRESETS}, indent=1))
        return 0
    t = table("model presets (values from each checkpoint's config.json)",
              ("preset", "layers", "hidden", "heads", "kv heads", "head dim", "intermediate", "mlp", "vocab", "tied",
               "source"), left=("preset", "mlp", "source"))
    for name, p in MODEL_PRESETS.items():
        t.add_row(name, str(p["num_layers"]), str(p["hidden_size"]), str(p["num_attention_heads"]),
                  str(p["num_key_value_heads"]), str(p["head_dim"]), str(p["intermediate_size"]), p["mlp"],
                  str(p["vocab_size"]), "yes" if p["tie_word_embeddings"] else "no", p["source"])
    console.print(t)
    h = table("hardware presets (dense bf16 peak, datasheet bandwidth)",
              ("preset", "peak", "memory bandwidth", "memory", "intra-node", "inter-node", "source"),
              left=("preset", "source"))
    for name, p in HARDWARE_PRESETS.items():
        h.add_row(name, _fmt_si(p["peak_flops"], "FLOP/s"), _fmt_si(p["memory_bandwidth"], "B/s"),
                  _fmt_bytes(p["memory_bytes"]), _fmt_si(p["intranode_bandwidth"], "B/s"),
                  _fmt_si(p["internode_bandwidth"], "B/s"), esc(p["source"]))
    console.print(h)
    console.print(efficiency_table())
    return 0


def efficiency_table() -> Table:
    """The values that drive the time model, per hardware preset (uncalibrated until a calibration file is
    applied); one row per parameter a calibration may set, so new time-model terms show up by themselves."""
    from trsim.simulator.calibration import calibratable_parameters
    from trsim.simulator.config import HardwareSpec
    from trsim.simulator.presets import HARDWARE_PRESETS
    specs = {}
    for name, p in HARDWARE_PRESETS.items():
        try:
            specs[name] = HardwareSpec(name=name, **{k: v for k, v in p.items() if k != "source"}).model_dump()
        except Exception:  # noqa: BLE001 - a preset the schema refuses is shown from its raw values
            specs[name] = p
    t = table("efficiency values that drive the time model (uncalibrated preset values; a calibration file "
              "replaces them)", ("parameter", *HARDWARE_PRESETS), left=("parameter",))
    # plus the constants a calibration does not set (the shape-factor caps, the SMs: all and those a collective holds)
    fixed = ("matmul_max_shape_factor", "matmul_max_shape_factor_fp8", "compute_units", "collective_compute_units")
    for param in dict.fromkeys((*calibratable_parameters(), *fixed)):
        t.add_row(param, *(f"{specs[n].get(param):.4g}" if isinstance(specs[n].get(param), (int, float))
                           else "-" for n in HARDWARE_PRESETS))
    return t


def build_parser() -> argparse.ArgumentParser:
    from trsim.args import Parser
    p = Parser(prog="trsim", description="Cost model and on-GPU validation of token-reduction "
                                "schedules for unified vision-language model training.")
    from trsim import __version__
    p.add_argument("--version", action="version", version=f"trsim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="FLOPs, memory, step time and budget of every schedule in a scenario")
    s.add_argument("scenario", help="scenario file (YAML, TOML or JSON)")
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.add_argument("--detail", action="store_true", help="per-task breakdown and the compiled plans")
    s.add_argument("--out", help="also write the results (JSON, or CSV if the name ends in .csv)")
    s.add_argument("--plot", help="PNG of speedup and FLOPs ratio against the swept value (needs a sweep)")
    s.add_argument("--force", action="store_true",
                   help="apply a calibration file fitted for other hardware than the scenario's")
    s.set_defaults(func=cmd_simulate)
    pr = sub.add_parser("presets", help="list model and hardware presets")
    pr.add_argument("--format", choices=("table", "json"), default="table")
    pr.set_defaults(func=cmd_presets)
    for name, module, helptext in (("profile", "trsim.profiler.cli", "run every schedule for real and measure it"),
                                   ("profile-grid", "trsim.profiler.cli",
                                    "profile a scenario at a grid of model sizes (CPU), one results file per size"),
                                   ("calibrate", "trsim.validate.cli", "fit the time model to profiler results"),
                                   ("validate", "trsim.validate.cli", "predicted against measured, with errors")):
        sp = sub.add_parser(name, help=helptext)
        ident = name.replace("-", "_")  # the handler's Python name: cmd_<ident>, add_<ident>_arguments
        sp.set_defaults(lazy=(module, ident))
        _add_lazy_arguments(sp, module, ident)
    return p


def _add_lazy_arguments(sp, module: str, name: str) -> None:
    # argument definitions live beside their commands; importing them pulls in no torch
    import importlib
    mod = importlib.import_module(module)
    getattr(mod, f"add_{name}_arguments")(sp)


def make_console(file=None) -> Console:
    """Rich console for tables. When stdout is not a terminal (a pipe, a file, CI logs) nothing is ever cut to
    fit a width: lines are as long as their content. On a narrow terminal table cells fold onto more lines
    instead of being cut with an ellipsis (see ``table``)."""
    probe = Console(file=file)
    if probe.is_terminal:
        return probe
    return Console(file=file, width=100_000, soft_wrap=True, no_color=True, highlight=False)


def table(title: str, columns, left=()) -> Table:
    """A results table whose cells fold rather than truncate: no number is ever shown with an ellipsis."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right", overflow="fold")
    return t


def main(argv=None) -> int:
    console = make_console()
    err = Console(stderr=True)
    args = build_parser().parse_args(argv)
    try:
        # inputs at the edge of the allowed ranges can overflow a price to inf or nan; every output is
        # checked for finiteness and refused with one error line, so numpy's warnings would only add noise
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if getattr(args, "lazy", None):
                import importlib
                module, name = args.lazy
                return getattr(importlib.import_module(module), f"cmd_{name}")(args, console)
            return args.func(args, console)
    except ScenarioError as exc:
        err.print(f"trsim: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("trsim: interrupted", markup=False)
        return 130
    except BrokenPipeError:  # `trsim ... | head`: the reader left; stop quietly like any Unix tool
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141


if __name__ == "__main__":
    sys.exit(main())
