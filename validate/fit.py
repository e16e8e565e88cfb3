"""Fitting the time model's hardware parameters to measurements: the profiler's per-operator times or
end-to-end step times of training runs (``validate/runs.py``), one well-posed least-squares problem.

* Residuals: log(predicted / measured) for every measured quantity (each profiled operator class, on
  a GPU, and the forward+backward time of a case; the step time of a run), so every measurement weighs
  the same whatever its size, scaled by the assumed timing noise ``DATA_SIGMA``.
* Bounds are physical: an efficiency is at most 1 of a datasheet peak, but a device whose peak is a
  nominal estimate (``nominal_peak``, e.g. the CPU preset) may exceed it, up to ``NOMINAL_CAP``.
* A weak prior toward the preset (a factor of ``e`` for efficiencies, a stated scale for fixed costs)
  keeps a handful of runs from sending parameters to their bounds.
* Identifiability: a parameter no measurement depends on (or none by a tenth of the timing noise per step
  of the parameter's scale), or one the data cannot tell apart from
  others (the column-normalised Jacobian's condition number above ``COND_LIMIT``), is fixed at the
  preset value and named in the result with the reason, before the final fit. Fewer measurements than
  free parameters fixes parameters until the problem is determined; if none remains the fit is refused.
* Uncertainties: the posterior covariance (data and prior) scaled by the residual variance; where the
  data leave no degree of freedom the standard error is reported as not estimable, never as zero.

``attention_backward_ratio`` is not fitted: it is the FLOP convention the attention efficiency is
quoted in (backward = 2.5 x forward), not a property a measurement of the total can separate.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from trsim.simulator.config import NOMINAL_EFFICIENCY_CAP as NOMINAL_CAP
from trsim.simulator.config import HardwareSpec, ModelSpec
from trsim.simulator.errors import ScenarioError
from trsim.simulator.plan import Plan
from trsim.simulator.presets import HARDWARE_PRESETS
from trsim.simulator import costs
from trsim.simulator.simulate import predict_case

# name: (lower, upper for a datasheet peak, prior kind, prior scale). "log": log(theta / preset) / scale;
# "abs": (theta - preset) / scale, for fixed costs whose preset may be zero.
PARAM_SPECS: dict[str, tuple[float, float, str, float]] = {
    "matmul_efficiency": (0.01, 1.0, "log", 1.0),
    # the same ceiling for fp8 GEMMs (Transformer Engine's): fitted from fp8 runs, fixed where none is
    # measured; a GPU without fp8 tensor cores (no preset value) does not have the parameter
    "matmul_efficiency_fp8": (0.01, 1.0, "log", 1.0),
    "matmul_half_k": (0.0, 4096.0, "abs", 256.0),
    "matmul_overhead_s": (0.0, 1e-3, "abs", 2e-5),
    "attention_efficiency": (0.005, 1.0, "log", 1.0),
    "attention_half_keys": (0.0, 1e5, "abs", 1000.0),
    # masked attention (HiMix's kv_only layers: FlexAttention on CUDA, a masked SDPA kernel on the CPU) over
    # the unmasked curve: kernels differ most here (the first H200 campaign measured FlexAttention at
    # 1.5-4.5 times the A100-derived preset's time)
    "attention_masked_factor": (0.01, 1.0, "log", 1.0),
    "bandwidth_efficiency": (0.01, 1.0, "log", 1.0),
    "gather_efficiency": (0.005, 1.0, "log", 1.0),
    "layer_overhead_s": (0.0, 0.1, "abs", 2e-4),
    "step_overhead_s": (0.0, 10.0, "abs", 5e-3),
    "host_layer_s": (0.0, 0.1, "abs", 2e-3),
    # bus bandwidth over link bandwidth of the collectives: a cluster's network (adapters, switches, NCCL
    # version) is what a user's logs pin down best and a preset least
    "collective_efficiency": (0.01, 1.0, "log", 1.0),
}
PARAMS = tuple(PARAM_SPECS)
EFFICIENCIES = {"matmul_efficiency", "matmul_efficiency_fp8", "attention_efficiency", "bandwidth_efficiency", "gather_efficiency",
                "collective_efficiency"}  # (attention_masked_factor: a ratio of two kernels, at most 1 everywhere)
DATA_SIGMA = 0.03        # assumed relative timing noise of one measurement
WEAK_EFFECT = 0.1        # a parameter moving no measurement by this fraction of DATA_SIGMA per step of its scale is fixed
COND_LIMIT = 1e4         # column-normalised Jacobian condition number above which a direction is unidentified
# when a direction is unidentified, fix the first of its dominant parameters in this order. The device-side
# gaps between a layer's kernels (layer_overhead_s) go before the host's dispatch cost: at one depth the
# two per-layer costs and the per-micro-batch cost (on both timelines) are linearly dependent, and the
# host's cost is what dispatch-bound cases measure, the gaps a few microseconds the prior already knows
FIX_ORDER = ("matmul_overhead_s", "layer_overhead_s", "host_layer_s", "attention_masked_factor", "gather_efficiency",
             "matmul_half_k", "attention_half_keys",
             "step_overhead_s", "bandwidth_efficiency", "collective_efficiency", "attention_efficiency",
             "matmul_efficiency", "matmul_efficiency_fp8")
# an involved parameter whose effect (Jacobian column norm per step of its scale) is below this fraction of the
# strongest involved one's is fixed first, whatever FIX_ORDER says (_unidentified)
SENSITIVITY_RATIO = 0.25
CLASSES = ("matmul", "attention", "memory_bound", "gather")
# On a CPU only the step time is fitted, not the profiler's per-operator classes: those are host self
# times on the wall clock, inflated by the profiler's own per-event cost and by whatever a neighbour
# takes, and they charge each operator's dispatch to its class, where the time model prices dispatch
# per layer (``layer_overhead_s``, a component of its own). The step time is measured on the profiling
# thread's CPU clock without the profiler (profiler/measure.py ``step_clock``).
CPU_CLASSES: tuple[str, ...] = ()


def params_for(hw0: HardwareSpec) -> tuple[str, ...]:
    """The parameters of PARAMS this hardware profile has (``matmul_efficiency_fp8`` only where the GPU
    has fp8 tensor cores, ``peak_flops_fp8``)."""
    return tuple(k for k in PARAMS if k != "matmul_efficiency_fp8" or hw0.peak_flops_fp8 is not None)


def _start(hw0: HardwareSpec, k: str) -> float:
    """The preset's value of parameter ``k``; an fp8 GPU without an fp8 ceiling of its own runs fp8 GEMMs at
    the bf16 one (``efficiency.matmul_ceiling``), which is where its fit starts."""
    if k == "matmul_efficiency_fp8":
        from trsim.simulator.efficiency import matmul_ceiling
        return float(matmul_ceiling(hw0, "fp8"))
    return float(getattr(hw0, k))


def bounds(hw0: HardwareSpec, names) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([PARAM_SPECS[k][0] for k in names])
    hi = np.array([NOMINAL_CAP if (hw0.nominal_peak and k in EFFICIENCIES) else PARAM_SPECS[k][1] for k in names])
    # the attention curve peaks at its best head dim's factor, and the hardware schema holds that product to the
    # cap (HardwareSpec): a fit beyond it would write a calibration no scenario could apply
    for i, k in enumerate(names):
        if k == "attention_efficiency":
            hi[i] = hi[i] / max(1.0, max(hw0.attention_head_dim_factors))
    return lo, hi


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
        return f"d{self.model.hidden_size}-L{self.plan.num_layers}-b{self.micro_batch}-img{img}"

    @property
    def name(self) -> str:
        return f"{self.schedule}/{self.task}@{self.size}"

    @property
    def signature(self) -> str:
        """Identical plans (same model, micro-batch, compiled rows) have the same signature, whatever
        schedule produced them: cross-validation keeps them in one fold."""
        doc = {"model": self.model.model_dump(exclude_none=True), "micro_batch": self.micro_batch, "plan": self.plan.to_dict(),
               "settings": {k: self.settings[k] for k in ("activation_bytes", "attention", "lm_head")}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def predict(self, hw: HardwareSpec) -> dict:
        s = self.settings
        return predict_case(self.model, hw, self.plan, self.micro_batch, weight_bytes=s["weight_bytes"],
                            gradient_bytes=s["gradient_bytes"], optimizer_bytes=s["optimizer_bytes"],
                            activation_bytes=s["activation_bytes"], attention=s["attention"], lm_head=s["lm_head"])

    @functools.cached_property
    def counts(self):
        """The plan's token counts (independent of the hardware: computed once per case)."""
        return costs.counts(self.plan, self.settings["lm_head"])

    def predicted_time(self, hw: HardwareSpec) -> float:
        """Forward+backward seconds, as ``predict(hw)["fwd_bwd_s"]`` (the sum of the same components, a
        test checks they agree), without the memory model: the fit evaluates it thousands of times."""
        t = costs.microbatch_time(self.counts, self.model, hw, self.micro_batch, self.settings["activation_bytes"],
                                  False)
        return float(sum(np.asarray(v).reshape(-1)[0] for v in t.values()))

    def hardware_with(self, values: dict, hw0: HardwareSpec) -> HardwareSpec:
        return hw0.model_copy(update=values)

    @property
    def measured_time(self) -> float:
        return self.measured["fwd_bwd_s"]

    def residuals(self, update: dict, hw: HardwareSpec) -> list[float]:
        """log(predicted / measured) per measured class and for the total; ``hw``: the updated hardware."""
        classes = CLASSES if self.device.startswith("cuda") else CPU_CLASSES
        if not classes:
            return [np.log(self.predicted_time(hw) / self.measured["fwd_bwd_s"])]
        p = self.predict(hw)
        res = []
        for k in classes:
            meas = self.measured["classes_s"].get(k, 0.0)
            if meas > 0 and p["time_s"][k] > 0:
                res.append(np.log(p["time_s"][k] / meas))
        res.append(np.log(p["fwd_bwd_s"] / self.measured["fwd_bwd_s"]))
        return res


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
            stat = f"{res.settings.statistic}_s"  # the statistic the results file declares the time
            classes = (c.time.classes_s if stat == "median_s" or c.time.classes_stats is None else
                       {k: getattr(v, stat) for k, v in c.time.classes_stats.items()})
            out.append(Case(source=str(path), schedule=c.schedule, task=c.task, model=model, plan=plan,
                            micro_batch=c.micro_batch, settings=st, device=res.environment.device,
                            measured={"classes_s": classes, "fwd_bwd_s": getattr(c.time.forward_backward, stat),
                                      "optimizer_s": getattr(c.time.optimizer, stat),
                                      "activation_bytes": c.memory.activation_saved_bytes,
                                      "peak_bytes": c.memory.peak_allocated_bytes,
                                      "static_bytes": c.memory.static_bytes},
                            flops={k: v.model_dump() for k, v in (c.flops or {}).items()}))
    return out


