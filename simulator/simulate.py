"""Scenario in, comparison against the baseline out. One vectorised evaluator serves single
schedules (P = 1) and sweeps (P = number of sweep points)."""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import collectives, costs, memory, mixing, parallel
from .config import Scenario
from .errors import ScenarioError
from .config import HardwareSpec, ModelSpec  # noqa: F401  (annotations)
from .plan import Layout, Plan, check_hmgen_count, compile_points

BASELINE = "baseline"


@dataclass
class TaskResult:
    tokens: int
    flops_forward: float
    flops_backward: float
    per_layer_flops_forward: list[float]
    lm_head_flops_forward: float
    flops_by_op: dict[str, float]
    paper_cost: float
    microbatch_time_s: float
    time_breakdown_s: dict[str, float]
    activation_bytes: float
    sample_fraction: float
    plan: list[dict]
    warnings: list[str]


@dataclass
class StepResult:
    flops: float            # model FLOPs per optimizer step (global batch, forward + backward)
    hardware_flops: float   # plus the recomputed forward under activation checkpointing
    time_s: float
    peak_memory_bytes: float
    mfu: float              # model FLOPs / (time x GPUs x peak)
    hfu: float
    fits: bool
    memory_breakdown_bytes: dict[str, float]
    time_breakdown_s: dict[str, float]
    parallel: dict = field(default_factory=dict)     # layout, per-stage times and memory, bubble, better split
    task_mixing: dict = field(default_factory=dict)  # ideal mean vs task-homogeneous micro-batches (straggler)


@dataclass
class Budget:
    steps: int
    gpu_hours: float
    cost_usd: float
    wall_days: float
    gpu_hours_saved: float = 0.0
    cost_saved_usd: float = 0.0


@dataclass
class ScheduleResult:
    name: str
    tasks: dict[str, TaskResult]
    step: StepResult
    flops_ratio: float
    exact_flops_ratio: float
    paper_flops_ratio: float
    speedup: float
    budget: Budget
    parameters: float
    warnings: list[str]


@dataclass
class SimulationResult:
    scenario: str
    description: str
    model: str
    hardware: str
    num_gpus: int
    cost_model: str
    schedules: list[ScheduleResult]
    sweep: dict | None = None
    calibration: dict | None = None   # the calibration file applied (None: the preset's uncalibrated values)
    # uncalibrated: how far this hardware preset's step times are from the published training runs priced
    # on it (validate/published/evidence.json); None once a calibration is applied
    evidence: dict | None = None

    def to_dict(self, include_sweep: bool = True) -> dict:
        doc = asdict(replace(self, sweep=None))
        if self.sweep is not None and include_sweep:
            doc["sweep"] = {k: (list(v) if isinstance(v, list) else v) for k, v in self.sweep.items()}
        return doc

    def json_chunks(self, chunk: int = 65536):
        """The JSON of ``to_dict()``, written piece by piece: the sweep's columns are encoded ``chunk`` values
        at a time, so a million-point sweep is never held as one text nor copied."""
        mark = '"__trsim_sweep_columns__"'
        head = json.dumps(asdict(replace(self, sweep=None if self.sweep is None else mark[1:-1])), indent=1,
                          allow_nan=False)
        if self.sweep is None:
            yield head + "\n"
            return
        before, after = head.split(mark)
        yield before + "{"
        for i, (k, v) in enumerate(self.sweep.items()):
            yield ("" if i == 0 else ", ") + json.dumps(k) + ": "
            if not isinstance(v, list):
                yield json.dumps(v, allow_nan=False)
                continue
            yield "["
            for a in range(0, len(v), chunk):
                yield ("" if a == 0 else ", ") + json.dumps(v[a:a + chunk], allow_nan=False)[1:-1]
            yield "]"
        yield "}" + after + "\n"

    def sweep_is_finite(self) -> bool:
        return self.sweep is None or all(np.isfinite(np.asarray(v, dtype=float)).all()
                                         for v in self.sweep.values() if isinstance(v, list))


