"""Profile every schedule and task of a scenario: build the pruned decoder from the simulator's plan,
count its FLOPs twice, time it, and measure its memory."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys

import numpy as np
import torch

from trsim.simulator import costs
from trsim.simulator.costs import analytic_counts  # noqa: F401  (re-exported: the counters' analytic side)
from trsim.simulator.config import Scenario
from trsim.simulator.plan import compile_schedule, select_layers

from .flops import count_flop_counter, count_fvcore, flex_masks_match
from .measure import class_times, saved_activation_bytes, step_clock, step_peak, time_steps
from .model import Decoder, init_weights
from .schema import SCHEMA, ProfileResults


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    gpu = driver = None
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        try:
            import subprocess
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - best effort
            driver = None
    return dict(torch=torch.__version__, cuda=torch.version.cuda, driver=driver, gpu=gpu, device=str(device),
                dtype=str(dtype).replace("torch.", ""), python=sys.version.split()[0], platform=platform.platform(),
                cpu_threads=torch.get_num_threads(), cpu=cpu_name())


def cpu_name() -> str:
    """The host CPU's model name and the vector ISA torch's CPU kernels dispatch to (e.g. "AMD EPYC
    (AVX512)"): CPU timings differ by both, so a results file names them."""
    name = None
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    name = name or platform.processor() or None
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch
        isa = None
    return f"{name or 'unknown'} ({isa})" if isa else (name or "unknown")


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def build_case(scn: Scenario, schedule: str, task: str, *, device, dtype, layers, micro_batch,
               use_fvcore: bool = True, count: bool = True, attention: str = "auto"):
    """Build one case's pruned decoder and batch, count its FLOPs and measure its saved activations.
    Returns the case record (status, plan, FLOPs, memory so far) and what timing it needs: (model, ids,
    labels, optimizer), or None where building failed (the record then says why)."""
    spec = scn.model
    conv = scn.conventions
    full = compile_schedule(scn, schedule, task)
    idx, weights = select_layers(full, layers if layers else full.num_layers)
    plan = full.rows(idx)
    case = dict(schedule=schedule, task=task, status="ok", micro_batch=micro_batch, layers=[int(i) for i in idx],
                layer_weights=[float(w) for w in weights], plan=plan.to_dict(), plan_signature=plan.signature())
    try:
        torch.manual_seed(0)
        with torch.device(device):  # parameters are created and initialised where they run
            model = Decoder(spec, plan, lm_head=conv.lm_head, attention=attention)
        init_weights(model)
        model.to(device=device, dtype=dtype)
        model.build_io(device, dtype)
        gen = torch.Generator(device=device).manual_seed(1)
        ids, labels = model.make_batch(micro_batch, device, generator=gen)
        if count:
            analytic = analytic_counts(plan, spec, micro_batch, conv.attention, conv.lm_head)
            fc = count_flop_counter(model, ids, labels, conv.attention)
            flops = {"analytic": analytic, "flop_counter": fc}
            if use_fvcore:
                flops["fvcore"] = count_fvcore(model, ids, labels, conv.attention)
            case["flops"] = flops
            case["flops_match"] = all(
                v["per_layer_forward"] == analytic["per_layer_forward"]
                and v["lm_head_forward"] == analytic["lm_head_forward"] and v["forward"] == analytic["forward"]
                and (v.get("backward") is None or v["backward"] == analytic["backward"])
                for k, v in flops.items() if k != "analytic")
        params = sum(p.numel() for p in model.parameters())
        act = saved_activation_bytes(model, ids, labels)
        case["attention_backend"] = model.backend(device)
        if count and case["attention_backend"] == "flex":  # the counters ran SDPA; the flex masks must agree
            case["flex_mask_match"] = flex_masks_match(model)
            case["flops_match"] = case["flops_match"] and case["flex_mask_match"]
        # multi-tensor AdamW on every device (torch picks it on CUDA by default, a per-parameter loop on the
        # CPU): the optimizer step then allocates the same temporaries wherever the executor runs
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
        case["memory"] = dict(activation_saved_bytes=int(act), peak_allocated_bytes=None, static_bytes=None,
                              parameters=int(params))
        return case, (model, ids, labels, opt)
    except Exception as exc:  # noqa: BLE001 - a failed case is recorded, the campaign goes on
        fail_case(case, exc, device)
        return case, None


def fail_case(case: dict, exc: BaseException, device) -> None:
    case["status"] = "oom" if _is_oom(exc) else "error"
    case["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    case.pop("memory", None)
    case.pop("time", None)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def profile_case(scn: Scenario, schedule: str, task: str, *, device, dtype, layers, micro_batch, repeats, warmup,
                 use_fvcore: bool = True, count: bool = True, class_repeats: int = 5, attention: str = "auto") -> dict:
    case, bench = build_case(scn, schedule, task, device=device, dtype=dtype, layers=layers, micro_batch=micro_batch,
                             use_fvcore=use_fvcore, count=count, attention=attention)
    if bench is None:
        return case
    model, ids, labels, opt = bench
    try:
        measured = step_peak(model, ids, labels, opt)
        if measured is not None:
            case["memory"].update(static_bytes=measured[0], peak_allocated_bytes=measured[1])
        timing = time_steps(model, ids, labels, opt, repeats=repeats, warmup=warmup)
        timing.update(class_times(model, ids, labels, repeats=class_repeats))
        case["time"] = timing
    except Exception as exc:  # noqa: BLE001 - a failed case is recorded, the campaign goes on
        fail_case(case, exc, device)
    finally:
        del model, bench
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return case


def case_key(case: dict) -> tuple[str, str]:
    return case["schedule"], case["task"]


def scenario_cases(scn: Scenario, schedules=None, tasks=None) -> list[tuple[str, str]]:
    """The (schedule, task) pairs a run profiles: baseline first unless a subset is named."""
    names = schedules or list(scn.schedules) or ["baseline"]
    if "baseline" not in names and schedules is None:
        names = ["baseline"] + names
    return [(s, t) for s in names for t in (tasks or scn.tasks)]


def results_document(scn: Scenario, dev, dtype, *, micro_batch, repeats, warmup, layers, cases,
                     clock: str | None = None, statistic: str = "median") -> dict:
    """A results file around ``cases`` (complete or not), checked against the schema."""
    e = 2 if dtype == torch.bfloat16 else 4
    doc = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "scenario": scn.name, "scenario_file": scn.source, "model": scn.model.model_dump(),
           "environment": environment(dev, dtype),
           "settings": dict(micro_batch=micro_batch, repeats=repeats, warmup=warmup, layers=layers,
                            attention=scn.conventions.attention, lm_head=scn.conventions.lm_head,
                            weight_bytes=e, gradient_bytes=e, optimizer_bytes=2 * e, activation_bytes=e,
                            clock=clock or step_clock(dev)[0], statistic=statistic),
           "cases": list(cases)}
    ProfileResults(schema_=SCHEMA, **{k: v for k, v in doc.items() if k != "schema"})  # schema check
    return doc


def profile_scenario(scn: Scenario, *, device: str = "cpu", layers=None, micro_batch=None, repeats: int = 10,
                     warmup: int = 3, schedules=None, tasks=None, use_fvcore: bool = True, on_case=None,
                     done: list[dict] | None = None, save=None, class_repeats: int = 5,
                     attention: str = "auto", pairs=None, stop=None) -> dict:
    """Profile every (schedule, task) pair (or the given ``pairs``); cases in ``done`` (from an earlier,
    interrupted run) are kept and not run again. After each finished case ``save(doc)`` gets the document
    so far, so that a run killed later loses nothing it finished. ``stop(schedule, task)``, asked before
    each case still to run, ends the run early (the document then holds the cases finished)."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    B = micro_batch or scn.training.micro_batch_size
    pairs = [tuple(p) for p in pairs] if pairs is not None else scenario_cases(scn, schedules, tasks)
    kept = {case_key(c): c for c in (done or [])}
    order = pairs + [k for k in kept if k not in pairs]  # finished cases are never dropped from the file
    cases: dict[tuple[str, str], dict] = {k: c for k, c in kept.items() if k not in pairs}

    def document():
        return results_document(scn, dev, dtype, micro_batch=B, repeats=repeats, warmup=warmup, layers=layers,
                                cases=[cases[p] for p in order if p in cases])
    for s, t in pairs:
        if (s, t) in kept:
            cases[(s, t)] = kept[(s, t)]
        elif stop is not None and stop(s, t):
            break
        else:
            cases[(s, t)] = profile_case(scn, s, t, device=dev, dtype=dtype, layers=layers, micro_batch=B,
                                         repeats=repeats, warmup=warmup, use_fvcore=use_fvcore,
                                         class_repeats=class_repeats, attention=attention)
            if save:
                save(document())
        if on_case:
            on_case(cases[(s, t)])
    return document()
