"""Download, here, exactly the wheels a lent GPU machine lacks, and check that they agree.

    python -m trsim.profiler.device_wheels [--dest .whl] [--check-only]

The pins live in ``profiler/device-requirements.txt``. Each is downloaded without its dependencies
(``pip download --no-deps --only-binary=:all:``) for the device's interpreter and platform, so that
nothing unpinned slips in; then every wheel's declared requirements (``Requires-Dist`` without extras
or markers that exclude the device) must be met by another pinned wheel or by a package the device
image already has (``ON_DEVICE``). pydantic names the exact pydantic-core it needs, so a pin that drifts
is caught here and not as an ImportError on the machine.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

PINS = Path(__file__).with_name("device-requirements.txt")
PYTHON = "3.12"            # the device image's CPython (KINDS.md: Python 3.12.3)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
# what the device image already holds that our pins may depend on (KINDS.md, "Python packages already there")
ON_DEVICE = {"numpy", "scipy", "pyyaml", "rich", "torch", "matplotlib", "setuptools", "packaging"}


def read_pins(path: Path = PINS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            spec = list(req.specifier)
            if len(spec) != 1 or spec[0].operator != "==":
                raise ValueError(f"{path}: {line!r}: expected an exact pin NAME==VERSION")
            pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) of a wheel file."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    return canonicalize_name(msg["Name"]), msg["Version"], msg.get_all("Requires-Dist") or []


def device_environment() -> dict:
    env = default_environment()
    env.update(python_version=PYTHON, python_full_version=PYTHON + ".3", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", implementation_name="cpython",
               platform_python_implementation="CPython", os_name="posix", extra="")
    return env


def check(wheels: dict[str, tuple[str, list[str]]], pins: dict[str, str]) -> list[str]:
    """Problems with a set of wheels {name: (version, Requires-Dist)} against the pins; empty if consistent."""
    problems = []
    env = device_environment()
    for name, version in pins.items():
        if name not in wheels:
            problems.append(f"{name}=={version}: no wheel")
        elif Version(wheels[name][0]) != Version(version):
            problems.append(f"{name}: wheel is {wheels[name][0]}, pinned {version}")
    for name in wheels:
        if name not in pins:
            problems.append(f"{name}: a wheel that is not pinned")
    for name, (version, requires) in wheels.items():
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue  # an extra, or a marker that excludes the device
            dep = canonicalize_name(req.name)
            if dep in pins:
                if not req.specifier.contains(pins[dep], prereleases=True):
                    problems.append(f"{name} {version} requires {line!r}, pinned {dep}=={pins[dep]}")
            elif dep not in ON_DEVICE:
                problems.append(f"{name} {version} requires {line!r}: neither pinned nor on the device image")
    return problems


def wheels_in(dest: Path) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for w in sorted(dest.glob("*.whl")):
        parse_wheel_filename(w.name)  # a malformed name fails here
        name, version, requires = wheel_metadata(w)
        if name in out:
            raise SystemExit(f"trsim: error: {dest}: {name}: expected one wheel per package, got two versions")
        out[name] = (version, requires)
    return out


def download(pins: dict[str, str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
           "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + [f"{n}=={v}" for n, v in pins.items()], check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", default=".whl", help="folder for the wheels (keep it in .git/info/exclude)")
    ap.add_argument("--check-only", action="store_true", help="only check the wheels already in --dest")
    args = ap.parse_args(argv)
    pins, dest = read_pins(), Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for w in dest.glob("*.whl"):  # stale versions of pinned packages would give two of one package
        name = canonicalize_name(parse_wheel_filename(w.name)[0])
        if not args.check_only and name in pins and str(parse_wheel_filename(w.name)[1]) != pins[name]:
            w.unlink()
    if not args.check_only:
        download(pins, dest)
    problems = check(wheels_in(dest), pins)
    for p in problems:
        print(f"trsim: error: {dest}: {p}", file=sys.stderr)
    if not problems:
        print(f"{len(pins)} wheels in {dest} agree with each other and with the device image: "
              + ", ".join(f"{n}=={v}" for n, v in pins.items()))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
