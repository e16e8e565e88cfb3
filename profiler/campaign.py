"""The GPU validation campaign, in chunks that fit a lent machine (10 minutes a command, a few files back).

    python -m trsim.profiler.campaign --budget-s 420 --pack-to "$OUT"          # on the GPU, once per call
    python -m trsim.profiler.campaign --unpack ARCHIVE                         # here, with what came back

Each call profiles the grid's cases still missing from its results folder (default
``validate/data/<gpu>/partial``), one case at a time, and stops before its device-time budget would run
out (each case's time is estimated from the cases of the same kind finished so far, in this call or an
earlier one). Every finished case is written at once, atomically, into its grid point's results file
(``trsim.profile/1``), so a call that is killed loses at most the case it was running; a case that was
started in two calls and never finished (it killed the process) is not tried again and counts as failed.
Once enough cases exist the call also runs ``trsim calibrate`` and ``trsim validate`` on all of them.
It then packs everything into at most three files directly under ``--pack-to``: the results folder as
one tar.gz, a summary JSON and this call's log; prints a short table; and exits non-zero when any case
failed (error, out of memory, killed), any FLOPs count disagrees with the simulator, or a step failed.

Grid. Slices of ``SLICE_LAYERS`` layers at the real width (every layer profiled, no weights), so that
every schedule's plan is distinct: HMGen with 3 and with 5 shallow layers differ, and only the (schedule,
task) pairs a schedule changes are profiled (a schedule that leaves a task alone would repeat the
baseline's plan, and a leave-one-schedule-out fold would keep an identical copy in training). Each case
records ``plan_signature``, the hash of the executed plan, so that folds can group identical plans.
llama-3.2-3b and llama-2-7b widths; 256 and 729 image tokens; micro-batches 1, 2, 4 (and 8 for 3B); plus
a full-depth llama-3.2-3b check at micro-batch 8. ``--dry-run`` runs the same code on the CPU with tiny
widths (the test suite does).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trsim.simulator.errors import ScenarioError
from trsim.simulator.fileio import atomic_write_json, atomic_write_text

SLICE_LAYERS = 12
SCHEDULES = {  # for a SLICE_LAYERS-layer model (the full-depth check uses the first three unchanged)
    "baseline": {},
    "himix": {"understanding": {"method": "himix"}},
    "hmgen-5": {"generation": {"method": "hmgen", "shallow": 5}},
    "hmgen-3": {"generation": {"method": "hmgen", "shallow": 3}},
    "drop": {"understanding": {"method": "drop", "from_layer": 2, "keep": 0.5}},
    "pyramid": {"understanding": {"method": "pyramid", "stages": [[2, 0.5], [5, 0.25], [8, 0.125]]}},
}
FULL_DEPTH_SCHEDULES = ("baseline", "himix", "hmgen-5")
TINY_MODEL = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                  vocab_size=64)
RESERVE_S = 45.0           # kept back from the budget for packing and the summary
ANALYSIS_S, ANALYSIS_S_PER_CASE = 30.0, 3.0   # calibrate + validate (cross-validated): 131 s for 52 cases here
FIRST_CASE_S = 90.0        # estimate for a kind of case never timed (model build, compilation, warm-up)
MAX_ATTEMPTS = 2           # a case started this often without finishing is not started again
PACK_LIMIT_BYTES = 16 * 2**20
PACK_FILES = ("campaign-results.tar.gz", "campaign-summary.json", "campaign.log")


@dataclass(frozen=True)
class Point:
    """One grid point: a model width and depth, image tokens, a micro-batch, and the cases to profile."""
    model: str
    image_tokens: int
    micro_batch: int
    layers: int                     # model depth profiled (SLICE_LAYERS, or the model's own for full depth)
    cases: tuple[tuple[str, str], ...]
    full_depth: bool = False

    @property
    def name(self) -> str:
        depth = "full" if self.full_depth else f"l{self.layers}"
        return f"{self.model}-{depth}-img{self.image_tokens}-b{self.micro_batch}"

    @property
    def kind(self) -> str:
        """Cases of one kind take about the same time (the estimate for the budget)."""
        return f"{self.model}-{'full' if self.full_depth else 'slice'}"


def cases_for(schedules) -> tuple[tuple[str, str], ...]:
    """The baseline on every task, and each other schedule on the tasks it changes."""
    out = [("baseline", "understanding"), ("baseline", "generation")]
    for name in schedules:
        if name != "baseline":
            out += [(name, task) for task in SCHEDULES[name]]
    return tuple(out)


def grid(quick: bool = False, dry_run: bool = False) -> list[Point]:
    slice_cases = cases_for(SCHEDULES)
    if dry_run:
        pts = [Point("tiny", 10, 1, SLICE_LAYERS, slice_cases), Point("tiny", 16, 2, SLICE_LAYERS, slice_cases)]
        return pts + [Point("tiny", 16, 2, 14, cases_for(FULL_DEPTH_SCHEDULES), full_depth=True)]
    if quick:
        return [Point("llama-3.2-3b", 256, 1, SLICE_LAYERS, slice_cases)]
    pts = [Point(m, img, b, SLICE_LAYERS, slice_cases) for m in ("llama-3.2-3b", "llama-2-7b")
           for img in (256, 729) for b in ((1, 2, 4, 8) if m == "llama-3.2-3b" else (1, 2, 4))]
    return pts + [Point("llama-3.2-3b", 729, 8, 28, cases_for(FULL_DEPTH_SCHEDULES), full_depth=True)]


def scenario_doc(p: Point, dry_run: bool = False) -> dict:
    """The scenario a grid point profiles."""
    img, b = p.image_tokens, p.micro_batch
    text = (3, 4, 5) if dry_run else (32, 64, 96)
    model = dict(TINY_MODEL) if dry_run else {"preset": p.model}
    model["num_layers"] = p.layers
    schedules = {k: copy.deepcopy(v) for k, v in SCHEDULES.items() if any(s == k for s, _ in p.cases)}
    return {"name": f"campaign-{p.name}", "model": model,
            "hardware": {"preset": "cpu" if dry_run else "h100-sxm", "num_gpus": 1},
            "training": {"micro_batch_size": b, "global_batch_size": b, "zero_stage": 0},
            "tasks": {"understanding": {"samples": 1, "segments": [
                          {"name": "system", "kind": "text", "tokens": text[0]},
                          {"name": "image", "kind": "image", "tokens": img},
                          {"name": "answer", "kind": "text", "tokens": text[2], "target": True}]},
                      "generation": {"samples": 1, "segments": [
                          {"name": "system", "kind": "text", "tokens": text[0]},
                          {"name": "prompt", "kind": "text", "tokens": text[1]},
                          {"name": "image", "kind": "image", "tokens": img, "target": True}]}},
            "schedules": schedules}


# ------------------------------------------------------------------------------------ state
@dataclass
class State:
    """campaign.json in the results folder: per case, how long it took and how often it was started."""
    path: Path
    cases: dict = field(default_factory=dict)   # "point/schedule/task" -> {"attempts", "wall_s", "status"}
    calls: list = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "State":
        if path.exists():
            doc = json.loads(path.read_text())
            return cls(path, doc.get("cases", {}), doc.get("calls", []))
        return cls(path)

    def save(self) -> None:
        atomic_write_json(self.path, {"cases": self.cases, "calls": self.calls})

    def estimate(self, kind: str) -> float:
        """Seconds a case of this kind is expected to take: the longest finished one of its kind."""
        times = [v["wall_s"] for v in self.cases.values() if v.get("kind") == kind and v.get("wall_s")]
        return max(times) if times else FIRST_CASE_S


class Log:
    """Prints and appends to the results folder's log and this call's log."""

    def __init__(self, *paths: Path):
        self.paths = paths

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        for p in self.paths:
            with open(p, "a") as fh:
                fh.write(line + "\n")


def gpu_slug(device: str) -> str:
    """validate/data/<slug>: h100, h200, a100, ... from the GPU's name; cpu without one."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch
    name = torch.cuda.get_device_name(torch.device(device)).lower()
    m = re.search(r"\b([a-z]\d{2,4})\b", name)
    return m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def _existing(path: Path, env_gpu) -> list[dict]:
    """Cases already in a point's results file (ok or out of memory are final; errors run again)."""
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    if doc.get("environment", {}).get("gpu") != env_gpu:
        raise ScenarioError(str(path), "environment.gpu", f"{env_gpu!r} (this machine; use another --results "
                            f"folder), got {doc.get('environment', {}).get('gpu')!r}")
    return [c for c in doc.get("cases", []) if c.get("status") in ("ok", "oom")]


