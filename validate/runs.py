"""Measured training runs: the runs-file format, its loading, and a run's prediction.

A runs file (YAML or JSON; CSV too) lists end-to-end measurements a user took from their own logs::

    runs:
      - name: llama3-8b-fsdp-8xh100
        scenario: path/to/scenario.yaml     # or an inline scenario mapping
        schedule: baseline                  # optional, default baseline
        measured: {step_time_s: 2.84, peak_memory_bytes: 8.1e10}   # peak memory optional
        tags: {cluster: a}                  # optional, for --cv group:FIELD

Optional top-level keys: ``source`` (a citation), ``scenario_defaults`` (a scenario mapping deep-merged
under every inline scenario, so a file does not repeat the model or hardware). CSV: one row per run with
columns ``name, scenario, schedule, step_time_s, peak_memory_bytes``; any other column is a tag.

A run whose scenario uses a field this version of trsim does not know (for example a parallel layout
before that support exists) is reported as unsupported by ``load_runs(..., allow_unsupported=True)``
rather than failing, so a validation suite can say which rows it could not price.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trsim.simulator.config import HardwareSpec, Scenario, read_document, scenario_from_dict
from trsim.simulator.errors import ScenarioError
from trsim.simulator.simulate import evaluate, schedule_plans

# scenario fields that belong to the parallel-training support of issue #7; a scenario that sets one of
# them before this trsim supports it is "needs parallelism support", not an error, in the suite
PARALLEL_FIELDS = ("parallelism", "training.recompute", "training.precision", "training.stack",
                   "training.task_mixing", "training.activation_memory")


@dataclass
class Run:
    name: str
    scenario: Scenario
    schedule: str
    measured: dict            # step_time_s, peak_memory_bytes (optional)
    tags: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        if self.schedule != "baseline" and self.schedule not in self.scenario.schedules:
            raise ScenarioError(self.source, f"runs.{self.name}.schedule",
                                f"a schedule of the scenario ({', '.join(self.scenario.schedules)}), "
                                f"got {self.schedule!r}")
        self._plans = schedule_plans(self.scenario, self.schedule)

    @property
    def signature(self) -> str:
        """Identical configurations (same resolved scenario and schedule) share a signature whatever
        their names: cross-validation keeps them in one fold."""
        return self._digest(self.scenario.hardware.model_dump())

    @property
    def fold_key(self) -> str:
        """The configuration as written: the hardware as its preset's name, the attention kernel, the
        fields the scenario sets over the preset and the calibration applied, not the preset's values. The
        k-fold split orders configurations by it, so a change to a preset constant re-prices every fold
        without reshuffling which runs are held out together (``crossval.folds``)."""
        s = self.scenario
        if s.hardware_preset is None:
            return self.signature
        hw = s.hardware
        given = {"preset": s.hardware_preset, "attention_kernel": hw.attention_kernel, "memory_bytes": hw.memory_bytes,
                 "calibration": s.calibration, **{k: getattr(hw, k) for k in s.hardware_overrides}}
        return self._digest(given)

    def _digest(self, hardware: dict) -> str:
        s = self.scenario
        doc = {"model": s.model.model_dump(exclude_none=True), "hardware": hardware, "gpus": s.num_gpus,
               "training": s.training.model_dump(), "conventions": s.conventions.model_dump(),
               "tasks": {k: v.model_dump() for k, v in s.tasks.items()},
               "plans": {k: p.to_dict() for k, p in self._plans.items()}}
        for extra in ("parallelism",):  # fields a later trsim adds to the scenario
            if getattr(s, extra, None) is not None:
                doc[extra] = getattr(s, extra).model_dump()
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def hardware(self) -> HardwareSpec:
        return self.scenario.hardware

    def evaluate(self, hw: HardwareSpec | None = None) -> dict:
        scn = self.scenario if hw is None else self.scenario.with_overrides(hardware=hw)
        ev = evaluate(scn, self._plans)
        return {"step_time_s": float(np.asarray(ev["step_time"]).reshape(-1)[0]),
                "peak_memory_bytes": float(np.asarray(ev["peak"]).reshape(-1)[0])}

    def predicted_time(self, hw: HardwareSpec | None = None) -> float:
        return self.evaluate(hw)["step_time_s"]

    def hardware_with(self, values: dict, hw0: HardwareSpec | None = None) -> HardwareSpec:
        return self.scenario.hardware.model_copy(update=values)

    @property
    def measured_time(self) -> float:
        return self.measured["step_time_s"]

    def residuals(self, update: dict, hw: HardwareSpec | None = None) -> list[float]:
        """log(predicted / measured) step time, with ``update`` applied to this run's own hardware."""
        hw = self.scenario.hardware.model_copy(update=update)
        return [float(np.log(self.predicted_time(hw) / self.measured["step_time_s"]))]


@dataclass
class Unsupported:
    name: str
    field: str
    reason: str
    tags: dict = field(default_factory=dict)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _positive(value, where: str, field_: str, optional: bool = False):
    if value is None and optional:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ScenarioError(where, field_, f"expected a positive number, got {value!r}")
    if not np.isfinite(v) or v <= 0:
        raise ScenarioError(where, field_, f"expected a positive number, got {value!r}")
    return v