@functools.lru_cache(maxsize=1)
def _evidence_doc() -> dict | None:
    """The published-runs evidence shipped with trsim (written by validate/suite.py); None if unreadable."""
    from importlib import resources
    try:
        return json.loads(resources.files("trsim.validate").joinpath("published/evidence.json").read_text())
    except (OSError, ValueError, ModuleNotFoundError):
        return None


def published_evidence(preset: str | None, overrides=()) -> dict:
    """What the published runs say about an uncalibrated hardware preset's step times: runs, per-source and
    pooled median / max absolute and signed median percentage errors (``runs`` 0: no published run uses it).
    ``applies`` is false, with ``why``, for custom hardware, for time-model fields the scenario sets over
    the preset (``overrides``), and where the evidence file is missing from the installation."""
    doc = _evidence_doc()
    base = {"preset": preset, "applies": True, "runs": 0, "sources": {}}
    if preset is None:
        return {**base, "applies": False, "why": "custom hardware: no preset, so no published run vouches for it"}
    if doc is None:
        return {**base, "applies": False, "why": "the evidence file (trsim/validate/published/evidence.json) is "
                                                 "missing from this installation"}
    out = {**base, **doc.get("presets", {}).get(preset, {}), "created": doc.get("created"),
           "written_by": doc.get("written_by")}
    if overrides:
        out.update(applies=False, why=f"the scenario sets {', '.join(overrides)} over the preset, so the preset's "
                                      f"published-run errors do not describe it")
    return out


def _fractions(scn: Scenario) -> dict[str, float]:
    total = sum(t.samples for t in scn.tasks.values())
    if total == 0:
        return {n: 1 / len(scn.tasks) for n in scn.tasks}
    return {n: t.samples / total for n, t in scn.tasks.items()}


