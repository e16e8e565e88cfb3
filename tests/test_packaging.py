"""Installing trsim puts one top-level package, ``trsim``, on the import path."""
import subprocess
import sys
from pathlib import Path

import trsim

ROOT = Path(__file__).resolve().parents[1]


def test_one_namespace_and_no_generic_top_level_packages(tmp_path):
    # from outside the source tree (where the installed package is all there is)
    probe = "import importlib.util as u; print([m for m in ('simulator', 'profiler', 'validate') if u.find_spec(m)])"
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr
    import trsim.profiler.cli
    import trsim.simulator.costs
    import trsim.validate.fit
    assert Path(trsim.simulator.costs.__file__).resolve() == ROOT / "simulator" / "costs.py"
    assert Path(trsim.validate.fit.__file__).resolve().parent == ROOT / "validate"
    assert Path(trsim.profiler.cli.__file__).resolve().parent == ROOT / "profiler"
    assert callable(trsim.simulate) and callable(trsim.load_scenario)


def test_version_from_the_command_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "trsim", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"trsim {trsim.__version__}"
    assert trsim.__version__ != "0+unknown"


def test_the_published_runs_and_their_evidence_are_package_data():
    """A wheel carries the published-runs suite and the evidence every uncalibrated simulation quotes."""
    import fnmatch
    import tomllib
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["trsim.validate"]
    shipped = [p.relative_to(ROOT / "validate").as_posix() for p in (ROOT / "validate" / "published").iterdir()
               if p.suffix in (".yaml", ".json")]
    assert "published/evidence.json" in shipped
    for f in shipped:
        assert any(fnmatch.fnmatch(f, pat) for pat in data), f
