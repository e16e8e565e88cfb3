"""``trsim profile``: arguments here (importable without torch), the work in profiler.run."""
from __future__ import annotations

from trsim.args import device, positive_int, whole_number
from trsim.simulator.errors import ScenarioError


def add_profile_arguments(p) -> None:
    p.add_argument("scenario", help="scenario file whose schedules and tasks are profiled")
    p.add_argument("--device", default="cpu", type=device, help="cuda, cuda:N or cpu (default cpu)")
    p.add_argument("--layers", type=positive_int, help="profile this many layers at the real width, chosen so that every "
                   "distinct kind of layer in the plan is represented (default: all)")
    p.add_argument("--micro-batch", type=positive_int, help="samples per micro-batch (default: the scenario's)")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed steps per case (default 10)")
    p.add_argument("--warmup", type=whole_number, default=3, help="untimed steps first (default 3)")
    p.add_argument("--schedules", help="comma-separated subset of the scenario's schedules")
    p.add_argument("--tasks", help="comma-separated subset of the scenario's tasks")
    p.add_argument("--no-fvcore", action="store_true", help="skip the fvcore counter")
    p.add_argument("--out", help="results JSON, written atomically after every finished case")
    p.add_argument("--resume", action="store_true", help="keep the finished cases of an earlier run in --out "
                   "(ok or out of memory) and profile only the others")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _require_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ScenarioError(command, "torch", "PyTorch installed (pip install -e '.[profile]')")


