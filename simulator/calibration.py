"""Calibration files: the time model's fitted efficiency parameters, with where they came from.

A calibration file is validated like a scenario (schema version, known parameter names, each value in
the range the hardware profile allows) and records the device, GPU and torch it was measured with, and
how the fit was made (which parameters were fitted, which were held fixed and at what value, how many
independent measurements there were). ``load_calibration`` refuses a file fitted on other hardware
than the scenario's unless the user forces it; every simulation output says which file was applied.

API (used by the scenario loader, ``trsim calibrate`` and ``trsim validate``)::

    doc = calibration_document(parameters, hardware_preset=..., environment=..., results_files=..., fit=...)
    write_calibration(path, doc)                       # validated, then written atomically
    cal = load_calibration(path, expected_hardware="h100-sxm", force=False)
    cal.values()                                       # {parameter: value} to apply to a HardwareSpec
    cal.summary(path, forced)                          # what outputs record
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, TypeAdapter, ValidationError, field_validator

from .errors import ScenarioError, describe

SCHEMA = "trsim.calibration/2"
# /2 added fit.held_out; a /1 file (no held-out record) still loads. A trsim that knows only /1 refuses a /2
# file by its schema, in one line, rather than by the field it does not know.
READABLE_SCHEMAS = ("trsim.calibration/1", SCHEMA)

# Datasheet and identity fields of a HardwareSpec: never fitted.
_NOT_CALIBRATABLE = {"name", "peak_flops", "memory_bandwidth", "memory_bytes", "intranode_bandwidth",
                     "internode_bandwidth", "gpus_per_node", "calibration"}


def calibratable_parameters() -> dict[str, Any]:
    """Every efficiency parameter of the hardware profile that a calibration may set, with its validator.

    Derived from HardwareSpec, so a parameter added to the time model is known here at once, with the
    same range the scenario schema enforces."""
    from .config import HardwareSpec, _Eff as _EFF
    out = {}
    for name, f in HardwareSpec.model_fields.items():
        if name in _NOT_CALIBRATABLE:
            continue
        if f.annotation is float:
            meta = f.metadata
        elif f.annotation == Optional[_EFF]:  # an efficiency a GPU may lack (matmul_efficiency_fp8)
            meta = _EFF.__metadata__
        else:
            continue
        out[name] = TypeAdapter(Annotated[float, Field(allow_inf_nan=False), *meta])
    return out


_Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ParameterValue(_Strict):
    value: _Finite
    std: Optional[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = None


class HeldOut(_Strict):
    """How well the fit predicts measurements it did not see: each fold of ``scheme`` refitted without its
    measurements and scored on them (absolute percentage error of the time). ``folds`` 0: not
    cross-validated (``note`` says why)."""
    scheme: str = Field(min_length=1)                      # e.g. "k5" (5-fold over distinct configurations)
    folds: NonNegativeInt
    items: NonNegativeInt                                  # measurements scored
    median_abs_pct: Optional[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = None
    max_abs_pct: Optional[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = None
    note: Optional[str] = None


class FitRecord(_Strict):
    """How the parameters were obtained."""
    method: str = Field(min_length=1)                      # e.g. "bounded least squares"
    measurements: NonNegativeInt                           # independent measurements the fit used
    fitted: list[str]                                      # parameters the fit estimated
    fixed: dict[str, _Finite] = Field(default_factory=dict)  # parameters held at these values, not fitted
    regularisation: Optional[str] = None                   # e.g. "ridge towards the preset, weight 1e-2"
    residual_rms_log: Optional[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = None
    at_bounds: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    held_out: Optional[HeldOut] = None                     # absent in files written before trsim recorded it


class InputFile(_Strict):
    path: str
    sha256: Optional[str] = None


class Provenance(_Strict):
    """What the fit read (each input with its SHA-256) and which trsim wrote it."""
    trsim_version: str
    inputs: list[InputFile] = Field(default_factory=list)


class CalibrationFile(_Strict):
    schema_: Literal["trsim.calibration/1", "trsim.calibration/2"] = Field(alias="schema")
    created: str
    hardware_preset: str = Field(min_length=1)   # the hardware profile the parameters belong to
    device: str = Field(min_length=1)            # cpu, cuda, cuda:N
    gpu: Optional[str] = None                    # e.g. "NVIDIA H100 80GB HBM3"; None on a CPU
    torch: str = Field(min_length=1)
    cuda: Optional[str] = None
    dtype: Optional[str] = None
    results_files: list[str] = Field(default_factory=list)
    cases: NonNegativeInt
    fit: FitRecord
    parameters: dict[str, ParameterValue] = Field(min_length=1)
    provenance: Optional[Provenance] = None

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    @field_validator("parameters")
    @classmethod
    def _known_and_in_range(cls, params):
        known = calibratable_parameters()
        for name, p in params.items():
            if name not in known:
                raise ValueError(f"parameter names from the time model ({', '.join(known)}), got {name!r}")
            try:
                known[name].validate_python(p.value)
            except ValidationError as exc:
                raise ValueError(f"{name} {_constraint(exc)}, got {describe(p.value)}")
        return params

    def values(self) -> dict[str, float]:
        return {k: p.value for k, p in self.parameters.items()}

    def to_json(self) -> dict:
        return self.model_dump(by_alias=True)

    def summary(self, path: str, forced: bool = False) -> dict:
        """What every output records about the calibration applied."""
        return {"file": str(path), "hardware_preset": self.hardware_preset, "device": self.device, "gpu": self.gpu,
                "torch": self.torch, "created": self.created, "cases": self.cases, "forced": forced,
                "residual_rms_log": self.fit.residual_rms_log,
                "held_out": None if self.fit.held_out is None else self.fit.held_out.model_dump(),
                "parameters": self.values()}


def _constraint(exc: ValidationError) -> str:
    err = exc.errors()[0]
    ctx = err.get("ctx") or {}
    for key, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if key in ctx:
            return f"{word} {ctx[key]}"
    return "a finite number"


def calibration_document(parameters: dict[str, float], *, hardware_preset: str, environment: dict,
                         results_files: list[str], cases: int, fit: dict, std: dict[str, float] | None = None,
                         created: str | None = None, provenance: dict | None = None) -> dict:
    """A validated calibration document (raises ValueError naming the bad field if the inputs are not one).

    ``environment`` is a profiler results environment (device, gpu, torch, cuda, dtype); ``fit`` holds
    FitRecord's fields (method, measurements, fitted, fixed, regularisation, residual_rms_log, at_bounds)."""
    std = std or {}
    doc = {"schema": SCHEMA,
           "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "hardware_preset": hardware_preset, "device": environment.get("device") or "unknown",
           "gpu": environment.get("gpu"), "torch": environment.get("torch") or "unknown",
           "cuda": environment.get("cuda"), "dtype": environment.get("dtype"),
           "results_files": [str(Path(s)) for s in results_files], "cases": int(cases), "fit": fit,
           "parameters": {k: {"value": float(v), "std": None if std.get(k) is None else float(std[k])}
                          for k, v in parameters.items()}}
    if provenance is not None:
        doc["provenance"] = provenance
    try:
        return CalibrationFile.model_validate(doc).to_json()
    except ValidationError as exc:
        raise ValueError(f"not a valid calibration: {validation_message(exc)}") from None


