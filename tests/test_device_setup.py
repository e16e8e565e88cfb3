"""Installing on a lent GPU machine: the pinned wheels agree with each other, and the set-up script makes
trsim importable from outside the working tree (where the repository's own trsim/ folder must not shadow it)."""
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import pytest

from trsim.profiler import device_wheels as dw

ROOT = Path(__file__).resolve().parents[1]


def test_pins_are_exact_and_cover_what_the_device_lacks():
    pins = dw.read_pins()
    assert {"pydantic", "pydantic-core", "annotated-types", "typing-inspection"} <= set(pins)
    assert all(v.count(".") >= 1 for v in pins.values())


def test_pins_agree_with_the_metadata_of_the_pinned_releases():
    """Where this machine has a pinned release installed, its declared requirements must be met by the pins
    (pydantic names the exact pydantic-core it was built against)."""
    pins = dw.read_pins()
    have = {}
    for name, v in pins.items():
        try:
            if version(name) == v:
                have[name] = (v, requires(name) or [])
        except PackageNotFoundError:
            pass
    if "pydantic" not in have:
        pytest.skip("the pinned pydantic is not installed here")
    assert any(r.startswith("pydantic-core==") for r in have["pydantic"][1])
    problems = dw.check(have, {n: pins[n] for n in have})
    assert [p for p in problems if "neither pinned" not in p] == []
    assert not [p for p in dw.check(have, pins) if "requires" in p and "pinned" in p and "neither" not in p]


@pytest.mark.skipif(not list((ROOT / ".whl").glob("*.whl")), reason="no downloaded wheels in .whl/")
def test_downloaded_wheels_agree():
    assert dw.check(dw.wheels_in(ROOT / ".whl"), dw.read_pins()) == []


def test_check_catches_drift_missing_and_unpinned():
    pins = {"pydantic": "2.13.4", "pydantic-core": "2.46.3", "typing-extensions": "4.16.0"}
    wheels = {"pydantic": ("2.13.4", ["pydantic-core==2.46.4", "typing-extensions>=4.14.1", "annotated-types>=0.6.0",
                                      'email-validator>=2.0.0; extra == "email"', 'tzdata; python_version >= "3.9" and '
                                      'platform_system == "Windows"']),
              "pydantic-core": ("2.46.3", ["typing-extensions>=4.14.1"]),
              "typing-extensions": ("4.16.0", []), "six": ("1.0", [])}
    problems = dw.check(wheels, pins)
    assert any("requires 'pydantic-core==2.46.4', pinned pydantic-core==2.46.3" in p for p in problems)
    assert any("annotated-types" in p and "neither pinned" in p for p in problems)
    assert any(p.startswith("six:") for p in problems)
    assert not any("email" in p or "tzdata" in p for p in problems)  # extras and other platforms are skipped
    assert dw.check({"pydantic-core": ("2.46.3", [])}, {"pydantic-core": "2.46.3", "x": "1"}) == ["x==1: no wheel"]


def test_setup_script_links_the_tree_and_imports_from_outside_it(tmp_path):
    site = tmp_path / "site"
    # no wheels: the ones a developer fetched into .whl/ are for the device's Python, not this one
    env = dict(os.environ, TRSIM_SITE=str(site), TRSIM_SETUP_LINK="1", PYTHON=sys.executable,
               TRSIM_WHEELS=str(tmp_path / "no-wheels"))
    env.pop("PYTHONPATH", None)
    script = ('. profiler/device_setup.sh || exit 9; '
              '"$PYTHON" -c "import trsim.profiler.campaign as c, trsim; print(c.__file__); print(trsim.__file__)"')
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    campaign_file, trsim_file = proc.stdout.strip().splitlines()[-2:]
    assert campaign_file.startswith(str(site)) and trsim_file.startswith(str(site))
    assert (site / "trsim" / "profiler").is_symlink()
    assert "trsim setup: trsim from" in proc.stdout
    # a broken install is refused before any profiling
    bad = subprocess.run(["bash", "-c", '. profiler/device_setup.sh; echo "rc=$?"'], cwd=ROOT,
                         env=dict(env, PYTHON="/nonexistent/python3"), capture_output=True, text=True, timeout=120)
    assert "rc=0" not in bad.stdout
