"""Hypothesis-driven mutation fuzzing of ``trsim simulate`` (see tests/fuzzing.py for the mutations and the
contract: exit code 0 or 2 only, one clean line on error, no hang, finite numbers, strict JSON).

Bounded to about a minute in CI. A long run: ``TRSIM_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py``
(or ``python -m pytest tests/test_fuzz.py --hypothesis-profile=long``); a standalone run that
groups failures by crash site: ``python tests/fuzzing.py 20000 SEED``.
"""
import os
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
import fuzzing  # noqa: E402

DOCS = fuzzing.load_docs()
# the env var, else a long hypothesis profile's budget (--hypothesis-profile=long), else about a minute's worth
EXAMPLES = int(os.environ.get("TRSIM_FUZZ_EXAMPLES", "0")) or (
    settings.default.max_examples if settings.default.max_examples > 1000 else 200)
LONG = EXAMPLES > 1000


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rng=st.randoms(use_true_random=False))
def test_mutated_scenarios_keep_the_contract(rng):
    with tempfile.TemporaryDirectory() as d:
        args = fuzzing.make_case(rng, DOCS, Path(d))
        code, out, err, problem = fuzzing.run_case(args, timeout=30)
        assert problem is None, f"{problem}\nargs: {args}\ninput: {Path(args[1]).read_bytes()[:2000]!r}"


@settings(max_examples=max(20, EXAMPLES // 4), deadline=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), fmt=st.sampled_from(["yaml", "json", "toml"]))
def test_single_mutations_in_every_format(rng, fmt):
    """One structural mutation, no text damage: most of these parse, so the simulator itself is exercised."""
    with tempfile.TemporaryDirectory() as d:
        name, base = rng.choice(DOCS)
        doc = fuzzing.mutate_doc(base, rng, 1)
        try:
            text = fuzzing.serialise(doc, fmt)
        except (TypeError, ValueError, RecursionError):
            return
        p = Path(d) / f"s.{fmt}"
        p.write_text(text)
        args = ["simulate", str(p), "--format", rng.choice(["json", "csv", "table"])] + (
            ["--detail"] if rng.random() < 0.3 else [])
        code, out, err, problem = fuzzing.run_case(args, timeout=30)
        assert problem is None, f"{problem}\nargs: {args}\ninput: {text[:2000]}"


def test_mfu_bound_follows_the_peak(tmp_path):
    """The check holds MFU to 1 of a datasheet peak, but lets a nominal (estimated) peak be exceeded, as its
    efficiencies may be by design (the CPU preset), and fp8 GEMMs by their peak's ratio (MFU is against the
    bf16 peak)."""
    import json
    import yaml
    doc = yaml.safe_load((fuzzing.ROOT / "scenarios" / "tiny_cpu.yaml").read_text())
    p = tmp_path / "s.yaml"

    def problem(mfu, **hardware):
        p.write_text(yaml.safe_dump({**doc, "hardware": {**doc["hardware"], **hardware}}))
        out = json.dumps({"schedules": [{"step": {"mfu": mfu, "time_s": 1.0}}]})
        return fuzzing.check_outcome(0, ["simulate", str(p), "--format", "json"], out, "")

    assert problem(1.5) is None and problem(1.5, matmul_efficiency=2.0) is None    # the CPU preset: nominal
    assert "not physical" in problem(25.0)
    assert problem(0.9, preset="h100-sxm") is None and "not physical" in problem(1.01, preset="h100-sxm")
    doc["training"]["precision"] = "fp8"                                            # 1979 / 989 TFLOP/s
    assert problem(1.9, preset="h100-sxm") is None and "not physical" in problem(2.1, preset="h100-sxm")
