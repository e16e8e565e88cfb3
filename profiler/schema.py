"""The versioned results file written by ``trsim profile`` (and read by calibrate and validate)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from trsim.simulator.errors import ScenarioError

SCHEMA = "trsim.profile/1"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlopCount(_M):
    per_layer_forward: list[int]
    lm_head_forward: int
    forward: int
    backward: Optional[int] = None


class Stats(_M):
    median_s: float
    min_s: float
    max_s: float
    iqr_s: float
    samples: int


class Timing(_M):
    forward_backward: Stats
    optimizer: Stats
    classes_s: dict[str, float]           # median over the profiled steps
    layer_forward_s: list[float]          # median over the profiled steps
    classes_stats: Optional[dict[str, Stats]] = None   # per class: median, min, max, iqr over those steps


class Memory(_M):
    activation_saved_bytes: int
    peak_allocated_bytes: Optional[int]   # CUDA only: max_memory_allocated over a whole training step
    static_bytes: Optional[int]           # CUDA only: allocated before the step (weights, grads, optimizer)
    parameters: int


class Case(_M):
    schedule: str
    task: str
    status: Literal["ok", "oom", "error"]
    error: Optional[str] = None
    micro_batch: int
    layers: list[int]
    layer_weights: list[float]
    plan: dict
    plan_signature: Optional[str] = None  # hash of the executed plan arrays (Plan.signature): equal plans, equal hash
    flops: Optional[dict[str, FlopCount]] = None
    flops_match: Optional[bool] = None
    time: Optional[Timing] = None
    memory: Optional[Memory] = None


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


class Settings(_M):
    micro_batch: int
    repeats: int
    warmup: int
    layers: Optional[int]
    attention: Literal["causal", "full"]
    lm_head: Literal["all", "targets"]
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int


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
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ScenarioError(where, "schema", f"a trsim profile results file with schema {SCHEMA!r}, got "
                            f"{doc.get('schema') if isinstance(doc, dict) else type(doc).__name__!r}")
    body = {k: v for k, v in doc.items() if k != "schema"}
    try:
        return ProfileResults(schema_=doc["schema"], **body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ScenarioError(where, ".".join(str(p) for p in err["loc"]), err["msg"])


def load_results(path: str | Path) -> ProfileResults:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ScenarioError(str(p), "<file>", "an existing results file written by 'trsim profile' (not found)")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(p), "<file>", f"well-formed JSON ({exc})")
    return parse_results(doc, str(p))