def hardware_for(gpu: str | None, device: str) -> str:
    name = (gpu or "").upper()
    if "B200" in name:
        return "b200"
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
    if isinstance(theta, dict):
        return hw.model_copy(update={k: float(v) for k, v in theta.items()})
    return hw.model_copy(update={k: float(v) for k, v in zip(params_for(hw), theta)})


def reference_hardware(obs, hw0: HardwareSpec) -> tuple[HardwareSpec, dict[str, str]]:
    """For training runs (``obs``): the hardware the fit starts from, pulls toward and holds a fixed
    parameter at, and the parameters it must leave alone. (Profiler cases are priced on ``hw0`` itself.)

    A training run carries its own resolved hardware (the
    preset with what its scenario sets, e.g. ``attention_kernel: cudnn``, whose curve replaces the
    preset's default kernel's): where every run agrees on a parameter, the reference takes the runs' value,
    so a parameter held fixed stays what the runs were priced with, not the preset's default kernel's.
    A parameter whose value differs between runs (two attention kernels) cannot be one fitted value: it is
    kept at each run's own value and returned with the reason."""
    own = [o.hardware for o in obs]
    update, varies = {}, {}
    for k in params_for(hw0):
        vals = sorted({float(getattr(h, k)) for h in own if getattr(h, k, None) is not None})
        if len(vals) == 1:
            update[k] = vals[0]
        elif len(vals) > 1:
            kernels = sorted({str(h.attention_kernel) for h in own})
            varies[k] = (f"differs between the runs ({len(vals)} values"
                         + (f"; attention kernels {', '.join(kernels)}" if len(kernels) > 1 else "")
                         + "): kept at each run's own value, not fitted to one")
    if len({h.attention_kernel for h in own}) == 1:
        update["attention_kernel"] = own[0].attention_kernel
    return hw0.model_copy(update=update), varies