def _read_csv(path: Path) -> dict:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    runs = []
    for i, r in enumerate(rows):
        if not r.get("scenario"):
            raise ScenarioError(str(path), f"row {i + 2}.scenario", "expected a scenario file path, got nothing")
        tags = {k: v for k, v in r.items() if k not in ("name", "scenario", "schedule", "step_time_s",
                                                          "peak_memory_bytes") and v not in (None, "")}
        runs.append({"name": r.get("name") or f"row{i + 2}", "scenario": r["scenario"],
                     "schedule": r.get("schedule") or "baseline",
                     "measured": {"step_time_s": r.get("step_time_s"),
                                  **({"peak_memory_bytes": r["peak_memory_bytes"]}
                                     if r.get("peak_memory_bytes") else {})}, "tags": tags})
    return {"runs": runs}


def _unsupported_field(err: ScenarioError) -> str | None:
    f = err.field
    return f if any(f == p or f.startswith(p + ".") for p in PARALLEL_FIELDS) else None


def load_runs(path: str | Path, allow_unsupported: bool = False) -> tuple[list[Run], list[Unsupported], dict]:
    """Read a runs file: (runs, unsupported runs, file metadata). Bad input raises ScenarioError."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        if not p.exists():
            raise ScenarioError(str(p), "<file>", "an existing runs file (not found)")
        doc = _read_csv(p)
    else:
        doc = read_document(p)
    where = str(p)
    raw_runs = doc.get("runs")
    if not isinstance(raw_runs, list) or not raw_runs:
        raise ScenarioError(where, "runs", f"expected a non-empty list of runs, got {raw_runs!r}"[:200])
    defaults = doc.get("scenario_defaults") or {}
    if not isinstance(defaults, dict):
        raise ScenarioError(where, "scenario_defaults", f"expected a scenario mapping, got {defaults!r}")
    unknown = set(doc) - {"runs", "source", "scenario_defaults", "description"}
    if unknown:
        raise ScenarioError(where, sorted(unknown)[0], "expected no such key (runs, source, scenario_defaults, "
                            "description)")
    runs, unsupported, names = [], [], set()
    for i, r in enumerate(raw_runs):
        at = f"runs[{i}]"
        if not isinstance(r, dict):
            raise ScenarioError(where, at, f"expected a mapping with name, scenario, measured, got {r!r}")
        extra = set(r) - {"name", "scenario", "schedule", "measured", "tags"}
        if extra:
            raise ScenarioError(where, f"{at}.{sorted(extra)[0]}", "expected no such key (name, scenario, schedule, "
                                "measured, tags)")
        name = str(r.get("name") or f"run{i}")
        if name in names:
            raise ScenarioError(where, f"{at}.name", f"expected unique run names, got {name!r} twice")
        names.add(name)
        measured = r.get("measured")
        if not isinstance(measured, dict):
            raise ScenarioError(where, f"{at}.measured", f"expected a mapping with step_time_s, got {measured!r}")
        bad = set(measured) - {"step_time_s", "peak_memory_bytes"}
        if bad:
            raise ScenarioError(where, f"{at}.measured.{sorted(bad)[0]}",
                                "expected no such key (step_time_s, peak_memory_bytes)")
        meas = {"step_time_s": _positive(measured.get("step_time_s"), where, f"{at}.measured.step_time_s")}
        peak = _positive(measured.get("peak_memory_bytes"), where, f"{at}.measured.peak_memory_bytes", optional=True)
        if peak is not None:
            meas["peak_memory_bytes"] = peak
        tags = r.get("tags") or {}
        if not isinstance(tags, dict):
            raise ScenarioError(where, f"{at}.tags", f"expected a mapping, got {tags!r}")
        scn_raw = r.get("scenario")
        try:
            if isinstance(scn_raw, str):
                sp = (p.parent / scn_raw)
                sdoc = _deep_merge(defaults, read_document(sp)) if defaults else read_document(sp)
                scn = scenario_from_dict(sdoc, source=str(sp), base_dir=sp.parent)
            elif isinstance(scn_raw, dict):
                scn = scenario_from_dict(_deep_merge(defaults, scn_raw), source=f"{where}:{at}.scenario",
                                         base_dir=p.parent)
            else:
                raise ScenarioError(where, f"{at}.scenario", f"expected a scenario path or mapping, got {scn_raw!r}")
        except ScenarioError as err:
            field_ = _unsupported_field(err)
            if allow_unsupported and field_:
                unsupported.append(Unsupported(name, field_, "needs parallelism support", tags))
                continue
            raise
        runs.append(Run(name=name, scenario=scn, schedule=str(r.get("schedule") or "baseline"), measured=meas,
                        tags=tags, source=where))
    return runs, unsupported, {"source": doc.get("source", ""), "description": doc.get("description", "")}


def common_hardware(runs: list[Run], where: str) -> str:
    """The hardware name every run shares (a calibration is for one device)."""
    names = sorted({r.hardware.name for r in runs})
    if len(names) != 1:
        raise ScenarioError(where, "runs.scenario.hardware", f"expected runs on one hardware kind (a calibration is "
                            f"for one device), got {', '.join(names)}")
    return names[0]