def evaluate(scn: Scenario, plans: dict[str, Plan]) -> dict:
    """Every step-level metric for a schedule given as one plan per task; arrays of shape [P]
    (per pipeline stage [P, p] where named so).

    The step: each task's micro-batch is priced per pipeline stage from the plan rows of that stage's
    layers (``costs.stage_times`` plus the tensor-, context- and pipeline-parallel traffic); the tasks'
    micro-batches share the pipeline as ``training.task_mixing`` says (``mixing.py``); the step adds the
    optimizer and the exposed data-parallel traffic of its slowest stage. With one GPU per replica
    (tensor = pipeline = context = 1) every number is the unsplit model's, to the last bit.
    """
    m, hw, tr, conv, par = scn.model, scn.hardware, scn.training, scn.conventions, scn.parallelism
    B, e = tr.micro_batch_size, tr.activation_bytes
    frac = _fractions(scn)
    M, dp = scn.grad_accumulation, scn.data_parallel
    st = parallel.stage_layout(par, m.num_layers)
    p, v = par.pipeline, par.virtual_stages
    last = np.arange(p) == p - 1
    shard = parallel.Shard.of(par, tr.precision)
    hidden_dropout = costs.Dropout.of(tr).hidden  # its masks are kept for backward
    gathers = "per_layer" if tr.stack == "trsim" else "on_change"
    inflight = parallel.in_flight(p, v, M)
    params = costs.base_parameters(m) + costs.extra_parameters(list(plans.values()), m)
    rank_params = memory.stage_parameters(m, list(plans.values()), st, par.tensor)  # [P, p]
    out: dict = {"tasks": {}, "params": params}
    model_flops = paper = 0.0
    stage_mean = 0.0
    act_peak = 0.0
    recompute_flops = 0.0
    breakdown: dict[str, np.ndarray] = {}
    per_task_stage = []
    for name, plan in plans.items():
        c = costs.counts(plan, conv.lm_head)
        ops = costs.op_flops(c, m, conv.attention)
        w = c.weights
        per_layer = sum(ops.values()) * w
        lm = costs.lm_head_flops(c, m)
        fwd = per_layer.sum(-1) + lm
        bwd = 2 * (fwd - (ops["rank"] * w).sum(-1))  # token ranking is not differentiated
        t = _stage_times(c, m, hw, tr, shard, st, last, gathers, dp)
        stage_t = sum(t.values())  # [P, p]
        acts = memory.activation_terms(tr.stack, c, m, e, shard, B, hidden_dropout)
        act = memory.stage_activation_bytes(acts, w, B, tr.recompute, st, last, inflight)
        transient = np.where(last, B * acts.transient, 0)
        pc = (costs.paper_layer_cost(c, m) * w).sum(-1)
        out["tasks"][name] = dict(counts=c, ops=ops, per_layer=per_layer, lm=lm, fwd=fwd, bwd=bwd,
                                  time={k: _per_microbatch(x) for k, x in t.items()}, stage_time=stage_t,
                                  t_mb=_per_microbatch(stage_t), act=_per_microbatch_max(act),
                                  transient=transient, paper=pc)
        f = frac[name]
        model_flops = model_flops + f * (fwd + bwd)
        paper = paper + f * pc
        stage_mean = stage_mean + f * stage_t
        per_task_stage.append((t, stage_t, f, acts, c))
        if tr.task_mixing != "mixed":
            act_peak = np.maximum(act_peak, act + transient)
        if tr.recompute == "full":  # the layers' forward again; the LM head is outside the checkpoints
            recompute_flops = recompute_flops + f * per_layer.sum(-1)
        elif tr.recompute == "selective":
            recompute_flops = recompute_flops + f * (ops["attention"] * w).sum(-1)
    fr = [frac[n] for n in plans]
    if tr.task_mixing == "mixed":
        c = mixing.packed_counts([x[4] for x in per_task_stage], fr)
        t = _stage_times(c, m, hw, tr, shard, st, last, gathers, dp)
        stage_mean = sum(t.values())
        acts = memory.activation_terms(tr.stack, c, m, e, shard, B, hidden_dropout)
        act_peak = (memory.stage_activation_bytes(acts, c.weights, B, tr.recompute, st, last, inflight)
                    + np.where(last, B * acts.transient, 0))
        components = t
    else:
        components = {}
        for t, _, f, _, _ in per_task_stage:
            for k, x in t.items():
                components[k] = components.get(k, 0.0) + f * x
    ideal = parallel.pipeline_time(stage_mean, M, v)
    homogeneous = mixing.homogeneous_step([x[1] for x in per_task_stage], fr, M, dp, v) if len(plans) > 1 else ideal
    # the slowest replica's draw never beats the mean: where no draw waits they are equal up to rounding
    # (which printed a straggler wait of -0.00 ms); a larger shortfall would be a bug, left visible
    homogeneous = np.where((homogeneous < ideal) & (ideal - homogeneous <= 1e-9 * np.abs(ideal)), ideal, homogeneous)
    pipe = homogeneous if tr.task_mixing == "homogeneous" else ideal
    slow = np.argmax(stage_mean, axis=-1)[..., None]  # the stage that sets the pace
    for k, x in components.items():
        breakdown[k] = np.take_along_axis(np.broadcast_to(x, stage_mean.shape), slow, -1)[..., 0] * M
    if p > 1:
        breakdown["pipeline_bubble"] = ideal - M * stage_mean.max(-1)
    if tr.task_mixing == "homogeneous":
        breakdown["straggler_wait"] = pipe - ideal

    G = tr.global_batch_size
    step_model_flops = G * model_flops
    recompute = G * recompute_flops
    # context-parallel ranks hold the same weights: gradients are reduced, and ZeRO shards, over data x context
    # ranks (Megatron-Core's data-parallel-with-context group); with context = 1 that is the data-parallel size
    shards = dp * par.context
    opt = costs.optimizer_time(rank_params, tr, hw, shards)  # [P, p]
    span = dp * par.tensor * par.context
    compute = np.broadcast_to(stage_mean, rank_params.shape)
    # one micro-batch's forward is a third of its work without recompute; its backward is the rest, the
    # recomputed forward included (it runs inside backward)
    forward = (compute - components.get("recompute", 0.0)) / 3
    comm_total, comm_exposed = collectives.data_parallel_time(
        rank_params, tr, hw, shards, span, stack=tr.stack, backward_window=compute - forward,
        forward_window=forward, micro_batches=M, layers=np.maximum(1, np.asarray(st.layers_per_stage())))
    # the traffic that hides behind compute still holds some of the GPU's SMs while it runs
    comm_contention = collectives.contention(comm_total - comm_exposed, hw)
    after = opt + comm_exposed + comm_contention
    tail = np.argmax(after, axis=-1)[..., None]  # the stage whose step ends last
    pick = lambda x: np.take_along_axis(np.broadcast_to(x, rank_params.shape), tail, -1)[..., 0]  # noqa: E731
    opt, comm_total, comm_exposed, comm_contention, after = map(
        pick, (opt, comm_total, comm_exposed, comm_contention, after))
    step_time = pipe + after
    out["ideal_step"], out["homogeneous_step"] = ideal + after, homogeneous + after
    static = memory.static_bytes(rank_params, tr, shards)
    temporaries = memory.optimizer_temporaries(rank_params, tr, shards)
    stage_peak = memory.peak_bytes(static, act_peak, temporaries, memory.gradients_live_at_loss(tr, M, shards))
    top = np.argmax(stage_peak, axis=-1)[..., None]
    at = lambda x: np.take_along_axis(np.broadcast_to(x, stage_peak.shape), top, -1)[..., 0]  # noqa: E731
    peak = at(stage_peak)
    denom = step_time * scn.num_gpus * hw.peak_flops
    out.update(step_flops=step_model_flops, hardware_flops=step_model_flops + recompute, paper=paper,
               step_time=step_time, peak=peak, mfu=step_model_flops / denom,
               hfu=(step_model_flops + recompute) / denom, static={k: at(x) for k, x in static.items()},
               act_peak=at(act_peak), temporaries=at(temporaries),
               breakdown={**breakdown, "optimizer": opt, "communication_exposed": comm_exposed,
                          "communication_contention": comm_contention, "communication_total": comm_total},
               stage_time=stage_mean, stage_peak=stage_peak, pipeline_time=pipe, stages=st)
    return out


