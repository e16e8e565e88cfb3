"""The published-runs validation suite: every runs file in ``validate/published/`` priced with the shipped
presets and, held out, with a k-fold calibration fitted within that source.

    trsim validate --published [--format json]        # or: python -m trsim.validate.suite

Per source: rows, rows priced, rows that need parallel-training support this trsim does not have yet
(reported, not dropped silently), median and max absolute step-time error with the presets and held out
after calibration, and the peak-memory error where the source gives it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from trsim.simulator.errors import ScenarioError

from .commands import _pct, _summary, runs_report
from .fit import base_hardware, fit
from .runs import common_hardware, load_runs

PUBLISHED = Path(__file__).resolve().parent / "published"
FOLDS = 5
# What every uncalibrated prediction quotes as the evidence behind its hardware preset (trsim simulate's
# "evidence" line and JSON key): the presets' step-time errors on the published runs, per preset.
# Written by the command below; tests/test_validate.py (_evidence_is_current) fails when it no longer
# matches the model.
EVIDENCE = PUBLISHED / "evidence.json"
EVIDENCE_COMMAND = "python -m trsim.validate.suite --folds 0 --evidence validate/published/evidence.json"


def suite_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or PUBLISHED).glob("*.yaml"))


def run_source(path: Path, folds: int = FOLDS) -> dict:
    runs, unsupported, meta = load_runs(path, allow_unsupported=True)
    out = {"source": path.stem, "citation": meta["source"], "rows": len(runs) + len(unsupported),
           "priced": len(runs), "needs_parallelism_support": len(unsupported),
           "unsupported_fields": sorted({u.field for u in unsupported})}
    if not runs:
        out["summary"] = None
        return out
    preset = common_hardware(runs, str(path))
    scheme = ("k", folds) if folds and len(runs) >= 2 else None
    rep = runs_report(runs, base_hardware(preset), scheme)
    out.update(hardware=preset, summary=rep["summary"], runs=rep["runs"])
    return out


def run_suite(directory: Path | None = None, folds: int | None = FOLDS, sources=None) -> list[dict]:
    """Every source (or those named in ``sources``); ``folds=None`` prices with the presets only."""
    return [run_source(p, folds) for p in suite_files(directory) if not sources or p.stem in sources]


def _priced_sources(directory: Path | None = None, sources=None):
    """(stem, runs, hardware preset) of every runs file with priced runs (or those named in ``sources``)."""
    for p in suite_files(directory):
        if sources and p.stem not in sources:
            continue
        runs, _, _ = load_runs(p, allow_unsupported=True)
        if runs:
            yield p.stem, runs, common_hardware(runs, str(p))


def transfer(directory: Path | None = None, sources=None) -> dict[str, dict]:
    """Leave one source out, per hardware preset: calibrate on every other source's runs priced on the same
    preset and predict the left-out source's. This is what a calibration fitted to published runs of other
    stacks is worth on a stack it never saw (the question a user asks before borrowing one); a preset with
    a single source has nothing to transfer from and is absent. Source -> {hardware, trained_on, rows,
    predicted, median and max absolute error over the finite predictions, errors_pct (run -> error),
    error (why no fit, if none)}.

    The training set is the other files' runs, whole: no fold assignment is involved, so a run of the
    left-out file never trains the fit that predicts it, even where another file holds an identical one."""
    by_preset: dict[str, list] = {}
    for stem, runs, preset in _priced_sources(directory):
        by_preset.setdefault(preset, []).append((stem, runs))
    out: dict[str, dict] = {}
    for preset, groups in sorted(by_preset.items()):
        if len(groups) < 2:
            continue
        hw0 = base_hardware(preset)
        for stem, test in groups:
            if sources and stem not in sources:
                continue
            train = [r for other, runs in groups if other != stem for r in runs]
            m = {"hardware": preset, "trained_on": sorted(o for o, _ in groups if o != stem), "rows": len(test),
                 "predicted": 0, "median_abs_pct": None, "max_abs_pct": None, "errors_pct": {}}
            try:
                res = fit(train, hw0)
            except ScenarioError as err:
                out[stem] = {**m, "error": err.expected}
                continue
            for r in test:
                pred = r.predicted_time(r.hardware_with(res.values, hw0))
                if np.isfinite(pred) and pred > 0:
                    m["errors_pct"][r.name] = _pct(pred, r.measured["step_time_s"])
            median, worst = _summary(list(m["errors_pct"].values()))
            out[stem] = {**m, "predicted": len(m["errors_pct"]), "median_abs_pct": median, "max_abs_pct": worst}
    return out


FEW_RUNS = (1, 2, 3, 5)   # default training-set sizes of ``few_runs``
FEW_RUNS_DRAWS = 8       # random training sets per size and source


def _draw(stem: str, size: int, draw: int, n_units: int) -> list[int]:
    """The units of one training set: ``size`` distinct configurations, drawn by a generator seeded from
    the source, the size and the draw (the same sets on every machine, whatever other sources run)."""
    seed = int.from_bytes(hashlib.sha256(f"{stem}/{size}/{draw}".encode()).digest()[:8], "little")
    return sorted(np.random.default_rng(seed).choice(n_units, size, replace=False).tolist())


def few_runs(directory: Path | None = None, sources=None, sizes=FEW_RUNS, draws: int = FEW_RUNS_DRAWS) -> dict:
    """What a calibration from a handful of logged steps is worth: per source and training-set size N,
    ``draws`` random sets of N distinct configurations of the source (runs with identical configurations
    go together, as in the k-fold), each fitted alone and scored on every run outside it.

    Source -> {hardware, rows, presets: {median_abs_pct, p90_abs_pct} over every run, sizes: {N: {draws,
    refused (fits the data could not support), scored, median_abs_pct, p90_abs_pct (over every draw's
    held-out runs together), worse_than_presets (fraction of draws whose held-out median exceeds the
    presets' on the same runs)}}}. A size needs at least one configuration left to score."""
    from .crossval import _units
    out: dict[str, dict] = {}
    for stem, runs, preset in _priced_sources(directory, sources):
        hw0 = base_hardware(preset)
        measured = np.array([r.measured_time for r in runs])
        presets = np.array([abs(_pct(r.predicted_time(), m)) for r, m in zip(runs, measured)])
        unit_of = np.array(_units([r.signature for r in runs]))
        n_units = int(unit_of.max()) + 1
        entry = {"hardware": preset, "rows": len(runs), "configurations": n_units,
                 "presets": {"median_abs_pct": float(np.median(presets)),
                             "p90_abs_pct": float(np.percentile(presets, 90))}, "sizes": {}}
        for size in sizes:
            if size >= n_units:
                continue
            errors, worse, refused = [], 0, 0
            for d in range(draws):
                train = np.isin(unit_of, _draw(stem, size, d, n_units))
                try:
                    res = fit([r for r, t in zip(runs, train) if t], hw0)
                except ScenarioError:
                    refused += 1
                    continue
                e = np.array([abs(_pct(r.predicted_time(r.hardware_with(res.values, hw0)), m))
                              for r, m, t in zip(runs, measured, train) if not t])
                e = e[np.isfinite(e)]
                if e.size:
                    errors.append(e)
                    worse += float(np.median(e)) > float(np.median(presets[~train]))
            pooled = np.concatenate(errors) if errors else np.array([])
            entry["sizes"][str(size)] = {
                "draws": draws, "refused": refused, "scored": int(pooled.size),
                "median_abs_pct": float(np.median(pooled)) if pooled.size else None,
                "p90_abs_pct": float(np.percentile(pooled, 90)) if pooled.size else None,
                "worse_than_presets": round(worse / max(len(errors), 1), 3)}
        out[stem] = entry
    return out


def print_few_runs(few: dict[str, dict], console: Console) -> None:
    sizes = sorted({int(n) for e in few.values() for n in e["sizes"]})
    draws = sorted({c["draws"] for e in few.values() for c in e["sizes"].values()})
    t = Table(title="calibrated from N logged runs of the source: absolute step-time error on the source's "
                    f"other runs (median / 90th percentile over {'/'.join(map(str, draws))} random sets of N; "
                    "in brackets: share of sets worse than the presets)", title_justify="left")
    t.add_column("source")
    t.add_column("presets", justify="right")
    for n in sizes:
        t.add_column(f"N = {n}", justify="right")
    for stem, e in few.items():
        cells = []
        for n in sizes:
            c = e["sizes"].get(str(n))
            cells.append("-" if not c or c["median_abs_pct"] is None else
                         f"{c['median_abs_pct']:.1f} / {c['p90_abs_pct']:.1f} ({100 * c['worse_than_presets']:.0f}%)")
        t.add_row(stem, f"{e['presets']['median_abs_pct']:.1f} / {e['presets']['p90_abs_pct']:.1f}", *cells)
    console.print(t)


def weighted_quantiles(values, weights, qs) -> list[float]:
    """Quantiles of ``values`` with ``weights`` (the weighted empirical distribution, interpolated between the
    midpoints of each value's weight; equal weights give numpy's 'hazen' quantiles). Hand-written because
    numpy's weighted quantiles (``np.quantile(..., weights=)``, numpy 2.0+) only offer the inverted-CDF
    method, which jumps between rows on a source of a few runs."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    order = np.argsort(v)
    v, w = v[order], w[order]
    mid = (np.cumsum(w) - w / 2) / w.sum()
    return [float(np.interp(q, mid, v)) for q in qs]


def evidence(results: list[dict]) -> dict:
    """Per hardware preset: how far the presets' step times are from the published runs priced on it
    (absolute and signed percentage errors; negative = predicted too fast). Only the preset-priced errors
    are used, never the calibrated ones: this is what an uncalibrated prediction can claim."""
    import datetime

    from trsim import __version__
    def summary(errors, weights=None) -> dict:
        err = np.asarray(errors, dtype=float)
        # measured / predicted: what a prediction of this preset is multiplied by to land on the run. Its 10th,
        # 50th and 90th percentiles, each source weighted equally where pooled (weights: 1 / its rows)
        ratio = 100.0 / (100.0 + err)
        q = weighted_quantiles(ratio, np.ones_like(ratio) if weights is None else weights, (0.1, 0.5, 0.9))
        return {"runs": int(err.size), "median_abs_pct": round(float(np.median(np.abs(err))), 2),
                "max_abs_pct": round(float(np.abs(err).max()), 2),
                "signed_median_pct": round(float(np.median(err)), 2),
                "too_fast_fraction": round(float(np.mean(err < 0)), 3),
                "measured_over_predicted": {"p10": round(q[0], 3), "p50": round(q[1], 3), "p90": round(q[2], 3)}}

    # per source, and pooled: a source with many rows (vTrain) must not stand for the others
    presets: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: r["source"]):
        if r.get("runs"):
            errors = [x["error_pct"] for x in r["runs"]]
            e = presets.setdefault(r["hardware"], {"errors": [], "weights": [], "sources": {}})
            e["errors"] += errors
            e["weights"] += [1.0 / len(errors)] * len(errors)
            e["sources"][r["source"]] = summary(errors)
    presets = {k: {**summary(v.pop("errors"), v.pop("weights")), **v} for k, v in sorted(presets.items())}
    return {"schema": "trsim.evidence/1", "written_by": EVIDENCE_COMMAND, "trsim_version": __version__,
            "created": datetime.date.today().isoformat(), "presets": presets}


def _cell(s, key):
    if not s or s[key]["median_abs_pct"] is None:
        return "-", "-"
    return f"{s[key]['median_abs_pct']:.1f}%", f"{s[key]['max_abs_pct']:.1f}%"


def print_suite(results: list[dict], console: Console) -> None:
    t = Table(title="published runs: absolute step-time error (presets; held out after k-fold calibration within "
              "the source) and peak-memory error", title_justify="left")
    for col in ("source", "rows", "priced", "needs parallelism", "presets median", "presets max", "presets signed",
                "k-fold median", "k-fold max", "memory median", "memory max"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for r in results:
        s = r.get("summary")
        errs = [x["error_pct"] for x in r.get("runs", []) if x.get("error_pct") is not None]
        signed = f"{np.median(errs):+.1f}%" if errs else "-"  # negative: predicted too fast
        t.add_row(r["source"], str(r["rows"]), str(r["priced"]), str(r["needs_parallelism_support"]),
                  *_cell(s, "step_time"), signed, *_cell(s, "step_time_held_out"), *_cell(s, "peak_memory"))
    console.print(t)
    for r in results:
        if r["needs_parallelism_support"]:
            console.print(f"[yellow]{r['source']}[/yellow]: {r['needs_parallelism_support']} rows need parallelism "
                          f"support (fields: {', '.join(r['unsupported_fields'])})")


def print_transfer(results: list[dict], moved: dict[str, dict], console: Console) -> None:
    t = Table(title="calibrated on the other sources of the same GPU, this source left out (absolute step-time "
              "error), against the presets", title_justify="left")
    for col in ("source", "calibrated on", "rows", "presets median", "presets max", "transfer median",
                "transfer max"):
        t.add_column(col, justify="left" if col in ("source", "calibrated on") else "right")
    presets = {r["source"]: r.get("summary") for r in results}
    for stem, m in moved.items():
        pm = _cell(presets.get(stem), "step_time") if presets.get(stem) else ("-", "-")
        tm = ("-", "-") if m["median_abs_pct"] is None else (f"{m['median_abs_pct']:.1f}%", f"{m['max_abs_pct']:.1f}%")
        t.add_row(stem, ", ".join(m["trained_on"]), f"{m['predicted']}/{m['rows']}", *pm, *tm)
    if moved:
        console.print(t)
    else:
        console.print("transfer: no GPU preset has runs from two sources among those asked for; nothing to move")
    for stem, m in moved.items():
        if m.get("error"):
            console.print(f"[yellow]{stem}[/yellow]: no calibration from {', '.join(m['trained_on'])}: {m['error']}")


def plot_suite(results: list[dict], path) -> None:
    """Predicted against measured step time for every published row, one colour per source, on log axes
    with y = x and the +-15% band of the presets target; a second panel held out after calibration
    within the source where the suite computed it."""
    from trsim.cli import require_matplotlib
    from trsim.simulator.fileio import atomic_savefig
    plt = require_matplotlib()
    panels = [("error_pct", "presets")]
    if any(x.get("held_out_step_time_s") is not None for r in results for x in r.get("runs", [])):
        panels.append(("held_out_error_pct", "held out (k-fold within the source)"))
    every = [x["measured_step_time_s"] * f for r in results for x in r.get("runs", [])
             for f in [1.0] + [1 + x[k] / 100 for k, _ in panels if x.get(k) is not None]]
    if not every:
        raise ValueError("no priced published run to plot")
    lo, hi = min(every) * 0.8, max(every) * 1.25  # every point, measured and predicted, inside the axes
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for r in results:
            pts = [(x["measured_step_time_s"], x["measured_step_time_s"] * (1 + x[key] / 100))
                   for x in r.get("runs", []) if x.get(key) is not None]
            if pts:
                ax.scatter(*zip(*pts), s=14, alpha=0.75, label=f"{r['source']} ({len(pts)})")
        ax.plot([lo, hi], [lo, hi], "k-", lw=1)
        for f in (0.85, 1.15):
            ax.plot([lo, hi], [lo * f, hi * f], "k:", lw=0.8)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured step time (s)",
               ylabel="predicted step time (s)", title=title)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("published training runs (dotted: +-15%)", fontsize=10)
    atomic_savefig(fig, path)
    plt.close(fig)


def published_command(args, console) -> int:
    folds = getattr(args, "folds", None)  # trsim validate leaves it None unless --folds is given
    results = run_suite(folds=(FOLDS if folds is None else folds) or None, sources=getattr(args, "sources", None))
    from trsim.simulator.fileio import atomic_write_json
    moved = transfer(sources=getattr(args, "sources", None)) if getattr(args, "transfer", False) else None
    few_sizes = getattr(args, "few_runs", None)
    few = few_runs(sources=getattr(args, "sources", None), sizes=few_sizes) if few_sizes else None
    doc = {"sources": results, **({"transfer": moved} if moved is not None else {}),
           **({"few_runs": few} if few is not None else {})}
    if getattr(args, "out", None):
        atomic_write_json(args.out, doc)
    if getattr(args, "evidence", None):
        atomic_write_json(args.evidence, evidence(results))
    if getattr(args, "plot", None):
        plot_suite(results, args.plot)
    if args.format == "json":
        print(json.dumps(doc, indent=1, allow_nan=False))
    else:
        print_suite(results, console)
        if moved is not None:
            print_transfer(results, moved, console)
        if few is not None:
            print_few_runs(few, console)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trsim.validate.suite", description=__doc__.split("\n")[0])
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", help="also write the results as JSON")
    from .cli import _folds, _sizes
    p.add_argument("--folds", type=_folds, default=FOLDS, help="k of the k-fold calibration (0: presets only)")
    p.add_argument("--sources", nargs="*", help="only these sources (file stems), e.g. korthikanti_a100")
    p.add_argument("--transfer", action="store_true",
                   help="also calibrate on the other sources of each GPU preset and predict the one left out "
                        "(a few minutes)")
    p.add_argument("--few-runs", type=_sizes, nargs="+", metavar="N",
                   help="also calibrate from N logged runs of each source (random sets, "
                        f"{FEW_RUNS_DRAWS} a size) and score the rest, e.g. --few-runs 1 2 3 5 (a few minutes)")
    p.add_argument("--evidence", help="also write the per-preset error summary that trsim simulate quotes "
                                      f"(the shipped one: {EVIDENCE_COMMAND})")
    p.add_argument("--plot", help="PNG (or SVG/PDF) of predicted against measured step time for every row")
    args = p.parse_args(argv)
    from trsim.cli import check_outputs, make_console
    try:
        check_outputs(args, (".json",))
        check_sources(args.sources)
        if args.evidence:
            from trsim.simulator.fileio import check_writable
            check_writable(args.evidence, "--evidence", (".json",))
    except ScenarioError as err:
        print(f"trsim: error: {err}", file=sys.stderr)
        return 2
    return published_command(args, make_console())


def check_sources(sources) -> None:
    """Every name in ``--sources`` is a runs file of the suite (before any work is done)."""
    known = [p.stem for p in suite_files()]
    for name in sources or ():
        if name not in known:
            raise ScenarioError("<arguments>", "sources", f"one of {', '.join(known)}, got {name!r}")


if __name__ == "__main__":
    sys.exit(main())
