"""Fitting the time model's hardware parameters to profiler measurements.

Residuals are log(predicted / measured) for each operator class the profiler separates (matmul,
attention, memory-bound, gather) and for the whole forward+backward time, so every case and class
weighs the same whatever its size. ``attention_backward_ratio`` is not fitted: with forward and
backward measured together it cannot be told apart from ``attention_efficiency``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
from scipy.optimize import least_squares

from trsim.simulator.config import HardwareSpec, ModelSpec
from trsim.simulator.plan import Plan
from trsim.simulator.presets import HARDWARE_PRESETS
from trsim.simulator.simulate import predict_case

PARAMS = ("matmul_efficiency", "matmul_half_rows", "attention_efficiency", "attention_half_keys",
          "bandwidth_efficiency", "gather_efficiency", "layer_overhead_s", "step_overhead_s")
LOWER = np.array([1e-3, 0.0, 1e-3, 0.0, 1e-3, 1e-3, 0.0, 0.0])
UPPER = np.array([1.0, 1e5, 1.0, 1e5, 1.0, 1.0, 0.1, 1.0])
CLASSES = ("matmul", "attention", "memory_bound", "gather")


@dataclass
class Case:
    """One measured, successfully profiled case, with everything the simulator needs to predict it."""
    source: str
    schedule: str
    task: str
    model: ModelSpec
    plan: Plan
    micro_batch: int
    settings: dict
    measured: dict          # classes_s, fwd_bwd_s, optimizer_s, activation_bytes, peak_bytes, static_bytes
    flops: dict             # counter name -> counts
    device: str

    @property
    def size(self) -> str:
        img = int(self.plan.layout.tokens[self.plan.layout.is_image].sum())
        return f"d{self.model.hidden_size}-b{self.micro_batch}-img{img}"

    @property
    def name(self) -> str:
        return f"{self.schedule}/{self.task}@{self.size}"

    def predict(self, hw: HardwareSpec) -> dict:
        s = self.settings
        return predict_case(self.model, hw, self.plan, self.micro_batch, weight_bytes=s["weight_bytes"],
                            gradient_bytes=s["gradient_bytes"], optimizer_bytes=s["optimizer_bytes"],
                            activation_bytes=s["activation_bytes"], attention=s["attention"], lm_head=s["lm_head"])


def cases_from_results(loaded) -> list[Case]:
    """loaded: [(path, ProfileResults)] -> the cases that ran (status ok)."""
    out = []
    for path, res in loaded:
        model = ModelSpec(**res.model)
        st = res.settings.model_dump()
        for c in res.cases:
            if c.status != "ok" or c.time is None:
                continue
            plan = Plan.from_dict(c.plan)
            out.append(Case(source=str(path), schedule=c.schedule, task=c.task, model=model, plan=plan,
                            micro_batch=c.micro_batch, settings=st, device=res.environment.device,
                            measured={"classes_s": c.time.classes_s, "fwd_bwd_s": c.time.forward_backward.median_s,
                                      "optimizer_s": c.time.optimizer.median_s,
                                      "activation_bytes": c.memory.activation_saved_bytes,
                                      "peak_bytes": c.memory.peak_allocated_bytes,
                                      "static_bytes": c.memory.static_bytes},
                            flops={k: v.model_dump() for k, v in (c.flops or {}).items()}))
    return out


def hardware_for(gpu: str | None, device: str) -> str:
    name = (gpu or "").upper()
    if "H200" in name:
        return "h200"
    if "H100" in name:
        return "h100-sxm"
    if "A100" in name:
        return "a100-sxm-80g"
    return "cpu" if not device.startswith("cuda") else "h100-sxm"


def base_hardware(preset: str) -> HardwareSpec:
    return HardwareSpec(name=preset, **{k: v for k, v in HARDWARE_PRESETS[preset].items() if k != "source"})


def with_params(hw: HardwareSpec, theta) -> HardwareSpec:
    return hw.model_copy(update={k: float(v) for k, v in zip(PARAMS, theta)})


def _residuals(theta, cases: list[Case], hw0: HardwareSpec) -> np.ndarray:
    hw = with_params(hw0, theta)
    res = []
    for c in cases:
        p = c.predict(hw)
        for k in CLASSES:
            meas = c.measured["classes_s"].get(k, 0.0)
            if meas > 0 and p["time_s"][k] > 0:
                res.append(np.log(p["time_s"][k] / meas))
        res.append(np.log(p["fwd_bwd_s"] / c.measured["fwd_bwd_s"]))
    return np.asarray(res)


@dataclass
class FitResult:
    hardware: HardwareSpec
    values: dict[str, float]
    std: dict[str, float]
    residual_rms: float
    cases: int
    at_bound: list[str] = field(default_factory=list)


def fit(cases: list[Case], hw0: HardwareSpec) -> FitResult:
    """Bounded nonlinear least squares over PARAMS, started from hw0; standard errors from the Jacobian."""
    if not cases:
        raise ValueError("no successfully profiled cases to fit")
    x0 = np.clip(np.array([getattr(hw0, k) for k in PARAMS], dtype=float), LOWER + 1e-9, UPPER - 1e-9)
    scale = np.maximum(np.abs(x0), 1e-6)
    sol = least_squares(lambda z: _residuals(z * scale, cases, hw0), x0 / scale, bounds=(LOWER / scale, UPPER / scale),
                        method="trf", x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
    theta = sol.x * scale
    J = sol.jac / scale[None, :]
    dof = max(1, sol.fun.size - theta.size)
    s2 = float(sol.fun @ sol.fun) / dof
    cov = np.linalg.pinv(J.T @ J) * s2
    std = np.sqrt(np.clip(np.diag(cov), 0, None))
    at_bound = [k for k, v, lo, hi in zip(PARAMS, theta, LOWER, UPPER) if np.isclose(v, lo) or np.isclose(v, hi)]
    return FitResult(hardware=with_params(hw0, theta), values=dict(zip(PARAMS, map(float, theta))),
                     std=dict(zip(PARAMS, map(float, std))), residual_rms=float(np.sqrt(np.mean(sol.fun ** 2))),
                     cases=len(cases), at_bound=at_bound)


def calibration_document(fitres: FitResult, sources: list[str], environment: dict, preset: str) -> dict:
    """The calibration file's contents, validated by trsim.simulator.calibration (which also reads it back)."""
    from trsim.simulator.calibration import calibration_document as _document
    fit_record = {"method": "bounded nonlinear least squares (scipy.optimize.least_squares, trf)",
                  "measurements": fitres.cases, "fitted": list(PARAMS),
                  "fixed": {"attention_backward_ratio": fitres.hardware.attention_backward_ratio},
                  "residual_rms_log": fitres.residual_rms, "at_bounds": list(fitres.at_bound)}
    return _document(fitres.values, hardware_preset=preset, environment=environment, results_files=sources,
                     cases=fitres.cases, fit=fit_record, std=fitres.std)