def _stage_times(c, m, hw, tr, shard, st, last, gathers, dp) -> dict:
    """One micro-batch's time per stage and component, [P, p]: the plan's prices and the traffic of
    tensor, context and pipeline parallelism (components present only when that parallelism is used)."""
    B, e = tr.micro_batch_size, tr.activation_bytes
    terms = costs.microbatch_terms(c, m, hw, B, e, shard, costs.Dropout.of(tr), tr.elementwise_kernels, gathers)
    t = costs.stage_times(terms, c, hw, st, last, tr.recompute, gathers)
    w = c.weights
    if shard.tensor > 1:
        tp = collectives.tensor_parallel_time(c, m, B, e, shard, hw, tr.recompute)
        layer = tp["layer"]
        if shard.tensor_comm_overlap:
            layer = collectives.overlapped(layer, terms["matmul"], shard.tensor)
        t["tensor_parallel"] = parallel.stage_sums(layer * w, st) + np.where(last, tp["head"], 0.0)
    if shard.context > 1:
        cpt = collectives.context_parallel_time(c, m, B, e, shard, hw, terms["attention"])
        t["context_parallel"] = parallel.stage_sums(cpt * w, st)
    if st.pipeline > 1:
        t["pipeline_p2p"] = collectives.pipeline_p2p_time(c, m, B, e, shard, hw, st, dp,
                                                          scatter_gather=tr.stack == "megatron")
    t["host_bound"] = costs.host_wait(t, c, hw, st, tr.recompute)
    return t


def _per_microbatch(x):
    """[P, p] per stage -> [P]: the whole micro-batch's work (the one stage itself when p = 1)."""
    x = np.asarray(x)
    return x[..., 0] if x.shape[-1] == 1 else x.sum(-1)


def _per_microbatch_max(x):
    x = np.asarray(x)
    return x[..., 0] if x.shape[-1] == 1 else x.max(-1)


