"""The versioned results file written by ``trsim profile`` (and read by calibrate and validate)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trsim.simulator.config import MAX_SEGMENTS, MicroBatch, Tokens
from trsim.simulator.errors import ScenarioError

SCHEMA = "trsim.profile/1"


class _M(BaseModel):
    """Results files are validated as strictly as scenarios: unknown keys refused, numbers finite."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Counts (FLOPs, bytes, tokens) are bounded far beyond any profiled step, as the scenario's are
# (simulator/config.py), so that a hostile file cannot reach the simulator's int64 arithmetic with a value it
# cannot hold; the micro-batch and a segment's tokens have the scenario's own bounds (MicroBatch, Tokens).
_Count = Annotated[int, Field(ge=0, le=2**62)]
_Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]      # a measured time: positive
_Spread = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class FlopCount(_M):
    per_layer_forward: list[_Count]
    lm_head_forward: _Count
    forward: _Count
    backward: Optional[_Count] = None


class Stats(_M):
    median_s: _Seconds
    min_s: _Seconds
    max_s: _Seconds
    iqr_s: _Spread
    samples: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self):
        if not self.min_s <= self.median_s <= self.max_s:
            raise ValueError(f"min_s <= median_s <= max_s, got {self.min_s}, {self.median_s}, {self.max_s}")
        return self


class ClassStats(Stats):
    """A class's time over the profiled steps; zero where no operator of the class ran."""
    median_s: _Spread
    min_s: _Spread
    max_s: _Spread


class Timing(_M):
    forward_backward: Stats
    optimizer: Stats
    classes_s: dict[str, _Spread]         # median over the profiled steps
    layer_forward_s: list[_Spread]        # median over the profiled steps
    classes_stats: Optional[dict[str, ClassStats]] = None   # per class: median, min, max, iqr over those steps
    # the classified operators behind them (at least 0.5% of the classified time, at most 40): median
    # self time and calls in one step; absent in files from before 2026-11-27
    ops_s: Optional[dict[str, _Spread]] = None
    ops_calls: Optional[dict[str, _Count]] = None


class Memory(_M):
    activation_saved_bytes: _Count
    # over one whole training step (gradients freed before it): max_memory_allocated on CUDA, the
    # profiler's allocation events on the CPU (measure.step_peak); absent in files from before that
    peak_allocated_bytes: Optional[_Count]
    static_bytes: Optional[_Count]           # allocated before the step (weights, plan tensors, optimizer states)
    parameters: Annotated[int, Field(ge=1)]


class PlanSegment(_M):
    name: str
    kind: Literal["text", "image"]
    tokens: Tokens
    target: bool


class PlanDoc(BaseModel):
    """An executed plan as Plan.to_dict writes it; every per-layer array has one row per profiled layer and
    one column per segment. Keys added by later versions of Plan.to_dict are kept, not refused."""
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    segments: list[PlanSegment] = Field(min_length=1, max_length=MAX_SEGMENTS)
    mode: list[list[Annotated[int, Field(ge=0, le=2)]]] = Field(min_length=1)
    present: list[list[_Count]]
    sep_q: list[bool]
    sep_kv: list[bool]
    rank: list[list[_Count]]
    method: str = "custom"
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rectangular(self):
        L, S = len(self.mode), len(self.segments)
        for name in ("present", "rank", "sep_q", "sep_kv"):
            if len(getattr(self, name)) != L:
                raise ValueError(f"{name} with one row per layer ({L}, as mode), got {len(getattr(self, name))}")
        for name in ("mode", "present", "rank"):
            for i, row in enumerate(getattr(self, name)):
                if len(row) != S:
                    raise ValueError(f"{name}[{i}] with one value per segment ({S}), got {len(row)}")
        for name in ("present", "rank"):
            for i, row in enumerate(getattr(self, name)):
                for seg, n in zip(self.segments, row):
                    if n > seg.tokens:
                        raise ValueError(f"{name}[{i}] at most each segment's tokens, got {n} of segment "
                                         f"{seg.name!r}'s {seg.tokens}")
        return self


