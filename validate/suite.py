"""The published-runs validation suite: every runs file in ``validate/published/`` priced with the shipped
presets and, held out, with a k-fold calibration fitted within that source.

    trsim validate --published [--format json]        # or: python -m trsim.validate.suite

Per source: rows, rows priced, rows that need parallel-training support this trsim does not have yet
(reported, not dropped silently), median and max absolute step-time error with the presets and held out
after calibration, and the peak-memory error where the source gives it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .commands import runs_report
from .fit import base_hardware
from .runs import common_hardware, load_runs

PUBLISHED = Path(__file__).resolve().parent / "published"
FOLDS = 5


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


def _cell(s, key):
    if not s or s[key]["median_abs_pct"] is None:
        return "-", "-"
    return f"{s[key]['median_abs_pct']:.1f}%", f"{s[key]['max_abs_pct']:.1f}%"


def print_suite(results: list[dict], console: Console) -> None:
    t = Table(title="published runs: absolute step-time error (presets; held out after k-fold calibration within "
              "the source) and peak-memory error", title_justify="left")
    for col in ("source", "rows", "priced", "needs parallelism", "presets median", "presets max", "k-fold median",
                "k-fold max", "memory median", "memory max"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for r in results:
        s = r.get("summary")
        t.add_row(r["source"], str(r["rows"]), str(r["priced"]), str(r["needs_parallelism_support"]),
                  *_cell(s, "step_time"), *_cell(s, "step_time_held_out"), *_cell(s, "peak_memory"))
    console.print(t)
    for r in results:
        if r["needs_parallelism_support"]:
            console.print(f"[yellow]{r['source']}[/yellow]: {r['needs_parallelism_support']} rows need parallelism "
                          f"support (fields: {', '.join(r['unsupported_fields'])})")


def published_command(args, console) -> int:
    results = run_suite(folds=getattr(args, "folds", FOLDS) or None, sources=getattr(args, "sources", None))
    if getattr(args, "out", None):
        from trsim.simulator.fileio import atomic_write_json
        atomic_write_json(args.out, {"sources": results})
    if args.format == "json":
        print(json.dumps({"sources": results}, indent=1))
    else:
        print_suite(results, console)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trsim.validate.suite", description=__doc__.split("\n")[0])
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", help="also write the results as JSON")
    p.add_argument("--folds", type=int, default=FOLDS, help="k of the k-fold calibration (0: presets only)")
    p.add_argument("--sources", nargs="*", help="only these sources (file stems), e.g. korthikanti_a100")
    args = p.parse_args(argv)
    return published_command(args, Console())


if __name__ == "__main__":
    sys.exit(main())