# -------------------------------------------------------------------------------------- steps
def _trsim(args: list[str], log: Log) -> int:
    """Run one trsim command in a child process (its output goes to the log); its exit code."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="160")
    proc = subprocess.run([sys.executable, "-m", "trsim", *args], capture_output=True, text=True, env=env)
    for line in (proc.stdout + proc.stderr).splitlines():
        log(f"  | {line}")
    return proc.returncode


def analyse(results: Path, files: list[Path], full_depth: Path | None, log: Log) -> dict[str, int]:
    """calibrate and validate over the grid's results files, and the full-depth check with that calibration."""
    steps = {}
    names = [str(f) for f in files]
    # without its own k-fold check (several times the fit): validate, next, holds out by schedule and by
    # size; README's step 5 re-runs calibrate with the check before the file is committed as a calibration
    steps["calibrate"] = _trsim(["calibrate", *names, "--out", str(results / "calibration.json"),
                                 "--held-out-folds", "0"], log)
    steps["validate"] = _trsim(["validate", *names, "--out", str(results / "validation.json"), "--plot",
                                str(results / "validation.png")], log)
    if full_depth is not None and steps["calibrate"] == 0:
        steps["validate-full-depth"] = _trsim(["validate", str(full_depth), "--calibration",
                                               str(results / "calibration.json"), "--out",
                                               str(results / "full-depth-validation.json")], log)
    return steps