@dataclass
class FitResult:
    hardware: HardwareSpec
    values: dict[str, float]
    std: dict[str, float | None]
    residual_rms: float
    cases: int
    measurements: int = 0
    at_bound: list[str] = field(default_factory=list)
    fixed: dict[str, str] = field(default_factory=dict)     # parameter -> why it was not fitted
    condition_number: float | None = None
    # parameters whose value differs between the runs fitted (reference_hardware): absent from ``values``,
    # so applying the result leaves each run (or scenario) its own
    varies: dict[str, str] = field(default_factory=dict)
    from_runs: bool = False   # the reference is the runs' own hardware (reference_hardware), not hw0


def _prior(theta: np.ndarray, names: list[str], x0: dict[str, float]) -> np.ndarray:
    out = []
    for k, v in zip(names, theta):
        lo, hi, kind, scale = PARAM_SPECS[k]
        if kind == "log" and x0[k] > 0:
            out.append(np.log(max(v, 1e-300) / x0[k]) / scale)
        else:
            out.append((v - x0[k]) / scale)
    return np.asarray(out) * DATA_SIGMA


class _Problem:
    """The residual function of one fit over the free parameters ``names`` (scaled to order one)."""

    def __init__(self, obs, hw0: HardwareSpec, names: list[str], fixed_values: dict[str, float], prior: bool):
        self.obs, self.hw0, self.names, self.fixed_values, self.prior = obs, hw0, names, fixed_values, prior
        self.lo, self.hi = bounds(hw0, names)
        self.x0 = {k: _start(hw0, k) for k in params_for(hw0)}
        self.start = np.clip(np.array([self.x0[k] for k in names]), self.lo + 1e-12 * (self.hi - self.lo),
                             self.hi - 1e-9 * (self.hi - self.lo))
        self.scale = np.array([max(abs(v), PARAM_SPECS[k][3] if PARAM_SPECS[k][2] == "abs" else 1e-6)
                               for k, v in zip(names, self.start)])
        self.n_data = None

    def data(self, z) -> np.ndarray:
        upd = {**self.fixed_values, **dict(zip(self.names, map(float, z * self.scale)))}
        hw = self.hw0.model_copy(update=upd)
        out = np.concatenate([np.asarray(o.residuals(upd, hw), dtype=float) for o in self.obs])
        self.n_data = out.size
        return out

    def __call__(self, z) -> np.ndarray:
        d = self.data(z)
        return np.concatenate([d, _prior(z * self.scale, self.names, self.x0)]) if self.prior else d

    def jacobian_at_start(self) -> np.ndarray:
        """Forward differences of the data residuals at the preset (stepping inward at an upper bound)."""
        z0 = self.start / self.scale
        f0 = self.data(z0)
        cols = []
        for j in range(z0.size):
            h = 1e-4 * max(abs(z0[j]), 1.0)
            if (z0[j] + h) * self.scale[j] > self.hi[j]:
                h = -h
            z = z0.copy()
            z[j] += h
            cols.append((self.data(z) - f0) / h)
        return np.stack(cols, axis=1)

    def solve(self):
        return least_squares(self, self.start / self.scale, bounds=(self.lo / self.scale, self.hi / self.scale),
                             method="trf", x_scale="jac", xtol=1e-10, ftol=1e-10, gtol=1e-10, max_nfev=200)


