"""README's scenario reference and Python API run as written."""
import json
import re
import subprocess
import sys
from pathlib import Path

from trsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _block(after: str, lang: str) -> str:
    section = README[README.index(after):]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert m, f"no {lang} block after {after!r}"
    return m.group(1)


def test_scenario_reference_runs_as_written(tmp_path, capsys):
    p = tmp_path / "reference.yaml"
    p.write_text(_block("## Scenario reference", "yaml"))
    assert main(["simulate", str(p), "--format", "json"]) == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    names = [s["name"] for s in doc["schedules"]]
    assert {"himix", "hmgen", "fastv", "pyramid", "custom"} <= set(names)
    assert len(doc["sweep"]["values"]) == 13


def test_python_api_runs_as_written():
    code = _block("### Python API", "python")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("baseline ") and "<scenario> model a value (required)" in p.stdout