def pack(results: Path, out: Path, summary: dict, call_log: Path) -> list[str]:
    """At most three files directly under ``out``: the results folder as a tar.gz, the summary, the log."""
    out.mkdir(parents=True, exist_ok=True)
    tar_path = out / PACK_FILES[0]
    tmp = out / (PACK_FILES[0] + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(results.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                tar.add(p, arcname=str(p.relative_to(results)))
    os.replace(tmp, tar_path)
    atomic_write_json(out / PACK_FILES[1], summary)
    if call_log.resolve() != (out / PACK_FILES[2]).resolve():
        shutil.copyfile(call_log, out / PACK_FILES[2])
    too_big = [p.name for p in out.iterdir() if p.name in PACK_FILES and p.stat().st_size > PACK_LIMIT_BYTES]
    return too_big


def unpack(archive: Path, results: Path) -> list[str]:
    """Extract a packed results folder here (regular files only, nothing outside ``results``)."""
    results.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for m in members:
            dest = (results / m.name).resolve()
            if results.resolve() not in dest.parents:
                raise ScenarioError(str(archive), m.name, "a path inside the results folder, got one outside it")
        tar.extractall(results, members=members, filter="data")
        names = [m.name for m in members]
    return names


# ----------------------------------------------------------------------------------------- main
def run(args) -> int:
    clock = time.monotonic
    t_start = clock()
    device = "cpu" if args.dry_run else args.device
    results = Path(args.results or f"validate/data/{gpu_slug(device)}/partial")
    results.mkdir(parents=True, exist_ok=True)
    call_log = Path(args.pack_to) / PACK_FILES[2] if args.pack_to else results / ".call.log"
    call_log.parent.mkdir(parents=True, exist_ok=True)
    call_log.write_text("")
    log = Log(results / "campaign.log", call_log)

    import torch

    from trsim.simulator.config import load_scenario

    from .run import environment, profile_scenario
    env = environment(torch.device(device), torch.bfloat16 if device.startswith("cuda") else torch.float32)
    state = State.load(results / "campaign.json")
    call_no = len(state.calls) + 1
    log(f"call {call_no}: {env['gpu'] or env['device']}, torch {env['torch']}, CUDA {env['cuda']}, "
        f"budget {args.budget_s:.0f} s, results in {results}")
    repeats, warmup, class_repeats = (2, 0, 2) if args.dry_run else (args.repeats, args.warmup, args.class_repeats)
    points = grid(args.quick, args.dry_run)
    ran, failures, stopped = 0, [], None
    (results / "scenarios").mkdir(exist_ok=True)

    def pack_so_far(when: str) -> None:
        """Pack after every case: a call killed at its time limit still returns what it finished."""
        if args.pack_to:
            pack(results, Path(args.pack_to), {"call": call_no, "in_progress": when, "ran_this_call": ran,
                                               "results": str(results)}, call_log)

    for p in points:
        if stopped:
            break
        scn_path = results / "scenarios" / f"{p.name}.yaml"
        atomic_write_text(scn_path, yaml.safe_dump(scenario_doc(p, args.dry_run), sort_keys=False))
        scn = load_scenario(scn_path)
        res_path = results / f"{p.name}.json"
        done = _existing(res_path, env["gpu"])
        started: dict[tuple, float] = {}

        def stop(s, t, p=p):
            nonlocal stopped
            key = f"{p.name}/{s}/{t}"
            entry = state.cases.setdefault(key, {"kind": p.kind, "attempts": 0})
            elapsed, est = clock() - t_start, state.estimate(p.kind)
            if args.max_cases is not None and ran >= args.max_cases:
                stopped = f"--max-cases {args.max_cases} reached"
            elif elapsed + est + RESERVE_S > args.budget_s:
                stopped = (f"budget: {elapsed:.0f} s used, next case ~{est:.0f} s, {RESERVE_S:.0f} s reserved, "
                           f"of {args.budget_s:.0f} s")
            if stopped:
                return True
            entry["attempts"] += 1
            state.save()  # before running: a call killed now leaves a trace of this attempt
            started[(s, t)] = clock()
            log(f"{key}: start (attempt {entry['attempts']}, ~{est:.0f} s)")
            return False

        def on_case(c, p=p):
            nonlocal ran
            k = (c["schedule"], c["task"])
            if k not in started:
                return
            ran += 1
            key = f"{p.name}/{k[0]}/{k[1]}"
            wall = clock() - started.pop(k)
            state.cases[key].update(wall_s=round(wall, 2), status=c["status"], flops_match=c.get("flops_match"))
            state.save()
            log(f"{key}: {c['status']} in {wall:.1f} s" + (f" ({c.get('error')})" if c.get("error") else "")
                + ("" if c.get("flops_match") is not False else " FLOPs MISMATCH"))
            pack_so_far(f"after {key}")

        finished = {(c["schedule"], c["task"]) for c in done}
        pairs = []  # finished ones are kept as they are; those that killed the process twice are left out
        for k in p.cases:
            if k not in finished and state.cases.get(f"{p.name}/{k[0]}/{k[1]}", {}).get("attempts", 0) >= MAX_ATTEMPTS:
                failures.append(f"{p.name}/{k[0]}/{k[1]}: started {MAX_ATTEMPTS} times and never finished "
                                f"(it killed the process?); not tried again")
            else:
                pairs.append(k)
        if all(k in finished for k in pairs):
            continue
        profile_scenario(scn, device=device, micro_batch=p.micro_batch, repeats=repeats, warmup=warmup,
                         use_fvcore=False, class_repeats=class_repeats, pairs=pairs, done=done,
                         save=lambda d, path=res_path: atomic_write_json(path, d), stop=stop, on_case=on_case)

    # everything on disk now, from this call and earlier ones
    table, n_ok, remaining, abandoned = [], 0, 0, 0
    for p in points:
        path = results / f"{p.name}.json"
        cases = {(c["schedule"], c["task"]): c for c in json.loads(path.read_text())["cases"]} if path.exists() else {}
        for k in p.cases:
            c = cases.get(k)
            if c is None:  # not run yet, or given up on (it killed the process MAX_ATTEMPTS times: a failure)
                if state.cases.get(f"{p.name}/{k[0]}/{k[1]}", {}).get("attempts", 0) >= MAX_ATTEMPTS:
                    abandoned += 1
                else:
                    remaining += 1
                continue
            tm = c.get("time")
            table.append({"point": p.name, "schedule": k[0], "task": k[1], "status": c["status"],
                          "flops_match": c.get("flops_match"), "plan_signature": c.get("plan_signature"),
                          "fwd_bwd_ms": round(tm["forward_backward"]["median_s"] * 1e3, 3) if tm else None,
                          "spread_ms": round(tm["forward_backward"]["iqr_s"] * 1e3, 3) if tm else None})
            if c["status"] != "ok":
                failures.append(f"{p.name}/{k[0]}/{k[1]}: {c['status']}: {c.get('error') or ''}")
            elif c.get("flops_match") is False:
                failures.append(f"{p.name}/{k[0]}/{k[1]}: counted FLOPs differ from the simulator's")
            else:
                n_ok += 1
    failures = sorted(set(failures))
    steps: dict[str, int] = {}
    pack_so_far("profiling done; calibrate/validate next")
    grid_files = [results / f"{p.name}.json" for p in points if not p.full_depth and (results / f"{p.name}.json").exists()]
    full = [results / f"{p.name}.json" for p in points if p.full_depth and (results / f"{p.name}.json").exists()]
    # calibrate and validate need no GPU: on the device they run only once the grid is complete and the
    # budget still holds them (about ANALYSIS_S_PER_CASE a case; the first H200 call, 2026-11-27, was killed
    # at its time limit in validate); otherwise the log says how to run them on any machine afterwards
    need = ANALYSIS_S + ANALYSIS_S_PER_CASE * n_ok
    later = (f"trsim calibrate {results}/<point>.json ... --out calibration.json; trsim validate "
             f"{results}/<point>.json ... (no GPU needed)")
    if n_ok < args.calibrate_min_cases or len(grid_files) < 2:
        log(f"calibrate/validate wait for {args.calibrate_min_cases} finished cases over 2 grid points (have {n_ok})")
    elif remaining:
        log(f"calibrate/validate not run on the device while {remaining} cases remain; meanwhile: {later}")
    elif clock() - t_start + need > args.budget_s:
        log(f"calibrate/validate skipped: about {need:.0f} s needed, {args.budget_s - (clock() - t_start):.0f} s "
            f"of the budget left; run them here: {later}")
    else:
        steps = analyse(results, grid_files, full[0] if full else None, log)
    failures += [f"step {k}: exit code {v}" for k, v in steps.items() if v != 0]
    validation = None
    if (results / "validation.json").exists() and steps.get("validate") is not None:
        validation = json.loads((results / "validation.json").read_text()).get("summary")
    state.calls.append({"call": call_no, "gpu": env["gpu"], "device": env["device"], "torch": env["torch"],
                        "cuda": env["cuda"], "ran": ran, "elapsed_s": round(clock() - t_start, 1),
                        "stopped": stopped})
    state.save()
    summary = {"call": call_no, "environment": env, "results": str(results), "budget_s": args.budget_s,
               "elapsed_s": round(clock() - t_start, 1), "ran_this_call": ran, "finished": len(table),
               "remaining": remaining, "abandoned": abandoned, "complete": remaining == 0, "stopped": stopped,
               "failures": failures,
               "steps": steps, "validation_summary": validation, "cases": table}
    _print_table(summary, log)
    if args.pack_to:
        too_big = pack(results, Path(args.pack_to), summary, call_log)
        if too_big:
            failures.append(f"packed files over {PACK_LIMIT_BYTES >> 20} MiB: {', '.join(too_big)}")
            summary["failures"] = failures
            atomic_write_json(Path(args.pack_to) / PACK_FILES[1], summary)
        log(f"packed into {args.pack_to}: {', '.join(PACK_FILES)}")
    return 1 if failures else 0


def _print_table(summary: dict, log: Log) -> None:
    log(f"{'point':<34} {'schedule':<9} {'task':<13} {'status':<6} {'FLOPs':<5} {'fwd+bwd ms':>11} {'±':>7}")
    for r in summary["cases"]:
        flops = {True: "ok", False: "NO", None: "-"}[r["flops_match"]]
        ms = "-" if r["fwd_bwd_ms"] is None else f"{r['fwd_bwd_ms']:.2f}"
        sp = "-" if r["spread_ms"] is None else f"{r['spread_ms'] / 2:.2f}"
        log(f"{r['point']:<34} {r['schedule']:<9} {r['task']:<13} {r['status']:<6} {flops:<5} {ms:>11} {sp:>7}")
    log(f"finished {summary['finished']}, ran now {summary['ran_this_call']}, remaining {summary['remaining']}"
        + (f" (stopped: {summary['stopped']}; run again)" if summary["remaining"] else " (grid complete)")
        + f"; {summary['elapsed_s']:.0f} s of {summary['budget_s']:.0f} s")
    if summary["validation_summary"]:
        for k, v in summary["validation_summary"].items():
            if v.get("median_abs_pct") is not None:
                log(f"validation {k}: median |error| {v['median_abs_pct']:.1f}%, max {v['max_abs_pct']:.1f}%")
    for f in summary["failures"]:
        log(f"FAILED {f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", help="results folder (default validate/data/<gpu>/partial)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="device seconds this call may use (default 420)")
    ap.add_argument("--pack-to", help="folder that gets the three packed files (on a lent machine: $OUT)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="one small grid point, to check the set-up")
    ap.add_argument("--dry-run", action="store_true", help="tiny widths on the CPU: the same code paths, in seconds")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per case (default 10)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--class-repeats", type=int, default=5, help="profiled steps for per-class times (default 5)")
    ap.add_argument("--max-cases", type=int, help="stop after this many cases in this call")
    ap.add_argument("--calibrate-min-cases", type=int, default=14,
                    help="finished cases (over at least two grid points) before calibrate/validate run")
    ap.add_argument("--unpack", metavar="ARCHIVE", help="extract a packed results archive into --results and stop")
    args = ap.parse_args(argv)
    try:
        return _main(args, ap)
    except ScenarioError as exc:
        print(f"trsim: error: {exc}", file=sys.stderr)
        return 2


def _main(args, ap) -> int:
    if args.unpack:
        if not args.results:
            ap.error("--unpack needs --results (the folder the archive came from, e.g. validate/data/h100/partial)")
        names = unpack(Path(args.unpack), Path(args.results))
        print(f"unpacked {len(names)} files into {args.results}")
        return 0
    return run(args)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