def _unidentified(J: np.ndarray, names: list[str]) -> tuple[str, str, float] | None:
    """The parameter to fix next, why, and the condition number (None when well determined)."""
    norms = np.linalg.norm(J, axis=0)
    if norms.max() == 0:
        return names[0], "no measurement depends on it", float("inf")
    dead = [k for k, n in zip(names, norms) if n <= 1e-9 * norms.max()]
    if dead:
        return min(dead, key=FIX_ORDER.index), "no measurement depends on it", float("inf")
    # A column's entries are the change of log(prediction) per step of the parameter's scale (its preset
    # value, or the prior's scale where that is larger: _Problem.scale), to first order. One that moves no
    # measurement by a tenth of the timing noise is decided by the prior alone, and column normalisation
    # would let it masquerade as a direction of its own (the optimizer's share of a dispatch-bound step,
    # a micro-second of a second, grows with depth like the host's dispatch and made it look separable).
    weak = [k for k, c in zip(names, np.abs(J).max(axis=0)) if c < WEAK_EFFECT * DATA_SIGMA]
    if weak:
        return (min(weak, key=FIX_ORDER.index), f"too weak an effect: a change of its scale (the preset value, "
                f"or the prior's where larger) moves no measurement by {100 * WEAK_EFFECT * DATA_SIGMA:.1f}% "
                f"(a tenth of the timing noise), to first order", float("inf"))
    Jn = J / norms
    _, s, vt = np.linalg.svd(Jn, full_matrices=True)
    s = np.concatenate([s, np.zeros(len(names) - s.size)])
    cond = float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
    if cond <= COND_LIMIT:
        return None
    v = np.abs(vt[-1])
    involved = [k for k, c in zip(names, v) if c >= 0.25 * v.max()]
    # Fix a parameter the measurements barely move before one they move a lot: left as the last free one,
    # a weak parameter would absorb the whole misfit (a single dispatch-bound run once sent the memory
    # bandwidth efficiency to 0.14 through the optimizer's 0.5% of its step). Among parameters of
    # comparable effect (within a factor SENSITIVITY_RATIO of the strongest involved), FIX_ORDER decides.
    effect = dict(zip(names, norms))
    strongest = max(effect[k] for k in involved)
    weaker = [k for k in involved if effect[k] < SENSITIVITY_RATIO * strongest]
    pick = min(weaker or involved, key=FIX_ORDER.index)
    others = [k for k in involved if k != pick]
    why = (f"not separable from {', '.join(others)} by these measurements" if others
           else "too weakly determined by these measurements")
    if J.shape[0] < len(names):
        why += f" ({J.shape[0]} measurements for {len(names)} parameters)"
    return pick, f"{why}; condition number {cond:.1e}", cond