class Case(_M):
    schedule: str
    task: str
    status: Literal["ok", "oom", "error"]
    error: Optional[str] = None
    micro_batch: MicroBatch
    layers: list[_Count]
    layer_weights: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    plan: dict                            # validated as a PlanDoc by parse_results
    plan_signature: Optional[str] = None  # hash of the executed plan arrays (Plan.signature): equal plans, equal hash
    flops: Optional[dict[str, FlopCount]] = None
    flops_match: Optional[bool] = None
    attention_backend: Optional[Literal["sdpa", "flex"]] = None  # kernel of layers with kv_only keys
    flex_mask_match: Optional[bool] = None  # flex block masks admit exactly the counted pairs (flex only)
    time: Optional[Timing] = None
    memory: Optional[Memory] = None

    @model_validator(mode="after")
    def _complete(self):
        if len(self.layer_weights) != len(self.layers):
            raise ValueError(f"one layer weight per profiled layer ({len(self.layers)}), got {len(self.layer_weights)}")
        if self.status == "ok":
            for name in ("time", "memory"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name} measurements for a case with status ok, got null")
            if len(self.time.layer_forward_s) not in (0, len(self.layers)):
                raise ValueError(f"time.layer_forward_s with one value per profiled layer ({len(self.layers)}), "
                                 f"got {len(self.time.layer_forward_s)}")
        for name, fc in (self.flops or {}).items():
            if len(fc.per_layer_forward) != len(self.layers):
                raise ValueError(f"flops.{name}.per_layer_forward with one value per profiled layer "
                                 f"({len(self.layers)}), got {len(fc.per_layer_forward)}")
        return self


class Environment(_M):
    torch: str
    cuda: Optional[str]
    driver: Optional[str]
    gpu: Optional[str]
    device: str
    dtype: str
    python: str
    platform: str
    cpu_threads: int
    cpu: Optional[str] = None     # host CPU model and torch's CPU ISA (files before 2026-11-28 lack it)


class Settings(_M):
    micro_batch: MicroBatch
    repeats: Annotated[int, Field(ge=1)]
    warmup: _Count
    layers: Optional[Annotated[int, Field(ge=1)]]
    attention: Literal["causal", "full"]
    lm_head: Literal["all", "targets"]
    weight_bytes: Annotated[int, Field(ge=1, le=64)]
    gradient_bytes: Annotated[int, Field(ge=1, le=64)]
    optimizer_bytes: Annotated[int, Field(ge=1, le=256)]
    activation_bytes: Annotated[int, Field(ge=1, le=64)]
    # what step times were measured with: CUDA events or the wall clock ("wall"), or on a single-threaded
    # CPU run the profiling thread's CPU time ("thread_cpu"); absent in files written before it was recorded
    clock: Optional[Literal["wall", "thread_cpu", "cuda_events"]] = None
    # which statistic of the repeated samples is the case's time (forward_backward, optimizer and each
    # class): the median, or the fastest sample where interference can only add time (profiler/grid.py)
    statistic: Literal["median", "min"] = "median"


class ProfileResults(_M):
    schema_: str
    created: str
    scenario: str
    scenario_file: str
    model: dict
    environment: Environment
    settings: Settings
    cases: list[Case]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> dict:
        d = self.model_dump()
        d["schema"] = d.pop("schema_")
        return {"schema": d.pop("schema"), **d}


def parse_results(doc: dict, where: str = "<results>") -> ProfileResults:
    """A results document validated in full: schema, every case's contents (times positive and finite,
    memory present for ok cases, plans rectangular), and the model as a scenario's model would be."""
    from trsim.simulator.config import ModelSpec
    from trsim.simulator.errors import describe
    from trsim.simulator.strict import validate
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else doc
        raise ScenarioError(where, "schema", f"a trsim profile results file with schema {SCHEMA!r}, got {describe(got)}")
    body = {k: v for k, v in doc.items() if k != "schema"}
    res = validate(ProfileResults, {"schema_": doc["schema"], **body}, where=where)
    for i, case in enumerate(res.cases):
        plan = validate(PlanDoc, case.plan, where=where, prefix=f"cases.{i}.plan")
        if len(plan.mode) != len(case.layers):
            raise ScenarioError(where, f"cases.{i}.plan.mode", f"one row per profiled layer ({len(case.layers)}), "
                                f"got {len(plan.mode)}")
    validate(ModelSpec, res.model, where=where, prefix="model")
    return res


def load_results(path: str | Path) -> ProfileResults:
    from trsim.simulator.reader import read_document
    p = Path(path)
    return parse_results(read_document(p, what="results file written by 'trsim profile'", fmt="json"), str(p))
