"""tensor = pipeline = context = 1 reproduces the single-GPU-per-replica model to the last bit.

``tests/data/golden/*.json`` are ``trsim simulate SCENARIO --format json`` of every shipped scenario,
recorded on the commit before parallelism, recompute, precision, stacks and task mixing were added
(main at 497ce9d). Every value recorded there must come out identical (new keys may be added beside them).
If a change elsewhere is meant to move these numbers (say, a new efficiency model), rewrite the files
with ``python tests/test_golden.py --write`` in the same commit and say so in its message.
"""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
RECORDED = sorted(p.stem for p in GOLDEN.glob("*.json"))


def _simulate(path: Path) -> dict:
    from trsim.simulator import load_scenario, simulate
    return json.loads(json.dumps(simulate(load_scenario(path)).to_dict()))


def _differences(old, new, path=""):
    if isinstance(old, dict):
        for k, v in old.items():
            if k not in new:
                yield f"{path}.{k}: missing"
            else:
                yield from _differences(v, new[k], f"{path}.{k}")
    elif isinstance(old, list):
        if len(old) != len(new):
            yield f"{path}: {len(old)} items, now {len(new)}"
        else:
            for i, (a, b) in enumerate(zip(old, new)):
                yield from _differences(a, b, f"{path}[{i}]")
    elif old != new:
        yield f"{path}: {old!r} -> {new!r}"


@pytest.mark.parametrize("name", RECORDED)
def test_shipped_scenario_reproduces_recorded_numbers_exactly(name):
    scenario = ROOT / "scenarios" / f"{name}.yaml"
    if not scenario.exists():
        pytest.skip(f"{scenario.name} is no longer shipped")
    old = json.loads((GOLDEN / f"{name}.json").read_text())
    diffs = list(_differences(old, _simulate(scenario)))
    assert not diffs, f"{len(diffs)} values changed, e.g. " + "; ".join(diffs[:5])


def test_every_shipped_scenario_parallel_free_is_recorded():
    from trsim.simulator import load_scenario
    for path in SCENARIOS:
        scn = load_scenario(path)
        if scn.parallelism.model_parallel == 1 and scn.training.stack == "trsim" and \
                scn.training.task_mixing == "ideal":
            assert path.stem in RECORDED, f"record {path.name}: python tests/test_golden.py --write"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    for path in SCENARIOS:
        from trsim.simulator import load_scenario
        scn = load_scenario(path)
        if scn.parallelism.model_parallel == 1 and scn.training.stack == "trsim" and \
                scn.training.task_mixing == "ideal":
            (GOLDEN / f"{path.stem}.json").write_text(json.dumps(_simulate(path), indent=1) + "\n")