def fit(obs, hw0: HardwareSpec, *, prior: bool = True, fixed: dict[str, str] | None = None) -> FitResult:
    """Bounded, regularised least squares over the identifiable subset of PARAMS, started from hw0.

    ``obs``: profiler ``Case``s or runs (``validate.runs.Run``): anything with ``residuals(update, hw0)``.
    Parameters the data cannot determine are fixed at hw0's values and named in ``FitResult.fixed``."""
    if not obs:
        raise ScenarioError(None, "cases", "at least one successfully measured case or run to fit")
    from_runs = all(getattr(o, "hardware", None) is not None for o in obs)
    hw0, varies = reference_hardware(obs, hw0) if from_runs else (hw0, {})
    have = tuple(k for k in params_for(hw0) if k not in varies)  # (a varying parameter is not one of this fit's)
    fixed = {k: why for k, why in (fixed or {}).items() if k in have}  # (a parameter this GPU lacks stays absent)
    x0 = {k: _start(hw0, k) for k in have}

    def problem() -> _Problem:
        names = [k for k in have if k not in fixed]
        if not names:
            raise ScenarioError(None, "runs", "measurements that determine at least one time-model parameter; "
                                "fixed: " + "; ".join(f"{k} ({v})" for k, v in fixed.items()))
        return _Problem(obs, hw0, names, {k: x0[k] for k in fixed}, prior)

    # identifiability at the preset first (cheap), then again at the solution (the model is nonlinear)
    while (bad := _unidentified(problem().jacobian_at_start(), problem().names)) is not None:
        fixed[bad[0]] = bad[1]
    while True:
        prob = problem()
        sol = prob.solve()
        J = sol.jac[:prob.n_data]
        bad = _unidentified(J, prob.names)
        if bad is None:
            break
        fixed[bad[0]] = bad[1]
    names, scale, n_data, lo, hi = prob.names, prob.scale, prob.n_data, prob.lo, prob.hi
    cond = _condition(J)
    theta = sol.x * scale
    data = sol.fun[:n_data]
    dof = n_data - len(names)
    Jfull = sol.jac / scale[None, :]
    if dof > 0:
        s2 = float(data @ data) / dof
        cov = np.linalg.pinv(Jfull.T @ Jfull) * s2
        std = {k: float(np.sqrt(max(c, 0.0))) for k, c in zip(names, np.diag(cov))}
    else:
        std = {k: None for k in names}
    values = {**{k: x0[k] for k in fixed}, **dict(zip(names, map(float, theta)))}
    std.update({k: None for k in fixed})
    at_bound = [k for k, v, a, b in zip(names, theta, lo, hi) if np.isclose(v, a, rtol=1e-6, atol=1e-15)
                or np.isclose(v, b, rtol=1e-6)]
    return FitResult(hardware=with_params(hw0, values), values={k: values[k] for k in have},
                     std={k: std[k] for k in have}, residual_rms=float(np.sqrt(np.mean(data ** 2))),
                     cases=len(obs), measurements=int(n_data), at_bound=at_bound, fixed=fixed, condition_number=cond,
                     varies=varies, from_runs=from_runs)


