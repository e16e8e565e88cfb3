"""``trsim calibrate`` and ``trsim validate``: arguments here, the work in validate.fit / validate.check."""
from __future__ import annotations

from trsim.args import hardware_preset


def add_calibrate_arguments(p) -> None:
    p.add_argument("results", nargs="*", help="results JSON files written by 'trsim profile'")
    p.add_argument("--runs", help="a runs file (YAML/JSON/CSV) of measured step times, instead of results")
    p.add_argument("--out", required=True, help="calibration JSON to write (e.g. calibrations/h100.json)")
    p.add_argument("--hardware", default=None, type=hardware_preset,
                   help="hardware preset to start from (default: from the results)")
    p.add_argument("--held-out-folds", type=_folds, default=5, metavar="K",
                   help="refit K times, each without one fold of the measurements, and record how well it predicts "
                        "them in the calibration file (default 5; 0 skips)")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _folds(text: str) -> int:
    import argparse
    try:
        k = int(text)
    except ValueError:
        k = -1
    if k < 0 or k == 1:
        raise argparse.ArgumentTypeError(f"expected 0 or an integer >= 2, got {text!r}")
    return k


def _sizes(text: str) -> int:
    """A training-set size of --few-runs."""
    import argparse
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of runs >= 1, got {text!r}")
    return int(text)


def add_validate_arguments(p) -> None:
    p.add_argument("results", nargs="*", help="results JSON files written by 'trsim profile'")
    p.add_argument("--runs", help="a runs file (YAML/JSON/CSV) of measured step times, instead of results")
    p.add_argument("--cv", help="held-out scheme for --runs: loo, k (5-fold), kN, group:FIELD (default k)")
    p.add_argument("--published", action="store_true",
                   help="run the published-runs suite (validate/published/*.yaml): presets and k-fold calibrated")
    p.add_argument("--folds", type=_folds, default=None, metavar="K",
                   help="with --published: k of the k-fold calibration within each source (default 5; 0: presets "
                        "only, in seconds)")
    p.add_argument("--sources", nargs="+", metavar="NAME",
                   help="with --published: only these sources (runs-file stems, e.g. korthikanti_a100)")
    p.add_argument("--transfer", action="store_true",
                   help="with --published: also calibrate on the other sources of each GPU preset and predict the "
                        "source left out (a few minutes)")
    p.add_argument("--few-runs", type=_sizes, nargs="+", default=None, metavar="N",
                   help="with --published: also calibrate from N logged runs of each source (random sets) and "
                        "score its other runs, e.g. --few-runs 1 2 3 5 (a few minutes)")
    p.add_argument("--calibration", help="calibration JSON (default: fit inside each cross-validation fold)")
    p.add_argument("--force", action="store_true", help="apply a calibration fitted for other hardware anyway")
    p.add_argument("--hardware", default=None, type=hardware_preset, help="hardware preset (default: from the results)")
    p.add_argument("--plot", help="PNG of predicted against measured step time with the y = x line")
    p.add_argument("--out", help="write the validation report as JSON, atomically")
    p.add_argument("--format", choices=("table", "json"), default="table")


def cmd_calibrate(args, console) -> int:
    from trsim.cli import check_outputs
    from .commands import calibrate_command
    check_outputs(args, (".json",))
    return calibrate_command(args, console)


def cmd_validate(args, console) -> int:
    from trsim.cli import check_outputs
    from .commands import validate_command
    check_outputs(args, (".json",))
    return validate_command(args, console)