def budget(scn: Scenario, step_time) -> dict:
    samples = sum(t.samples for t in scn.tasks.values()) * scn.training.epochs
    steps = math.ceil(samples / scn.training.global_batch_size)
    gpu_hours = steps * step_time * scn.num_gpus / 3600
    return dict(steps=steps, gpu_hours=gpu_hours, cost_usd=gpu_hours * scn.price_per_gpu_hour,
                wall_days=steps * step_time / 86400)


def schedule_plans(scn: Scenario, schedule: str, parameter: str | None = None, values=None,
                   swept_task: str | None = None) -> dict[str, Plan]:
    spec = scn.schedules.get(schedule, {})
    plans = {}
    for task_name, task in scn.tasks.items():
        layout = Layout.from_task(task)
        if task_name == swept_task:
            plans[task_name] = compile_points(spec.get(task_name), layout, scn.model.num_layers, parameter, values)
        else:
            plans[task_name] = compile_points(spec.get(task_name), layout, scn.model.num_layers)
    return plans


def _f(x) -> float:
    return float(np.asarray(x).reshape(-1)[0])


def window_warnings(model, sequence_tokens: dict[str, int]) -> list[str]:
    """Where a model's sliding-window layers (``ModelSpec.sliding_window``) see a sequence longer than their
    window: their attention is priced over the whole causal prefix, an upper bound (README "Scenario
    reference", model)."""
    n, w = model.windowed_layers, model.sliding_window
    return [f"{t}: {n} of {model.num_layers} layers attend within a sliding window of {w:,} tokens, shorter than "
            f"the task's {tokens:,}-token sequence; trsim prices their attention over the whole causal prefix, so "
            f"attention FLOPs and time are upper bounds" for t, tokens in sequence_tokens.items() if n and tokens > w]


def simulate(scn: Scenario) -> SimulationResult:
    """Evaluate every schedule of the scenario (and its sweep, if any) against the baseline."""
    names = list(scn.schedules)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    base = evaluate(scn, schedule_plans(scn, BASELINE))
    base_budget = budget(scn, _f(base["step_time"]))
    results = []
    for name in names:
        plans = schedule_plans(scn, name)
        ev = base if name == BASELINE and not scn.schedules.get(BASELINE) else evaluate(scn, plans)
        tasks = {}
        for tname, tv in ev["tasks"].items():
            plan = plans[tname]
            tasks[tname] = TaskResult(
                tokens=plan.layout.total, flops_forward=_f(tv["fwd"]), flops_backward=_f(tv["bwd"]),
                per_layer_flops_forward=[float(x) for x in tv["per_layer"][0]], lm_head_flops_forward=float(tv["lm"]),
                flops_by_op={k: float((v[0] * tv["counts"].weights).sum()) for k, v in tv["ops"].items()},
                paper_cost=_f(tv["paper"]), microbatch_time_s=_f(tv["t_mb"]),
                time_breakdown_s={k: _f(v) for k, v in tv["time"].items()}, activation_bytes=_f(tv["act"]),
                sample_fraction=_fractions(scn)[tname], plan=plan.describe(), warnings=list(plan.warnings))
        step_time = _f(ev["step_time"])
        b = budget(scn, step_time)
        exact = _f(ev["step_flops"]) / _f(base["step_flops"])
        paper = _f(ev["paper"]) / _f(base["paper"])
        warnings = [f"{t}: {w}" for t, r in tasks.items() for w in r.warnings]
        warnings += window_warnings(scn.model, {t: plans[t].layout.total for t in tasks})
        peak = _f(ev["peak"])
        if peak > scn.hardware.memory_bytes:
            warnings.append(f"peak memory {peak / 2**30:.1f} GiB exceeds the {scn.hardware.memory_bytes / 2**30:.0f} "
                            f"GiB of one {scn.hardware.name}")
        mem = {k: _f(v) for k, v in ev["static"].items()}
        mem["activations_and_logits"] = _f(ev["act_peak"])
        mem["optimizer_temporaries"] = _f(ev["temporaries"])
        results.append(ScheduleResult(
            name=name, tasks=tasks,
            step=StepResult(flops=_f(ev["step_flops"]), hardware_flops=_f(ev["hardware_flops"]), time_s=step_time,
                            peak_memory_bytes=peak, mfu=_f(ev["mfu"]), hfu=_f(ev["hfu"]),
                            fits=peak <= scn.hardware.memory_bytes, memory_breakdown_bytes=mem,
                            time_breakdown_s={k: _f(v) for k, v in ev["breakdown"].items()},
                            parallel=_parallel_report(scn, ev, plans), task_mixing=_mixing_report(scn, ev)),
            flops_ratio=paper if scn.conventions.cost_model == "paper" else exact, exact_flops_ratio=exact,
            paper_flops_ratio=paper, speedup=_f(base["step_time"]) / step_time,
            budget=Budget(**b, gpu_hours_saved=base_budget["gpu_hours"] - b["gpu_hours"],
                          cost_saved_usd=base_budget["cost_usd"] - b["cost_usd"]),
            parameters=_f(ev["params"]), warnings=warnings))
    out = SimulationResult(scenario=scn.name, description=scn.description, model=scn.model.name,
                           hardware=scn.hardware.name, num_gpus=scn.num_gpus,
                           cost_model=scn.conventions.cost_model, schedules=results,
                           calibration=scn.calibration,
                           evidence=None if scn.calibration else published_evidence(scn.hardware_preset,
                                                                                    scn.hardware_overrides))
    if scn.sweep is not None:
        out.sweep = run_sweep(scn)
    return out


