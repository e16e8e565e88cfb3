"""A profiling grid: one base scenario profiled at several model sizes (depth, width, micro-batch, image
tokens), so that calibration and held-out validation see every dimension of the time model vary.

A grid file (YAML) names a base scenario (a path, or the scenario inline), the (schedule, task) pairs to
profile and the sizes::

    name: cpu-grid
    scenario: {...}                     # or a path relative to the grid file
    pairs: [[baseline, understanding], [himix, understanding], ...]
    sizes:
      - {num_layers: 2, hidden_size: 64, micro_batch: 1, image_tokens: 64}
    threads: 1                          # torch.set_num_threads while profiling (CPU)
    warmup: 2                           # untimed steps per case
    rounds: 5                           # timing rounds; each times every case in turn
    max_rounds: 15                      # optional: more rounds, for the cases whose fastest sample is not
    stable_within: 0.01                 #   yet stable to this fraction (default: exactly ``rounds``)
    steps_per_round: 2
    class_repeats: 0                    # profiled steps for per-operator-class times (0: none)

A size scales the base model: ``hidden_size`` with the base's head_dim (so heads = hidden / head_dim),
its ratio of key/value heads to heads and of MLP width to hidden size; every image segment of every task
gets ``image_tokens``. Each size is written as one ordinary ``trsim profile`` results file.

Timing is interleaved: every case is built first, then ``rounds`` rounds each time ``steps_per_round``
steps of every case in turn, so a slow spell of the machine falls on all cases alike instead of on one
(the first step of a round may find the case's weights out of cache; the second does not). On a CPU with ``threads: 1`` the
clock is the profiling thread's own CPU time (``measure.step_clock``): time the scheduler gives to
neighbouring processes is not counted. What a neighbour still costs (a shared core's execution units,
caches and memory bandwidth) only ever adds time, so the results file declares the fastest sample, not
the median, the step time (``settings.statistic: min``); the per-class times likewise. Per-class times
come from torch.profiler (wall clock, about a second of profiler work per case); a CPU fit does not use
them (validate/fit.py ``CPU_CLASSES``), so the grid takes them only when ``class_repeats`` asks.

How many samples make the fastest one stable depends on the machine: on an idle one a few rounds do; beside
neighbours that come and go, a case can go on finding faster samples. With ``max_rounds`` the grid keeps
timing, round by round (still interleaved), only the cases that are not yet stable, up to ``max_rounds``
rounds: a case is stable when the fastest of the first half of its samples is within ``stable_within``
of the fastest of all of them (``stable``), so that doubling its samples is not expected to move its
time by more than that. Each case's own sample count is in its record (``samples``);
``settings.repeats`` is the least a case got (``rounds`` x ``steps_per_round``). Against a neighbour that
loads the machine the whole time, no number of samples helps: what it adds to every sample stays.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from trsim.simulator.errors import ScenarioError

_Pos = Annotated[int, Field(ge=1)]


class GridSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_layers: _Pos
    hidden_size: _Pos
    micro_batch: _Pos
    image_tokens: _Pos

    @property
    def label(self) -> str:
        return f"L{self.num_layers}-d{self.hidden_size}-b{self.micro_batch}-img{self.image_tokens}"


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: Optional[str] = None
    scenario: Union[str, dict]
    pairs: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(min_length=1)
    sizes: list[GridSize] = Field(min_length=1)
    threads: _Pos = 1
    warmup: Annotated[int, Field(ge=0)] = 2
    rounds: _Pos = 5
    max_rounds: Optional[_Pos] = None
    stable_within: Annotated[float, Field(gt=0, lt=1)] = 0.01
    steps_per_round: _Pos = 2
    class_repeats: Annotated[int, Field(ge=0)] = 0


def load_grid(path: str | Path) -> tuple[GridSpec, dict, Path]:
    """The grid, its base scenario document and the directory relative paths resolve against."""
    from trsim.simulator.reader import read_document
    from trsim.simulator.strict import validate
    p = Path(path)
    grid = validate(GridSpec, read_document(p, what="grid file"), where=str(p))
    if isinstance(grid.scenario, str):
        sp = (p.parent / grid.scenario)
        base = read_document(sp)
    else:
        base = grid.scenario
    if grid.max_rounds is not None and grid.max_rounds < grid.rounds:
        raise ScenarioError(str(p), "max_rounds", f"at least rounds ({grid.rounds}), got {grid.max_rounds}")
    return grid, base, p.parent


def stable(samples, within: float) -> bool:
    """Whether the fastest of a case's samples is already the fastest of their first half, to ``within``
    (a fraction): the minimum a grid reports has stopped moving (see the module docstring)."""
    half = samples[:max(1, len(samples) // 2)]
    return min(half) <= (1.0 + within) * min(samples)


def size_scenario(base: dict, size: GridSize, source: str, base_dir: Path):
    """The base scenario at one grid size (see the module docstring for the scaling rule)."""
    from trsim.simulator.config import scenario_from_dict
    doc = copy.deepcopy(base)
    m = doc.get("model")
    if not isinstance(m, dict) or not {"hidden_size", "num_attention_heads", "intermediate_size"} <= set(m):
        raise ScenarioError(source, "scenario.model", "an inline model with hidden_size, num_attention_heads and "
                            "intermediate_size (the sizes scale it)")
    heads = m["num_attention_heads"]
    head_dim = m.get("head_dim") or m["hidden_size"] // heads
    kv = m.get("num_key_value_heads", heads)
    if size.hidden_size % head_dim or (size.hidden_size // head_dim * kv) % heads:
        raise ScenarioError(source, "sizes.hidden_size", f"a multiple of the base head_dim ({head_dim}) that keeps "
                            f"the ratio of key/value heads ({kv}/{heads}), got {size.hidden_size}")
    new_heads = size.hidden_size // head_dim
    m.update(num_layers=size.num_layers, hidden_size=size.hidden_size, num_attention_heads=new_heads,
             num_key_value_heads=new_heads * kv // heads, head_dim=head_dim,
             intermediate_size=round(m["intermediate_size"] * size.hidden_size / m["hidden_size"]))
    for task in doc.get("tasks", {}).values():
        for seg in task.get("segments", []):
            if seg.get("kind") == "image":
                seg["tokens"] = size.image_tokens
    tr = doc.setdefault("training", {})
    tr.update(micro_batch_size=size.micro_batch, global_batch_size=size.micro_batch)
    doc["name"] = f"{doc.get('name', 'grid')}@{size.label}"
    return scenario_from_dict(doc, source=source, base_dir=base_dir)


def profile_grid(path: str | Path, *, use_fvcore: bool = False, on_case=None) -> list[dict]:
    """Profile every pair at every size of the grid file on the CPU: one results document per size."""
    import torch

    from .measure import class_times, no_gc, stats, step_clock, step_samples
    from .run import build_case, fail_case, results_document
    grid, base, base_dir = load_grid(path)
    scns = [size_scenario(base, s, str(path), base_dir) for s in grid.sizes]
    for scn in scns:
        for sched, task in grid.pairs:
            if sched != "baseline" and sched not in scn.schedules:
                raise ScenarioError(str(path), "pairs", f"schedules of the scenario, got {sched!r}")
            if task not in scn.tasks:
                raise ScenarioError(str(path), "pairs", f"tasks of the scenario, got {task!r}")
    dev, dtype = torch.device("cpu"), torch.float32
    threads = torch.get_num_threads()
    torch.set_num_threads(grid.threads)
    try:
        built = []  # (size index, case record, bench)
        for i, (scn, size) in enumerate(zip(scns, grid.sizes)):
            for sched, task in grid.pairs:
                case, bench = build_case(scn, sched, task, device=dev, dtype=dtype, layers=None,
                                         micro_batch=size.micro_batch, use_fvcore=use_fvcore)
                built.append((i, case, bench))
        samples = {n: ([], []) for n, b in enumerate(built) if b[2] is not None}

        def run(n, steps):
            try:
                return step_samples(*built[n][2], steps)
            except Exception as exc:  # noqa: BLE001 - a failed case is recorded, the grid goes on
                fail_case(built[n][1], exc, dev)
                del samples[n]
                return [], []
        with no_gc():
            for n in list(samples):  # warm-up
                run(n, grid.warmup)
            for r in range(grid.max_rounds or grid.rounds):
                todo = [n for n in samples if r < grid.rounds or not stable(samples[n][0], grid.stable_within)]
                if not todo:
                    break
                for n in todo:
                    fb, opt = run(n, grid.steps_per_round)
                    if n in samples:
                        samples[n][0].extend(fb)
                        samples[n][1].extend(opt)
        for n, (fb, opt) in samples.items():
            _, case, (model, ids, labels, _) = built[n]
            try:
                case["time"] = {"forward_backward": stats(fb), "optimizer": stats(opt), "classes_s": {},
                                "layer_forward_s": []}
                if grid.class_repeats:
                    case["time"].update(class_times(model, ids, labels, repeats=grid.class_repeats))
            except Exception as exc:  # noqa: BLE001 - a failed case is recorded, the grid goes on
                fail_case(case, exc, dev)
            if on_case:
                on_case(case)
        clock = step_clock(dev)[0]
        docs = []
        for i, (scn, size) in enumerate(zip(scns, grid.sizes)):
            cases = [c for j, c, _ in built if j == i]
            doc = results_document(scn, dev, dtype, micro_batch=size.micro_batch,
                                   repeats=grid.rounds * grid.steps_per_round, warmup=grid.warmup, layers=None,
                                   cases=cases, clock=clock, statistic="min")
            docs.append(doc)
        return docs
    finally:
        torch.set_num_threads(threads)