def _condition(J: np.ndarray) -> float:
    norms = np.linalg.norm(J, axis=0)
    s = np.linalg.svd(J / norms, compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")


def provenance(paths: list[str]) -> dict:
    """Where a calibration came from: the input files with their SHA-256, and trsim's version (the date is
    the calibration file's ``created``)."""
    from trsim import __version__
    files = []
    for p in paths:
        try:
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        except OSError:
            digest = None
        files.append({"path": str(Path(p)), "sha256": digest})
    return {"trsim_version": __version__, "inputs": files}


HELD_OUT_FOLDS = 5


def held_out_record(items, hw0: HardwareSpec, k: int = HELD_OUT_FOLDS) -> dict:
    """The calibration's own out-of-sample check, written into its file: k-fold over distinct
    configurations (``crossval.folds``: identical ones stay together), each fold refitted without its
    measurements. Fewer than three distinct configurations (or ``k`` 0): not cross-validated, and said so."""
    from .crossval import held_out
    n = len({it.signature for it in items})
    if k < 2 or n < 3:
        why = "not requested" if k < 2 else (f"{n} distinct configuration(s): too few to hold any out; on the "
                                             f"published sources, calibrations from one or two runs were often worse "
                                             f"than the presets: log three or more steps that differ in layout, "
                                             f"micro-batch or depth (README \"How many logged runs do you need?\")")
        return {"scheme": "none" if k < 2 else f"k{k}", "folds": 0, "items": 0, "note": f"not cross-validated ({why})"}
    scheme = ("k", k)
    ho = held_out(items, hw0, scheme)
    errs = [abs(100.0 * (h["predicted_s"] - items[i].measured_time) / items[i].measured_time)
            for i, h in ho.items() if h.get("predicted_s") is not None]
    errs = [e for e in errs if np.isfinite(e)]
    failed = len(ho) - len(errs)
    out = {"scheme": f"k{k}", "folds": len({h["fold"] for h in ho.values()}), "items": len(errs)}
    if errs:
        out.update(median_abs_pct=float(np.median(errs)), max_abs_pct=float(np.max(errs)))
    if failed:
        out["note"] = f"{failed} measurement(s) whose fold could not be fitted (or priced) are not scored"
    return out


def calibration_document(fitres: FitResult, sources: list[str], environment: dict, preset: str,
                         held_out: dict | None = None) -> dict:
    """The calibration file's contents, validated by trsim.simulator.calibration (which also reads it back):
    the fit record names every parameter held fixed and why, and the inputs' SHA-256 and trsim's version."""
    from trsim.simulator.calibration import calibration_document as _document
    fitted = [k for k in fitres.values if k not in fitres.fixed]
    fixed = {**{k: fitres.values[k] for k in fitres.fixed},
             "attention_backward_ratio": fitres.hardware.attention_backward_ratio,
             "memory_bound_kernel_s": fitres.hardware.memory_bound_kernel_s}
    notes = [f"{k} fixed at the preset: {why}" for k, why in fitres.fixed.items()]
    notes += [f"{k} not in this calibration: {why}" for k, why in fitres.varies.items()]
    if fitres.from_runs and "attention_efficiency" in fitres.values:
        notes.append(f"attention parameters are those of the {fitres.hardware.attention_kernel} kernel the "
                     "measurements ran (apply with the same hardware.attention_kernel)")
    notes.append("attention_backward_ratio not fitted: the FLOP convention of the attention efficiency")
    notes.append("memory_bound_kernel_s not fitted: the fixed time a memory-bound kernel the fit assumed (derived "
                 "from kernel measurements), written among the parameters so the fit is applied as it was made")
    if fitres.condition_number is not None:
        notes.append(f"condition number of the fitted parameters {fitres.condition_number:.3g}")
    fit_record = {"method": "bounded nonlinear least squares (scipy.optimize.least_squares, trf)",
                  "measurements": fitres.measurements, "fitted": fitted, "fixed": fixed,
                  "regularisation": f"log-normal prior toward the preset (data sigma {DATA_SIGMA}; "
                                    "efficiencies: factor e; fixed costs: scales in validate/fit.py PARAM_SPECS)",
                  "residual_rms_log": fitres.residual_rms, "at_bounds": list(fitres.at_bound), "notes": notes}
    if held_out is not None:
        fit_record["held_out"] = held_out
    values = {**fitres.values, "memory_bound_kernel_s": fitres.hardware.memory_bound_kernel_s}
    return _document(values, hardware_preset=preset, environment=environment,
                     results_files=sources, cases=fitres.cases, fit=fit_record,
                     std={k: v for k, v in fitres.std.items() if v is not None}, provenance=provenance(sources))
