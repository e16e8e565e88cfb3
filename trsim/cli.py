"""``trsim``: the command line. Subcommands: simulate, presets, profile, calibrate, validate."""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from rich.console import Console
from rich.table import Table

from trsim.simulator.errors import ScenarioError

GiB = 2**30


def _fmt_money(x: float) -> str:
    return f"${x:,.0f}"


def _fmt_hours(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:,.1f}"


def print_simulation(res, console: Console, detail: bool = False) -> None:
    title = (f"{res.scenario}: {res.model} on {res.num_gpus} x {res.hardware}"
             + (f"\n[dim]{res.description}[/dim]" if res.description else ""))
    t = table(title, ("schedule", "FLOPs ratio", "paper formula", "speedup", "step time", "MFU", "peak memory",
                      "GPU-hours", "cost", "saved"), left=("schedule",))
    for s in res.schedules:
        fits = "" if s.step.fits else " [red](OOM)[/red]"
        t.add_row(s.name, f"{s.exact_flops_ratio:.3f}x", f"{s.paper_flops_ratio:.3f}x", f"{s.speedup:.2f}x",
                  f"{s.step.time_s * 1e3:,.1f} ms", f"{s.step.mfu:.1%}",
                  f"{s.step.peak_memory_bytes / GiB:.1f} GiB{fits}", _fmt_hours(s.budget.gpu_hours),
                  _fmt_money(s.budget.cost_usd),
                  f"{_fmt_hours(s.budget.gpu_hours_saved)} h / {_fmt_money(s.budget.cost_saved_usd)}")
    console.print(t)
    if detail:
        for s in res.schedules:
            d = Table(title=f"{s.name}: per task (one sample; time for one micro-batch)", title_justify="left")
            for col in ("task", "tokens", "fwd TFLOPs", "LM head", "matmul", "attention", "memory-bound",
                        "gather", "overhead", "micro-batch", "activations"):
                d.add_column(col, justify="left" if col == "task" else "right")
            for name, tr in s.tasks.items():
                tb = tr.time_breakdown_s
                d.add_row(name, str(tr.tokens), f"{tr.flops_forward / 1e12:.3f}",
                          f"{tr.lm_head_flops_forward / tr.flops_forward:.0%}",
                          *(f"{tb.get(k, 0) * 1e3:.2f} ms" for k in ("matmul", "attention", "memory_bound",
                                                                        "gather", "overhead")),
                          f"{tr.microbatch_time_s * 1e3:.1f} ms", f"{tr.activation_bytes / GiB:.2f} GiB")
            console.print(d)
            for name, tr in s.tasks.items():
                rows = "; ".join(f"layers {r['layers']}: " + ", ".join(
                    f"{seg} {v['mode']}" + ("" if v["mode"] == "full" else "") + f" {v['present']}"
                    for seg, v in r["segments"].items()) for r in tr.plan)
                console.print(f"  [dim]{s.name}/{name} plan: {rows}[/dim]")
    for s in res.schedules:
        for w in s.warnings:
            console.print(f"[yellow]warning[/yellow] {s.name}: {w}")
    best = max((s for s in res.schedules if s.name != "baseline"), key=lambda s: s.speedup, default=None)
    if best is not None:
        console.print(f"[bold]{best.name}[/bold] on {res.model}: {best.exact_flops_ratio:.2f}x FLOPs, "
                      f"{best.speedup:.2f}x step speedup predicted on {res.num_gpus} x {res.hardware}, "
                      f"{best.budget.gpu_hours_saved:,.0f} GPU-hours ({_fmt_money(best.budget.cost_saved_usd)}) saved.")
    if res.sweep:
        print_sweep(res.sweep, console)
    console.print(calibration_line(res.calibration), markup=False, highlight=False)


def calibration_line(cal: dict | None) -> str:
    """Which calibration produced the step times (every output records it)."""
    if not cal:
        return "calibration: none (the hardware preset's uncalibrated efficiency values)"
    forced = " - FORCED onto other hardware" if cal.get("forced") else ""
    return (f"calibration: {cal['file']} (fitted for {cal['hardware_preset']} on {cal.get('gpu') or cal['device']}, "
            f"torch {cal['torch']}, {cal['cases']} cases, {cal['created']}){forced}")