def _parallel_report(scn: Scenario, ev: dict, plans: dict[str, Plan]) -> dict:
    """The layout and, with pipeline parallelism, each stage's micro-batch time and peak memory, the bubble
    and imbalance, and a better split: the min-max partition of the per-layer costs, with its step time."""
    par, st = scn.parallelism, ev["stages"]
    out = dict(tensor=par.tensor, pipeline=par.pipeline, virtual_stages=par.virtual_stages, context=par.context,
               sequence_parallel=par.sequence_parallel, tensor_comm_overlap=par.tensor_comm_overlap,
               data_parallel=scn.data_parallel,
               micro_batches_per_step=scn.grad_accumulation)
    if par.pipeline == 1:
        return out
    stage_t = np.asarray(ev["stage_time"])[0]
    M, v = scn.grad_accumulation, par.virtual_stages
    out.update(layers_per_stage=st.layers_per_stage(), stage_time_s=stage_t.tolist(),
               stage_peak_memory_bytes=np.asarray(ev["stage_peak"])[0].tolist(),
               bubble_fraction=float(parallel.bubble_fraction(stage_t[None], M, v)[0]),
               imbalance=float(parallel.imbalance(stage_t[None])[0]))
    if v == 1:
        balanced = parallel.min_max_partition(layer_costs(scn, plans), par.pipeline)
        split, step = _better_split(scn, plans, [st.layers_per_stage(), balanced])
        out.update(min_max_layers_per_stage=balanced, suggested_layers_per_stage=split, suggested_step_time_s=step)
    else:
        # interleaved: a stage's layers are v chunks spread over the model, so no contiguous min-max
        # partition describes it; the search starts from the current split and moves v layers at a time
        split, step = _better_split(scn, plans, [st.layers_per_stage()], unit=v)
        out.update(suggested_layers_per_stage=split, suggested_step_time_s=step)
    return out


def _better_split(scn: Scenario, plans: dict[str, Plan], starts: list[list[int]], rounds: int = 64, unit: int = 1):
    """The split with the shortest predicted step near ``starts`` (the current split and the min-max
    partition of the compute): from the better start, move one stage boundary by ``unit`` layers (the
    virtual stages with interleaving, so every stage keeps whole chunks) while that shortens the step.
    The step, not the compute alone, decides: a boundary also moves weights, hence optimizer and
    data-parallel traffic, between stages."""
    par = scn.parallelism

    def step(split):
        s = scn.with_overrides(parallelism=par.model_copy(update={"layers_per_stage": list(split)}))
        return _f(evaluate(s, plans)["step_time"])

    best_t, best = min((step(x), list(x)) for x in starts)
    for _ in range(rounds):
        moves = []
        for i in range(len(best) - 1):
            for d in (-1, 1):
                cand = list(best)
                cand[i] += d * unit
                cand[i + 1] -= d * unit
                if min(cand) >= unit:
                    moves.append((step(cand), cand))
        t, cand = min(moves, default=(best_t, best))
        if t >= best_t:
            break
        best_t, best = t, cand
    return best, best_t