def cmd_profile(args, console) -> int:
    _require_torch("trsim profile")
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from trsim.simulator.config import load_scenario
    from trsim.simulator.fileio import atomic_write_json

    from trsim.cli import check_outputs

    from .run import profile_scenario
    check_outputs(args, (".json",))
    scn = load_scenario(args.scenario)
    for flag, val in (("--layers", args.layers), ("--micro-batch", args.micro_batch), ("--repeats", args.repeats)):
        if val is not None and val < 1:
            raise ScenarioError("trsim profile", flag, f"a positive whole number, got {val}")
    if args.warmup < 0:
        raise ScenarioError("trsim profile", "--warmup", f"a whole number >= 0, got {args.warmup}")
    schedules = args.schedules.split(",") if args.schedules else None
    tasks = args.tasks.split(",") if args.tasks else None
    for name, chosen, known in (("--schedules", schedules, list(scn.schedules) + ["baseline"]),
                                ("--tasks", tasks, list(scn.tasks))):
        for c in chosen or []:
            if c not in known:
                raise ScenarioError("trsim profile", name, f"names from the scenario ({', '.join(known)}), got {c!r}")
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise ScenarioError("trsim profile", "--device", "a CUDA device, but this torch sees none (use --device cpu)")
    if args.layers:
        from trsim.simulator.plan import compile_schedule, select_layers
        for s in schedules or scn.schedules:
            for t in tasks or scn.tasks:
                try:
                    select_layers(compile_schedule(scn, s, t), args.layers)
                except ValueError as exc:
                    raise ScenarioError("trsim profile", "--layers", f"{exc} ({s}/{t})")
    done = None
    if args.resume:
        done = _resumable_cases(args, scn)
    n = len(schedules or ([*scn.schedules] if "baseline" in scn.schedules else ["baseline", *scn.schedules])) * len(
        tasks or scn.tasks)
    with Progress(TextColumn("[bold]profiling[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.format == "json") as prog:
        bar = prog.add_task(scn.name, total=n)
        doc = profile_scenario(scn, device=args.device, layers=args.layers, micro_batch=args.micro_batch,
                               repeats=args.repeats, warmup=args.warmup, schedules=schedules, tasks=tasks,
                               use_fvcore=not args.no_fvcore, done=done,
                               save=(lambda d: atomic_write_json(args.out, d)) if args.out else None,
                               on_case=lambda c: prog.update(bar, advance=1, description=f"{c['schedule']}/{c['task']}"))
    if args.out:
        atomic_write_json(args.out, doc)
    if args.format == "json":
        print(json.dumps(doc, indent=1))
    else:
        env = doc["environment"]
        t = Table(title=f"{scn.name} on {env['gpu'] or env['device']} ({env['dtype']}, torch {env['torch']})",
                  title_justify="left")
        for col in ("schedule", "task", "layers", "FLOPs counted = analytic", "fwd+bwd", "spread", "optimizer",
                    "activations", "peak", "status"):
            t.add_column(col, justify="left" if col in ("schedule", "task", "status") else "right")
        for c in doc["cases"]:
            tm, mem = c.get("time"), c.get("memory")
            t.add_row(c["schedule"], c["task"], str(len(c["layers"])),
                      {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "-"}[c.get("flops_match")],
                      f"{tm['forward_backward']['median_s'] * 1e3:.2f} ms" if tm else "-",
                      f"±{tm['forward_backward']['iqr_s'] / 2 * 1e3:.2f}" if tm else "-",
                      f"{tm['optimizer']['median_s'] * 1e3:.2f} ms" if tm else "-",
                      f"{mem['activation_saved_bytes'] / 2**20:.1f} MiB" if mem else "-",
                      f"{mem['peak_allocated_bytes'] / 2**30:.2f} GiB" if mem and mem["peak_allocated_bytes"] else "-",
                      c["status"] if c["status"] == "ok" else f"[red]{c['status']}[/red] {c.get('error') or ''}")
        console.print(t)
        if args.out:
            console.print(f"results written to {args.out}")
    if doc["cases"] and all(c["status"] != "ok" for c in doc["cases"]):
        console.print(f"[red]every case failed ({len(doc['cases'])}); nothing was measured[/red]")
        return 1
    if any(c.get("flops_match") is False for c in doc["cases"]):
        console.print("[red]counted FLOPs differ from the simulator's analytic FLOPs: this is a bug[/red]")
        return 1
    return 0


def _resumable_cases(args, scn) -> list[dict]:
    """Finished cases of an earlier run of the same scenario and settings in ``--out`` (none if absent)."""
    from pathlib import Path

    from .schema import load_results
    if not args.out:
        raise ScenarioError("trsim profile", "--resume", "--out naming the results file to resume")
    if not Path(args.out).exists():
        return []
    res = load_results(args.out)
    st = res.settings
    import torch
    mine = dict(device=str(torch.device(args.device)), scenario=scn.name, micro_batch=args.micro_batch or scn.training.micro_batch_size, layers=args.layers,
                repeats=args.repeats, warmup=args.warmup)
    theirs = dict(device=res.environment.device, scenario=res.scenario, micro_batch=st.micro_batch, layers=st.layers, repeats=st.repeats,
                  warmup=st.warmup)
    for k, v in mine.items():
        if theirs[k] != v:
            raise ScenarioError(args.out, {"scenario": "scenario", "device": "environment.device"}.get(k, "settings." + k),
                                f"{v!r} as in this run (to resume it), got {theirs[k]!r}")
    import json
    raw = json.loads(Path(args.out).read_text())["cases"]  # kept byte for byte (validated above)
    return [c for c in raw if c["status"] in ("ok", "oom")]


def add_profile_grid_arguments(p) -> None:
    p.add_argument("grid", help="grid file: a base scenario, the (schedule, task) pairs and the sizes "
                   "(e.g. scenarios/grids/cpu_grid.yaml)")
    p.add_argument("--out-dir", required=True, help="folder for the results files, one per size "
                   "(<grid name>-<size>.json; each written atomically)")
    p.add_argument("--format", choices=("table", "json"), default="table")


def cmd_profile_grid(args, console) -> int:
    _require_torch("trsim profile-grid")
    import json
    from pathlib import Path

    from trsim.simulator.fileio import atomic_write_json

    from .grid import load_grid, profile_grid
    grid = load_grid(args.grid)[0]
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ScenarioError("trsim profile-grid", "--out-dir", f"a folder, got the file {args.out_dir}")
    with console.status(f"profiling {grid.name}: {len(grid.sizes)} sizes x {len(grid.pairs)} cases",
                        spinner="dots") if args.format == "table" else _nothing():
        docs = profile_grid(args.grid)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for size, doc in zip(grid.sizes, docs):
        path = out / f"{grid.name}-{size.label}.json"
        atomic_write_json(path, doc)
        paths.append(str(path))
    cases = [c for d in docs for c in d["cases"]]
    if args.format == "json":
        print(json.dumps({"grid": args.grid, "results_files": paths, "cases": len(cases),
                          "failed": sum(c["status"] != "ok" for c in cases)}, indent=1))
    else:
        for path, doc in zip(paths, docs):
            times = ", ".join(f"{c['schedule']}/{c['task']} {c['time']['forward_backward']['min_s'] * 1e3:.2f} ms"
                              if c["status"] == "ok" else f"{c['schedule']}/{c['task']} [red]{c['status']}[/red]"
                              for c in doc["cases"])
            console.print(f"{path}: {times}")
    if any(c["status"] != "ok" for c in cases) or any(c.get("flops_match") is False for c in cases):
        console.print("[red]some cases failed or counted FLOPs differ from the simulator's[/red]")
        return 1
    return 0


def _nothing():
    from contextlib import nullcontext
    return nullcontext()