def print_sweep(sw: dict, console: Console, limit: int = 40) -> None:
    t = table(f"sweep of {sw['parameter']} ({sw['schedule']}/{sw['task']}), {len(sw['values'])} points",
              (sw["parameter"], "FLOPs ratio", "paper formula", "speedup", "step time", "MFU", "peak memory",
               "GPU-hours"))
    n = len(sw["values"])
    idx = list(range(n)) if n <= limit else list(range(limit // 2)) + list(range(n - limit // 2, n))
    for j, i in enumerate(idx):
        if n > limit and j == limit // 2:
            t.add_row("...", *[""] * 7)
        t.add_row(f"{sw['values'][i]:g}", f"{sw['exact_flops_ratio'][i]:.3f}x", f"{sw['paper_flops_ratio'][i]:.3f}x",
                  f"{sw['speedup'][i]:.2f}x", f"{sw['step_time_s'][i] * 1e3:,.1f} ms", f"{sw['mfu'][i]:.1%}",
                  f"{sw['peak_memory_bytes'][i] / GiB:.1f} GiB", _fmt_hours(sw["gpu_hours"][i]))
    console.print(t)


def simulation_csv(res) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["schedule", "task", "tokens", "flops_forward", "flops_backward", "lm_head_flops_forward",
                "microbatch_time_s", "activation_bytes", "step_time_s", "step_flops", "flops_ratio",
                "paper_flops_ratio", "speedup", "peak_memory_bytes", "mfu", "gpu_hours", "cost_usd", "calibration"])
    cal = res.calibration["file"] if res.calibration else ""
    for s in res.schedules:
        for name, tr in s.tasks.items():
            w.writerow([s.name, name, tr.tokens, tr.flops_forward, tr.flops_backward, tr.lm_head_flops_forward,
                        tr.microbatch_time_s, tr.activation_bytes, s.step.time_s, s.step.flops, s.flops_ratio,
                        s.paper_flops_ratio, s.speedup, s.step.peak_memory_bytes, s.step.mfu, s.budget.gpu_hours,
                        s.budget.cost_usd, cal])
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


def cmd_simulate(args, console: Console) -> int:
    from trsim.simulator.config import load_scenario
    from trsim.simulator.fileio import atomic_write_json, atomic_write_text
    from trsim.simulator.simulate import simulate
    scn = load_scenario(args.scenario, force_calibration=args.force)
    if args.plot and scn.sweep is None:
        raise ScenarioError(args.scenario, "sweep", "a sweep block, since --plot draws the swept parameter")
    res = simulate(scn)
    if args.format == "json":
        text = json.dumps(res.to_dict(), indent=1)
        print(text)
    elif args.format == "csv":
        text = simulation_csv(res)
        sys.stdout.write(text)
    else:
        print_simulation(res, console, detail=args.detail)
    if args.out:
        if args.out.endswith(".csv"):
            atomic_write_text(args.out, simulation_csv(res))
        else:
            atomic_write_json(args.out, res.to_dict())
    if args.plot:
        plot_sweep(res.sweep, args.plot)
        if args.format == "table":
            console.print(f"plot written to {args.plot}")
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
    h = Table(title="hardware presets (dense bf16 peak, datasheet bandwidth; efficiencies uncalibrated)",
              title_justify="left")
    for col in ("preset", "peak TFLOP/s", "HBM TB/s", "memory GiB", "NVLink GB/s", "network GB/s", "source"):
        h.add_column(col, justify="left" if col in ("preset", "source") else "right")
    for name, p in HARDWARE_PRESETS.items():
        h.add_row(name, f"{p['peak_flops'] / 1e12:,.0f}", f"{p['memory_bandwidth'] / 1e12:.2f}",
                  f"{p['memory_bytes'] / GiB:.0f}", f"{p['intranode_bandwidth'] / 1e9:.0f}",
                  f"{p['internode_bandwidth'] / 1e9:.0f}", p["source"])
    console.print(h)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trsim", description="Cost model and on-GPU validation of token-reduction "
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
                                   ("calibrate", "trsim.validate.cli", "fit the time model to profiler results"),
                                   ("validate", "trsim.validate.cli", "predicted against measured, with errors")):
        sp = sub.add_parser(name, help=helptext)
        sp.set_defaults(lazy=(module, name))
        _add_lazy_arguments(sp, module, name)
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


if __name__ == "__main__":
    sys.exit(main())