def layer_costs(scn: Scenario, plans: dict[str, Plan]) -> np.ndarray:
    """Sample-weighted time of one micro-batch in each layer, [L] (first point), what a pipeline stage
    pays for holding it: the layer's prices and its tensor/context traffic; the LM head and the loss go to
    the last layer, which the last stage always holds. What every stage pays alike (the per-micro-batch
    overhead, the point-to-point sends) is left out: it moves no boundary."""
    m, hw, tr, par = scn.model, scn.hardware, scn.training, scn.parallelism
    L = m.num_layers
    per_layer = parallel.StageLayout(pipeline=L, virtual=1, bounds=tuple(range(L + 1)))
    last = np.arange(L) == L - 1
    shard = parallel.Shard.of(par, tr.precision)
    gathers = "per_layer" if tr.stack == "trsim" else "on_change"
    frac = _fractions(scn)
    total = np.zeros(L)
    for name, plan in plans.items():
        c = costs.counts(plan.point(0), scn.conventions.lm_head)
        t = _stage_times(c, m, hw, tr, shard, per_layer, last, gathers, scn.data_parallel)
        for k in ("pipeline_p2p", "host_bound"):
            t.pop(k, None)
        device = sum(t.values())[0] - hw.step_overhead_s
        # a stage waits for the host where dispatch is slower: per layer, the larger of the two
        host = costs.host_time(c, hw, per_layer, tr.recompute, per_microbatch=False)[0]
        total += frac[name] * np.maximum(device, host)
    return total


def _mixing_report(scn: Scenario, ev: dict) -> dict:
    ideal, hom = _f(ev["ideal_step"]), _f(ev["homogeneous_step"])
    return dict(mode=scn.training.task_mixing, ideal_step_s=ideal, homogeneous_step_s=hom,
                straggler_loss=hom / ideal - 1)


def _sweep_values(scn: Scenario, spec, parameter: str, values: np.ndarray, task: str) -> np.ndarray:
    L = scn.model.num_layers
    field = "sweep.values"
    if parameter in ("shallow", "from_layer"):
        bad = values[(values != np.round(values)) | (values < 0)]
        if bad.size:
            raise ScenarioError(scn.source, field, f"whole numbers >= 0 for {parameter}, got {bad[0]}")
        values = values.astype(np.int64)
    if parameter == "from_layer":
        bad = values[values >= L]
        if bad.size:
            raise ScenarioError(scn.source, field, f"layer indices in 0-{L - 1}, got {bad[0]}")
    elif parameter == "shallow":
        for v in np.unique(values):
            try:
                check_hmgen_count(int(v), L, field)
            except ScenarioError as err:
                raise err.located(scn.source)
    elif parameter == "keep":
        bad = values[(values < 0) | (values > 1)]
        if bad.size:
            raise ScenarioError(scn.source, field, f"keep fractions in [0, 1], got {bad[0]}")
    return values


SWEEP_CHUNK = 16384  # points evaluated at once: bounds the memory of a sweep of any size (~0.2 GB)