def write_calibration(path: str | Path, doc: dict) -> None:
    """Validate ``doc`` (from calibration_document) and write it atomically."""
    from .fileio import atomic_write_json
    try:
        CalibrationFile.model_validate(doc)
    except ValidationError as exc:
        raise ValueError(f"not a valid calibration: {validation_message(exc)}") from None
    atomic_write_json(path, doc)


def validation_message(exc: ValidationError) -> str:
    from .strict import error_from_validation
    err = error_from_validation(exc, None)
    return f"{err.field}: {err.expected}"


def parse_calibration(doc: Any, where: str) -> CalibrationFile:
    from .strict import validate
    if not isinstance(doc, dict) or doc.get("schema") not in READABLE_SCHEMAS:
        got = doc.get("schema") if isinstance(doc, dict) else doc
        raise ScenarioError(where, "schema", f"a calibration file written by 'trsim calibrate' (schema {SCHEMA!r}), "
                            f"got {describe(got)}")
    return validate(CalibrationFile, doc, where=where)


def load_calibration(path: str | Path, expected_hardware: str | None = None, force: bool = False) -> CalibrationFile:
    """Read and validate a calibration file; with ``expected_hardware`` (a preset or hardware name), refuse
    one fitted on other hardware unless ``force``. Errors name the calibration file."""
    from .reader import read_document
    p = Path(path)
    cal = parse_calibration(read_document(p, what="calibration file", fmt="json"), str(p))
    if expected_hardware is not None and not force:
        check_hardware(cal, expected_hardware, str(p))
    return cal


def apply_calibration(hw, cal: CalibrationFile, where: str, keep: set[str] = frozenset()):
    """``hw`` (a HardwareSpec) with the calibration's parameters applied (except those in ``keep``, which the
    user set explicitly), validated as a whole: a value the hardware cannot take (an efficiency above 1 of a
    datasheet peak) is blamed on the calibration file."""
    from .config import HardwareSpec
    from .strict import validate
    values = {k: v for k, v in cal.values().items() if k not in keep}
    try:
        return validate(HardwareSpec, {**hw.model_dump(), **values}, where=where, prefix="parameters")
    except ScenarioError as err:
        raise ScenarioError(where, err.field, f"{err.expected} (applied to hardware {hw.name})") from None


def check_hardware(cal: CalibrationFile, expected_hardware: str, where: str) -> None:
    if cal.hardware_preset != expected_hardware:
        fitted_on = cal.gpu or cal.device
        raise ScenarioError(where, "hardware_preset",
                            f"a calibration for {expected_hardware} (the hardware it is applied to), got one fitted "
                            f"for {cal.hardware_preset} on {fitted_on} (torch {cal.torch}); pass --force to apply "
                            f"it anyway")
