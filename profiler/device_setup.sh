#!/usr/bin/env bash
# Make trsim importable on a lent GPU machine (no package index there), then check the imports.
# Source it from the repository root:  . profiler/device_setup.sh   (the call must carry .whl: see README)
#  1. the pinned wheels from .whl/ (profiler/device-requirements.txt) go into $TRSIM_SITE (default /tmp/site);
#  2. trsim itself goes there too: pip builds it from this working tree with the image's own setuptools
#     (--no-build-isolation: nothing to fetch); if that fails, the namespace is laid out with symbolic links
#     to the working tree (trsim/ copied, trsim/simulator -> simulator/, ...), which is what the package-dir
#     mapping in pyproject.toml installs;
#  3. every import the campaign needs is tried, and the versions of the pinned wheels are compared with the pins.
# Exits (returns) non-zero at the first failure, before any profiling.
TRSIM_SITE=${TRSIM_SITE:-/tmp/site}
TRSIM_WHEELS=${TRSIM_WHEELS:-.whl}   # where the carried wheels are (tests point it elsewhere)
_trsim_setup() {
  local py=${PYTHON:-python3}
  mkdir -p "$TRSIM_SITE" || return 1
  if ls "$TRSIM_WHEELS"/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TRSIM_SITE" "$TRSIM_WHEELS"/*.whl \
      || { echo "trsim setup: installing $TRSIM_WHEELS/*.whl failed" >&2; return 1; }
  else
    echo "trsim setup: no wheels in $TRSIM_WHEELS/ (run python -m trsim.profiler.device_wheels here first)" >&2
  fi
  rm -rf "$TRSIM_SITE/trsim" "$TRSIM_SITE"/trsim-*.dist-info
  if [ "${TRSIM_SETUP_LINK:-0}" = 1 ] || ! "$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
       --target "$TRSIM_SITE" . >/tmp/trsim-pip.log 2>&1; then
    [ "${TRSIM_SETUP_LINK:-0}" = 1 ] || echo "trsim setup: pip could not build trsim here ($(tail -1 /tmp/trsim-pip.log)); linking the tree instead" >&2
    rm -rf "$TRSIM_SITE/trsim" && mkdir -p "$TRSIM_SITE/trsim" && cp trsim/*.py "$TRSIM_SITE/trsim/" || return 1
    local d; for d in simulator profiler validate; do ln -s "$PWD/$d" "$TRSIM_SITE/trsim/$d" || return 1; done
  fi
  export PYTHONPATH="$TRSIM_SITE${PYTHONPATH:+:$PYTHONPATH}"
  # the repository root holds a folder named trsim/ too: never let the working directory shadow the install
  export PYTHONSAFEPATH=1
  local carried=0; ls "$TRSIM_WHEELS"/*.whl >/dev/null 2>&1 && carried=1
  "$py" - "$PWD/profiler/device-requirements.txt" "$carried" <<'PY'
import sys
from importlib.metadata import version
from pathlib import Path
import numpy, scipy, yaml, rich, torch, pydantic  # noqa: F401
import trsim.profiler.campaign, trsim.profiler.run, trsim.validate.commands  # noqa: F401
import trsim
from trsim.profiler.device_wheels import read_pins
pins = read_pins(Path(sys.argv[1])) if sys.argv[2] == "1" else {}
bad = {n: (version(n), v) for n, v in pins.items() if version(n) != v}
if bad:
    sys.exit(f"trsim setup: installed versions differ from the pins: {bad}")
print(f"trsim setup: trsim from {trsim.__file__.rsplit('/', 2)[0]}; pydantic {pydantic.VERSION}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else None}")
PY
  [ $? -eq 0 ] || { echo "trsim setup: import check failed" >&2; return 1; }
}
_trsim_setup