def run_sweep(scn: Scenario, chunk: int = SWEEP_CHUNK) -> dict:
    """Every sweep point against the baseline. Points are evaluated ``chunk`` at a time into numpy columns
    (8 bytes a value), so memory stays flat however many points there are; ``SimulationResult.json_chunks``
    then writes the columns without making Python lists of them."""
    sw = scn.sweep
    task = sw.task or next(iter(scn.schedules[sw.schedule]))
    spec = scn.schedules[sw.schedule][task]
    values = _sweep_values(scn, spec, sw.parameter, sw.points(), task)
    base = evaluate(scn, schedule_plans(scn, BASELINE))
    n = len(values)
    names = ("flops_ratio", "exact_flops_ratio", "paper_flops_ratio", "speedup", "step_time_s", "mfu",
             "peak_memory_bytes", "fits", "gpu_hours", "cost_usd")
    cols = {k: np.empty(n, dtype=bool if k == "fits" else float) for k in names}
    b = budget(scn, 1.0)
    for a in range(0, n, chunk):
        part = values[a:a + chunk]
        plans = schedule_plans(scn, sw.schedule, sw.parameter, part, task)
        first, inverse = plans[task].distinct_points()
        ev = evaluate(scn, {**plans, task: plans[task].take(first)})
        ev = {k: np.broadcast_to(ev[k], first.shape)[inverse] for k in ("step_flops", "paper", "step_time", "mfu", "peak")}
        sl = slice(a, a + len(part))
        exact = ev["step_flops"] / base["step_flops"]
        paper = ev["paper"] / base["paper"]
        st = np.broadcast_to(ev["step_time"], part.shape)
        cols["exact_flops_ratio"][sl] = exact
        cols["paper_flops_ratio"][sl] = paper
        cols["flops_ratio"][sl] = paper if scn.conventions.cost_model == "paper" else exact
        cols["speedup"][sl] = base["step_time"] / st
        cols["step_time_s"][sl] = st
        cols["mfu"][sl] = ev["mfu"]
        cols["peak_memory_bytes"][sl] = ev["peak"]
        cols["fits"][sl] = np.broadcast_to(ev["peak"], part.shape) <= scn.hardware.memory_bytes
        cols["gpu_hours"][sl] = b["gpu_hours"] * st
        cols["cost_usd"][sl] = b["cost_usd"] * st
    # lists, as callers have always read them (about 32 bytes a value: 0.4 GB for a million points)
    return {"schedule": sw.schedule, "task": task, "parameter": sw.parameter, "values": values.tolist(),
            **{k: v.tolist() for k, v in cols.items()}}


def predict_case(model: "ModelSpec", hardware: "HardwareSpec", plan: Plan, micro_batch: int, *, weight_bytes: int,
                 gradient_bytes: int, optimizer_bytes: int, activation_bytes: int, attention: str = "causal",
                 lm_head: str = "all") -> dict:
    """The simulator's prediction for one profiled case: ``plan`` holds exactly the rows that ran, on one
    GPU with no data parallelism. Used by validate and calibrate; nothing here is specific to them."""
    from .config import TrainingSpec
    c = costs.counts(plan, lm_head)
    t = costs.microbatch_time(c, model, hardware, micro_batch, activation_bytes, False)
    sub = model.model_copy(update={"num_layers": plan.num_layers})
    params = costs.base_parameters(sub) + int(costs.extra_parameters([plan], sub)[0])
    tr = TrainingSpec(micro_batch_size=micro_batch, global_batch_size=micro_batch, zero_stage=0,
                      weight_bytes=weight_bytes, gradient_bytes=gradient_bytes, optimizer_bytes=optimizer_bytes,
                      activation_bytes=activation_bytes)
    static = costs.static_bytes(params, tr, 1)
    act = float(costs.activation_bytes(c, model, micro_batch, activation_bytes, False)[0])
    transient = costs.transient_logits_bytes(c, model, micro_batch, activation_bytes)
    peak = float(memory.peak_bytes(static, act + transient, memory.optimizer_temporaries(params, tr, 1),
                                   memory.gradients_live_at_loss(tr, 1)))
    ops = costs.op_flops(c, model, attention)
    return {"time_s": {k: float(np.asarray(v).reshape(-1)[0]) for k, v in t.items()},
            "fwd_bwd_s": float(sum(np.asarray(v).reshape(-1)[0] for v in t.values())),
            "optimizer_s": float(costs.optimizer_time(params, tr, hardware, 1)),
            "activation_bytes": act, "peak_bytes": peak, "parameters": params,
            "flops_forward": float(micro_batch * (sum(ops.values())[0].sum() + costs.lm_head_flops(c, model)))}
