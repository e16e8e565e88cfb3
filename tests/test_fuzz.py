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
