"""Mutation fuzzing of the command line, shared by tests/test_fuzz.py (hypothesis, in the suite) and
``python tests/fuzzing.py N`` (a long standalone run that reports crash sites).

A case starts from a shipped scenario, applies random structural mutations to the parsed document
(deletions, retyped values, extreme numbers, unknown and duplicated keys, deep nesting, hardware fields
set over the preset in and out of their ranges, the model's sliding-window fields), writes it as YAML, JSON or
TOML, optionally damages the text (truncation, byte flips, duplicated lines), and runs ``trsim simulate``
in-process with random output options. The contract checked: exit code 0 or 2 (or validate's 1 for a FLOPs
mismatch, its report still strict), never an exception; on exit 2 exactly one line ``trsim: error: ...`` (a
config.json's window key that transformers refused named as the field); on exit 0 every number printed is finite
and ``--format json`` is strict JSON, with physical MFUs and positive step times; nothing hangs (a per-run alarm).
Side files are mutated the same way: a calibration, a config.json (its window keys among them: sliding_window,
layer_types, use_sliding_window, max_window_layers, sliding_window_pattern) and, with ``--results``, a profiler
results file (its environment.cpu and model window among them).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import random
import re
import signal
import sys
from pathlib import Path

import tomli_w
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))

EXTREMES = [True, False, None, 0, -1, 1, 2, 0.5, -0.5, 1e-300, 1e308, -1e308, float("nan"), float("inf"),
            float("-inf"), 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63), "", "x", "8", "1e3",
            "true", "nan", "a" * 5000, [], {}, [1, 2, 3], [[0, 0.5]], {"method": "himix"}, {"method": {"a": 1}},
            {"layers": {"0": {"image": "fulll"}}}, {"x": 1}, 1.5, 3.7e6, 2e7, 1e9]


def load_docs() -> list[tuple[str, dict]]:
    return [(p.name, yaml.safe_load(p.read_text())) for p in SCENARIOS]


# Options the shipped scenarios rarely set, so that mutations reach every pricing path (parallel layouts,
# recompute, precision, stacks, task mixing, dropout, attention kernels, hardware presets).
OPTIONS = [
    (("training", "task_mixing"), ["homogeneous", "mixed", "ideal"]),
    (("training", "recompute"), ["none", "selective", "full"]),
    (("training", "precision"), ["bf16", "fp16", "fp8"]),
    (("training", "stack"), ["trsim", "huggingface", "megatron"]),
    (("training", "zero_stage"), [0, 1, 2, 3]),
    (("training", "overlap_grad_reduce"), [True, False]),
    (("training", "overlap_param_gather"), [True, False, None]),
    (("training", "micro_batch_size"), [1, 2, 3, 16]),
    (("training", "hidden_dropout"), [0.0, 0.1, 1.0]),
    (("training", "attention_dropout"), [0.0, 0.1, 1.0]),
    (("hardware", "attention_kernel"), ["math", "flash2", "mem_efficient"]),
    (("parallelism",), [{"tensor": 2}, {"pipeline": 2}, {"pipeline": 4, "virtual_stages": 2},
                        {"context": 2, "sequence_parallel": True}, {"tensor": 3}, {"pipeline": 64},
                        {"tensor": 2, "pipeline": 2, "context": 2}, {"layers_per_stage": [1, 2]},
                        {"tensor": 2, "sequence_parallel": True, "tensor_comm_overlap": True}]),
    (("hardware", "preset"), ["a100-sxm-80g", "h100-sxm", "h200", "b200", "cpu"]),
    (("hardware", "num_gpus"), [1, 2, 7, 64, 4096]),
    (("conventions", "attention"), ["causal", "full"]),
    (("conventions", "lm_head"), ["all", "targets"]),
]

# Hardware fields a scenario may set over its preset (config.HardwareInput), each with values in its range, its
# extremes included: the smallest positive float (products underflow to zero), 1e308 (sums overflow), and
# seconds that keep a step finite but past what its milliseconds (x 1e3) or a product of two times can hold.
# _set_hardware also writes values out of every range (HOSTILE) and pairs of fields that contradict each other.
TINY, HUGE = 5e-324, 1e308
SECONDS = [0, TINY, 1e-6, 1.0, 1e160, 1e303, HUGE]
HARDWARE = {
    "collective_compute_units": [0, 1, 20, 24, 64, 131, 2**20],
    "compute_units": [1, 2, 16, 24, 25, 108, 132, 2**20],
    "comm_overlap": [0, 0.0, 0.5, 1, 1.0, TINY],
    "collective_efficiency": [TINY, 1e-9, 0.675, 1.0],
    "host_layer_s": SECONDS,
    "memory_bound_kernel_s": SECONDS,
    "sustained_compute_fraction": [TINY, 1e-6, 0.628, 1.0],
    "matmul_efficiency": [TINY, 0.5, 0.85, 1.0, 1.5, 20.0],   # above 1: only with nominal_peak (the CPU preset)
    "matmul_efficiency_fp8": [TINY, 0.5, 1.0, 3.0],
    "matmul_max_shape_factor": [TINY, 0.5, 1.0],
    "matmul_max_shape_factor_fp8": [TINY, 0.9, 1.0],
    "matmul_half_k": [0, TINY, 16.0, 1e6, HUGE],
    "matmul_overhead_s": SECONDS,
    "matmul_tiles": [[[128, 128]], [[8, 16]], [[256, 128], [64, 64]], [[1, 1]], [[2**20, 2**20]]],
    "gpus_per_node": [1, 2, 4, 8, 72, 2**24],
    "intranode_bandwidth": [TINY, 1.0, 450e9, 1e15, HUGE],
    "internode_bandwidth": [TINY, 1.0, 50e9, 1e15, HUGE],
    "peak_flops": [TINY, 1.0, 192e9, 989e12, HUGE],
    "peak_flops_fp8": [TINY, 1.0, 1979e12, HUGE],
    "memory_bandwidth": [TINY, 1.0, 3.35e12, HUGE],
    "memory_bytes": [TINY, 1.0, 80e9, HUGE],
    "nominal_peak": [True, False],
    "attention_kernel": ["flash1", "flash2", "flash3", "cudnn", "mem_efficient", "math"],
    "attention_efficiency": [TINY, 0.5, 1.0, 5.0],
    "attention_head_dim_factors": [[1.0, 1.0, 1.0], [0.5, 1.0, 1.2], [TINY, TINY, TINY], [HUGE, 1.0, 1.0]],
    "attention_half_keys": [0, TINY, 64.0, 1e6, HUGE],
    "attention_causal_half_keys": [0, 100.0, HUGE],
    "attention_causal_factor": [TINY, 0.5, 1.0],
    "attention_masked_factor": [TINY, 0.5, 1.0],
    "attention_backward_ratio": [2, 2.5, 100.0, HUGE],
    "bandwidth_efficiency": [TINY, 1e-300, 0.593, 1.0],
    "gather_efficiency": [TINY, 0.5, 1.0],
    "layer_overhead_s": SECONDS,
    "step_overhead_s": SECONDS,
    "collective_latency_s": SECONDS,
    "collective_base_latency_s": SECONDS,
    "internode_latency_s": SECONDS,
    "name": ["x", "gpu " * 50],
    "price_per_gpu_hour": [0, TINY, 2.5, 1e6],
}
HOSTILE = [-1, -0.5, 0, -0.0, -TINY, -HUGE, float("nan"), float("inf"), float("-inf"), "nan", ".inf", "8", "",
           True, False, None, 2**63, 10**30, 10**400, -(10**400), [], {"a": 1}, [1, 2], [[0, 1]], [[10**400, 1]],
           [float("nan"), 1, 1]]

# Sliding-window fields of a scenario's model block (ModelSpec.sliding_window, .sliding_window_layers), each in its
# range (a window of one token up to the bound 2**40; none to all layers) and out of it: past the bound, integers
# past any float (10**400), zero and negatives, floats (integral or not), bools, strings, non-finite values. A count
# is also set relative to the model's depth (all layers, one more) and the depth changed under it.
WINDOW = {"sliding_window": [1, 16, 64, 4096, 2**40, 2**40 + 1, 2**63, 10**400, -(10**400), 0, -1, 4096.0, 1.5,
                             True, False, "4096", "", None, float("nan"), float("inf"), [4096], {"a": 1}],
          "sliding_window_layers": [0, 1, 2, 3, 4, 28, 32, 2**12, 2**12 + 1, 10**400, -(10**400), -1, 2.0, 0.5,
                                    True, False, "2", None, float("nan"), [2], {"a": 1}]}
# The keys a config.json gives the window in (simulator/hf_config.py _sliding_window): its width, the layers' kinds,
# Qwen 2's opt-in switch and first windowed layer, and Gemma's pattern; each with the file's own kind of value and
# hostile ones. layer_types also takes generated lists (_layer_types): every length around the depth, mixed kinds,
# unknown kinds, very long.
HF_WINDOW = {"sliding_window": WINDOW["sliding_window"] + [2**40 - 1, 2**31, 32768, 131072],
             "layer_types": ["sliding_attention", "full_attention", "", 3, 0.5, True, None, {"a": 1}, [],
                             ["sliding_attention"], [None], [["sliding_attention"]], ["sliding_attention", 1, None],
                             ["chunked_attention", "sliding_attention"], ["Sliding_Attention"], ["mamba"],
                             ["linear_attention", "sliding_attention"], [{"type": "sliding_attention"}]],
             "use_sliding_window": [True, False, None, "true", "false", 1, 0, 2, 0.5, [], {}, [True]],
             "max_window_layers": [0, 1, 4, 21, 28, 70, 2**12, 2**63, 10**400, -1, -(10**400), 2.5, 28.0, True,
                                   False, "28", None, float("nan"), [28], {"a": 1}],
             "sliding_window_pattern": [0, 1, 2, 4, 6, 2**63, 10**400, -1, -(10**400), 1.5, 6.0, True, False, "6",
                                        None, float("inf"), [6], {"a": 1}]}
# Model types whose rule decides which layers use the window (every layer, a pattern, opt-in), a remote-code variant
# named after one, and a type that ignores the window.
WINDOW_TYPES = ["mistral", "starcoder2", "phi3", "phi3_v", "gemma2", "gemma3_text", "cohere2", "qwen2", "qwen3",
                "qwen2_vl", "qwen2_5_vl_text", "llama", "qwen2_foo", "mistral-x"]


def _set_option(doc, rng) -> None:
    path, values = rng.choice(OPTIONS)
    node = doc
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = copy.deepcopy(rng.choice(values))


def _set_hardware(doc, rng) -> None:
    """One to three hardware fields, each in its range or out of every range, or a contradicting pair (the
    SMs a collective holds against the GPU's)."""
    if not isinstance(doc.get("hardware"), dict):
        doc["hardware"] = {}
    hw = doc["hardware"]
    if rng.random() < 0.1:
        n = rng.choice([1, 2, 24, 132, 2**20])
        hw["collective_compute_units"], hw["compute_units"] = n, rng.choice([n - 1, n, n + 1, 0, -n])
        return
    for _ in range(rng.choice([1, 1, 2, 3])):
        key, values = rng.choice(list(HARDWARE.items()))
        hw[key] = copy.deepcopy(rng.choice(values if rng.random() < 0.5 else HOSTILE))


def _model_layers(model) -> int:
    """The depth a model block gives or its preset's (4 without either: tiny_cpu's)."""
    n = model.get("num_layers")
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    from trsim.simulator.presets import MODEL_PRESETS
    preset = MODEL_PRESETS.get(model.get("preset")) if isinstance(model.get("preset"), str) else None
    return preset["num_layers"] if preset else 4


def _set_window(doc, rng) -> None:
    """The model block's sliding-window fields: a valid pair (most run, so the window's warning is reached), a count
    at or past the depth, one field without the other, hostile values, and the depth changed under a count."""
    if not isinstance(doc.get("model"), dict):
        doc["model"] = {}
    m = doc["model"]
    n = _model_layers(m)
    r = rng.random()
    if r < 0.3:
        m["sliding_window"] = rng.choice([1, 16, 64, 4096, 2**40])
        if rng.random() < 0.7:
            m["sliding_window_layers"] = rng.randint(0, n)
    elif r < 0.5:
        if rng.random() < 0.7:
            m["sliding_window"] = rng.choice([1, 4096])
        m["sliding_window_layers"] = rng.choice([n, n + 1, 2 * n, 2**12, 2**12 + 1])
    else:
        for key in rng.sample(list(WINDOW), rng.choice([1, 2])):
            m[key] = copy.deepcopy(rng.choice(WINDOW[key] if rng.random() < 0.6 else HOSTILE))
    if rng.random() < 0.2:
        m["num_layers"] = rng.choice([1, 2, n - 1, n + 1, 2**12])


def _layer_types(rng, n: int):
    """A generated layer_types list: every length around the depth ``n``, patterned or random kinds, sometimes
    one entry of another type, sometimes very long."""
    length = rng.choice([0, 1, max(n - 1, 0), n, n, n + 1, 2 * n, 10**5])
    kinds = ["sliding_attention", "full_attention"]
    if rng.random() < 0.5:
        every = rng.choice([2, 4, 6])
        out = [kinds[(i + 1) % every == 0] for i in range(length)]
    else:
        out = [rng.choice(kinds) for _ in range(length)]
    if out and rng.random() < 0.3:
        out[rng.randrange(len(out))] = copy.deepcopy(rng.choice(["chunked_attention", "", None, 1, 10**400, True,
                                                                 ["sliding_attention"], {"a": 1}, "mamba"]))
    return out


def _language_config(cfg: dict) -> dict:
    """The mapping in a config.json that holds its language model (as hf_config._sub_config finds it)."""
    from trsim.simulator.hf_config import CONTAINERS, NESTED
    node = cfg
    for key in CONTAINERS:
        if isinstance(node.get(key), dict):
            node = node[key]
    sub = next((node[k] for k in NESTED if isinstance(node.get(k), dict)), node)
    return sub


def _set_hf_window(cfg: dict, rng) -> None:
    """One to four of a config.json's window keys, valid or hostile, sometimes under another model type, and at
    times on the file's outer level instead of its language model's."""
    sub = _language_config(cfg) if rng.random() < 0.85 else cfg
    n = next((sub[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if isinstance(sub.get(k), int)), 32)
    if rng.random() < 0.25:
        sub["model_type"] = rng.choice(WINDOW_TYPES)
    for key in rng.sample(list(HF_WINDOW), rng.choice([1, 2, 3, 4])):
        if key == "layer_types" and rng.random() < 0.5:
            sub[key] = _layer_types(rng, n if isinstance(n, int) and 0 <= n <= 4096 else 32)
        elif key == "max_window_layers" and rng.random() < 0.3 and isinstance(n, int):
            sub[key] = rng.choice([n - 1, n, n + 1])
        else:
            sub[key] = copy.deepcopy(rng.choice(HF_WINDOW[key] if rng.random() < 0.7 else HOSTILE))
    if rng.random() < 0.5 and not isinstance(sub.get("sliding_window"), int):
        sub["sliding_window"] = rng.choice([1, 64, 4096])  # a window, so that the other keys are read
    if rng.random() < 0.3:
        sub["use_sliding_window"] = True


def _paths(doc, prefix=()):
    """Every (container, key) location in the document."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k, prefix + (k,)))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i, prefix + (i,)))
            out.extend(_paths(v, prefix + (i,)))
    return out


def mutate_doc(doc: dict, rng: random.Random, n: int) -> dict:
    doc = copy.deepcopy(doc)
    for _ in range(n):
        try:
            locs = _paths(doc)
        except RecursionError:
            break
        if not locs:
            break
        parent, key, _ = rng.choice(locs)
        try:
            _mutate_once(doc, parent, key, rng)
        except (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError):
            pass  # the document is already too broken for this mutation; the next one may apply
    return doc


def _mutate_once(doc, parent, key, rng) -> None:
    if True:
        op = rng.random()
        r = rng.random()
        if r < 0.15:                                   # a legitimate option (reaches more pricing paths)
            _set_option(doc, rng)
        elif r < 0.3:                                  # hardware fields over the preset, valid or not
            _set_hardware(doc, rng)
        elif r < 0.36:                                 # the model's sliding-window fields, valid or not
            _set_window(doc, rng)
        elif op < 0.2:                                 # delete
            del parent[key]
        elif op < 0.55:                                # retype / extreme value
            parent[key] = copy.deepcopy(rng.choice(EXTREMES))
        elif op < 0.7:                                 # scale a number
            v = parent[key]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                parent[key] = rng.choice([v * 10**rng.randint(1, 18), -v, v + 1, v - 1, v / 3, int(v) * 2**40])
        elif op < 0.8:                                 # unknown key
            if isinstance(parent[key], dict):
                parent[key][rng.choice(["colour", "num_layer", "tokens ", "metod", "x"])] = rng.choice(EXTREMES[:12])
        elif op < 0.87:                                # deep nesting
            v = parent[key]
            for _ in range(rng.choice([3, 40, 300])):
                v = [v] if rng.random() < 0.5 else {"a": v}
            parent[key] = v
        elif op < 0.9 and _valid_sweep(doc, rng):     # a sweep the scenario can run
            pass
        elif op < 0.93:                                # a sweep, often invalid
            doc["sweep"] = {"schedule": rng.choice(list(doc.get("schedules") or {"baseline": 0}) or ["x"]),
                            "parameter": rng.choice(["keep", "shallow", "from_layer"]),
                            rng.choice(["values", "range"]): rng.choice(
                                [[0, 1, 0.1], [0, 1e9, 1e-9], [float("nan"), 1, 0.1], [0, float("inf"), 1],
                                 [0.1, 0.5], [1, 2, 3], [0, 12, 1], [True, 1], [1e300, 1e308, 1e-300]])}
        else:                                          # long names
            if isinstance(parent[key], dict) and "name" in parent[key]:
                parent[key]["name"] = "n" * rng.choice([1000, 20000])


_SWEEPABLE = {"himix": [("from_layer", [0, 1, 2, 3])], "hmgen": [("shallow", [0, 1, 2, 3, 5])],
              "drop": [("keep", [0.0, 0.1, 0.5, 1.0]), ("from_layer", [1, 2, 3])]}


def _valid_sweep(doc, rng) -> bool:
    """Sweep a parameter of a schedule the scenario defines (a multi-task scenario exercises the mixing of a
    swept task with unswept ones)."""
    found = [(s, t, spec["method"]) for s, per in (doc.get("schedules") or {}).items() if isinstance(per, dict)
             for t, spec in per.items() if isinstance(spec, dict) and spec.get("method") in _SWEEPABLE]
    if not found:
        return False
    sched, task, method = rng.choice(found)
    param, values = rng.choice(_SWEEPABLE[method])
    k = rng.randint(1, len(values))
    doc["sweep"] = {"schedule": sched, "task": task, "parameter": param, "values": rng.sample(values, k)}
    return True


def serialise(doc, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, allow_nan=True)
    if fmt == "toml":
        return tomli_w.dumps(_toml_clean(doc) if isinstance(doc, dict) else {"root": _toml_clean(doc)})
    return yaml.safe_dump(doc, sort_keys=False, width=10**6)


def _toml_clean(v):
    """TOML has no null and needs string keys; drop the one, stringify the other."""
    if isinstance(v, dict):
        return {str(k): _toml_clean(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_toml_clean(x) for x in v if x is not None]
    return v


def damage_text(text: str, rng: random.Random) -> bytes:
    data = text.encode()
    op = rng.random()
    if op < 0.3 and data:                              # truncation
        return data[:rng.randrange(len(data))]
    if op < 0.6 and data:                              # byte flips
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] = rng.randrange(256)
        return bytes(b)
    lines = text.splitlines(keepends=True)             # a duplicated line: duplicated keys
    if lines:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    return "".join(lines).encode()


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _strict_json(text: str):
    def bad(c):
        raise ValueError(f"non-finite constant {c}")
    return json.loads(text, parse_constant=bad)


# a non-finite number as the tables format one: next to its unit ("nan ms", "infx", "nan%", "$nan"); a bare
# "nan" may be a user's name for a scenario or segment
_NONFINITE = re.compile(r"(?i)(?<![A-Za-z_])-?(nan|inf)(x\b|%| ms\b| [KMGT]?i?B\b| [kMGTPE]?FLOP| h\b)|\$-?(nan|inf)")


def run_case(args: list[str], timeout: float = 20.0) -> tuple[int | None, str, str, str | None]:
    """Run ``trsim ARGS`` in-process; (exit code, stdout, stderr, problem or None)."""
    from trsim.cli import main
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
    except Hang:
        return None, out.getvalue(), err.getvalue(), "hang"
    except BaseException as exc:  # noqa: BLE001 - any exception is a crash site
        import traceback
        tb = traceback.extract_tb(exc.__traceback__)
        site = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "/trsim" in f.filename
                     or "wt-" in f.filename or "/simulator/" in f.filename), "?")
        return None, out.getvalue(), err.getvalue(), f"exception {type(exc).__name__} at {site}: {exc}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue(), check_outcome(code, args, out.getvalue(), err.getvalue())


def check_outcome(code, args, out: str, err: str) -> str | None:
    # validate exits 1, by design, when counted FLOPs differ from the simulator's: its report is still
    # written (strict JSON alone on stdout with --format json), the mismatches on their own lines
    mismatch = code == 1 and args[:1] == ["validate"] and "FLOPs mismatch" in err + out
    if code not in (0, 2) and not mismatch:
        return f"exit code {code}"
    if "Traceback" in err or "Traceback" in out:
        return "traceback printed"
    if mismatch and "--format" in args and args[args.index("--format") + 1] == "json" and any(
            not line.startswith("FLOPs mismatch ") for line in err.strip().splitlines()):
        return f"stderr beside a FLOPs mismatch holds other lines: {err[:300]!r}"
    if code == 2:
        lines = err.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("trsim: error: "):
            return f"error output is not one 'trsim: error:' line: {err[:300]!r}"
        if re.search(r"instance of|literal\[|Input should|function-after|pydantic", lines[0]):
            return f"pydantic internals in the message: {lines[0][:300]}"
        return _window_key_blamed(lines[0])
    fmt = args[args.index("--format") + 1] if "--format" in args else "table"
    if fmt == "json":
        try:
            doc = _strict_json(out)
        except ValueError as exc:
            return f"not strict JSON: {exc}"
        bad = _nonfinite_numbers(doc)
        if bad and bad.endswith("(not physical)") and args[:1] == ["simulate"]:
            bad = _nonfinite_numbers(doc, mfu_max=_mfu_bound(args))
        if bad:
            return f"non-finite number in JSON at {bad}"
    elif fmt == "csv":
        for row in csv.reader(io.StringIO(out)):
            for cell in row:
                try:
                    x = float(cell)
                except ValueError:
                    continue
                if not math.isfinite(x):
                    return f"non-finite CSV cell {cell!r}"
    else:
        body = "\n".join(line for line in out.splitlines() if not line.startswith("calibration:"))
        m = _NONFINITE.search(body)
        if m:
            return f"non-finite value printed: {m.group(0)!r}"
        if re.search(r"-\d[\d,.]* ms", body):
            return "negative step time printed"
    if re.search(r"\b(\d{3,}|[2-9]\d)\d\.\d%", out):
        pass
    return None


WINDOW_KEYS = ("sliding_window", "layer_types", "use_sliding_window", "max_window_layers", "sliding_window_pattern")


def _window_key_blamed(line: str) -> str | None:
    """A config.json's window key that transformers refused must be the FIELD the error names (trsim checks these
    keys itself, before any library; a library's refusal blamed on the file or its language config is not)."""
    m = re.match(r"trsim: error: .*?: ([^ ]*): expected a config transformers can read, got (.*)", line)
    if not m:
        return None
    field, text = m.groups()
    key = re.search(r"field '(%s)'" % "|".join(WINDOW_KEYS), text)
    key = key.group(1) if key else ("layer_types" if "validate_layer_type" in text else None)
    if key and field.split(".")[-1] != key:
        return f"window key {key} refused by transformers, blamed on {field}: {line[:200]}"
    return None


def _mfu_bound(args) -> float:
    """The highest MFU the scenario's hardware can reach: 1 of its bf16 peak, beyond which fp8 GEMMs may go by
    their peak's ratio (MFU is against the bf16 peak), and a nominal, estimated peak (the CPU preset) up to the
    efficiency cap."""
    from trsim.simulator.config import NOMINAL_EFFICIENCY_CAP, load_scenario
    scn = load_scenario(args[1])
    hw, bound = scn.hardware, 1.0
    if scn.training.precision == "fp8" and hw.peak_flops_fp8:
        bound = max(bound, hw.peak_flops_fp8 / hw.peak_flops)
    return bound * (NOMINAL_EFFICIENCY_CAP if hw.nominal_peak else 1.0)


def _nonfinite_numbers(doc, path="", mfu_max=1.0) -> str | None:
    stack = [(doc, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return p
        if isinstance(v, dict):
            stack.extend((x, f"{p}.{k}") for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, f"{p}.{i}") for i, x in enumerate(v))
        if isinstance(v, dict) and "mfu" in v and isinstance(v["mfu"], float) and not 0 <= v["mfu"] <= mfu_max:
            return f"{p}.mfu = {v['mfu']} (not physical)"
        if isinstance(v, dict) and "time_s" in v and isinstance(v["time_s"], float) and v["time_s"] <= 0:
            return f"{p}.time_s = {v['time_s']}"
    return None


HF_CONFIGS = sorted((ROOT / "tests" / "data" / "hf_configs").glob("*/config.json"))
RESULTS = ROOT / "tests" / "data" / "results_tiny_cpu.json"
# config.json files whose language model reads and has (or may have) a sliding window
WINDOW_CONFIGS = [p for p in HF_CONFIGS if p.parent.name in (
    "gemma2-2b", "gemma3-27b", "idefics2-8b", "internvl3-1b", "llava-next-interleave-qwen-0.5b",
    "llava-v1.6-mistral-7b", "paligemma2-3b", "phi-3-vision-128k", "pixtral-12b", "qwen2.5-omni-7b-awq",
    "qwen2.5-vl-3b", "qwen2-vl-7b")]
# a results file's environment.cpu (a free-form string, optional) and its model's window, each valid or hostile
RESULTS_CPU = ["Intel(R) Xeon(R) Platinum 8480+ (avx512_core_amx)", "", "c" * 100_000, "nan", "\x00\n\t",
               None, 0, 1.5, True, float("nan"), 10**400, [], {"a": 1}, ["x"]]


def _calibration_doc() -> dict:
    from trsim.simulator.calibration import calibration_document
    return calibration_document({"matmul_efficiency": 0.5, "layer_overhead_s": 1e-4}, hardware_preset="cpu",
                                environment={"device": "cpu", "torch": "2.13.0"}, results_files=["r.json"], cases=4,
                                fit={"method": "fuzz", "measurements": 4, "fitted": ["matmul_efficiency"]})


def _write_mutated(rng, doc, tmpdir: Path, stem: str, fmt: str, mutations=(1, 1, 2, 3)) -> Path:
    doc = mutate_doc(doc, rng, rng.choice(mutations))
    try:
        text = serialise(doc, fmt)
    except (TypeError, ValueError, RecursionError):
        text = json.dumps(doc)
    data = damage_text(text, rng) if rng.random() < 0.2 else text.encode()
    path = tmpdir / f"{stem}.{fmt}"
    path.write_bytes(data)
    return path


def make_side_file_case(rng: random.Random, tmpdir: Path) -> list[str]:
    """A valid scenario pointing at a mutated calibration file or config.json."""
    scn = yaml.safe_load((ROOT / "scenarios" / "tiny_cpu.yaml").read_text())
    if rng.random() < 0.5:
        _write_mutated(rng, _calibration_doc(), tmpdir, "cal", "json")
        scn["hardware"]["calibration"] = "cal.json"
    elif rng.random() < 0.4:
        cfg = json.loads(rng.choice(HF_CONFIGS).read_text())
        _write_mutated(rng, cfg, tmpdir, "config", "json")
        scn["model"] = {"hf_config": "config.json"}
    else:  # the window keys of a config that reads (one that has a window, mostly), and few other mutations
        cfg = json.loads(rng.choice(WINDOW_CONFIGS if rng.random() < 0.7 else HF_CONFIGS).read_text())
        _set_hf_window(cfg, rng)
        _write_mutated(rng, cfg, tmpdir, "config", "json", mutations=(0, 0, 0, 1))
        scn["model"] = {"hf_config": "config.json"}
        if rng.random() < 0.3:  # the scenario resizes the model or sets its own window over the file's
            key = rng.choice(["num_layers", "num_layers", "sliding_window", "sliding_window_layers"])
            scn["model"][key] = copy.deepcopy(rng.choice(WINDOW.get(key, [1, 2, 4, 7, 2**12, 2**12 + 1])))
    p = tmpdir / "scenario.yaml"
    p.write_text(yaml.safe_dump(scn))
    return ["simulate", str(p), "--format", rng.choice(["json", "table", "csv"])]


def make_results_case(rng: random.Random, tmpdir: Path) -> list[str]:
    """A mutated profiler results file through validate (with the shipped-style calibration) or calibrate."""
    doc = json.loads(RESULTS.read_text())
    if rng.random() < 0.3:
        doc["environment"]["cpu"] = copy.deepcopy(rng.choice(RESULTS_CPU))
    if rng.random() < 0.15:
        _set_window(doc, rng)
    path = _write_mutated(rng, doc, tmpdir, "results", "json", mutations=(0, 1, 1, 2, 3))
    if rng.random() < 0.5:
        return ["calibrate", str(path), "--out", str(tmpdir / "cal_out.json"), "--format", "json"]
    return ["validate", str(path), "--format", "json"]


def make_case(rng: random.Random, docs, tmpdir: Path) -> list[str]:
    r = rng.random()
    if r < 0.15:
        return make_side_file_case(rng, tmpdir)
    name, base = rng.choice(docs)
    if r < 0.33:  # hardware fields over the preset and nothing else broken: most run, so the values are priced
        doc, damage = copy.deepcopy(base), 0.0
        _set_hardware(doc, rng)
    elif r < 0.43:  # the model's window fields and nothing else broken
        doc, damage = copy.deepcopy(base), 0.0
        _set_window(doc, rng)
    else:
        doc, damage = mutate_doc(base, rng, rng.choice([0, 1, 1, 2, 3, 5])), 0.25
    fmt = rng.choice(["yaml", "json", "toml"])
    try:
        text = serialise(doc, fmt)
    except (TypeError, ValueError, RecursionError):
        fmt, text = "yaml", json.dumps(doc)  # JSON is YAML; the YAML emitter recurses too deep for some cases
    data = damage_text(text, rng) if rng.random() < damage else text.encode()
    path = tmpdir / f"case.{fmt}"
    path.write_bytes(data)
    args = ["simulate", str(path)]
    r = rng.random()
    if r < 0.35:
        args += ["--format", "json"]
    elif r < 0.5:
        args += ["--format", "csv"]
    if rng.random() < 0.3:
        args.append("--detail")
    if rng.random() < 0.1:
        args += ["--out", str(tmpdir / rng.choice(["o.json", "o.csv", "nodir/o.json"]))]
    return args


def main(n: int, seed: int = 0, results: bool = False) -> int:
    import tempfile
    from collections import Counter
    rng = random.Random(seed)
    docs = load_docs()
    sites = Counter()
    examples = {}
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            args = make_results_case(rng, Path(d)) if results else make_case(rng, docs, Path(d))
            code, out, err, problem = run_case(args, timeout=120 if results else 20)
            if problem:
                key = re.sub(r"\d+(\.\d+)?", "N", problem)[:160]
                sites[key] += 1
                if key not in examples:
                    examples[key] = (args, {f.name: f.read_bytes()[:3000] for f in Path(d).iterdir() if f.is_file()},
                                     problem)
    for key, count in sites.most_common():
        print(f"{count:5d}  {key}")
    out = ROOT / ".fuzz_examples"
    out.mkdir(exist_ok=True)
    for j, (key, (args, files, problem)) in enumerate(examples.items()):
        for fname, data in files.items():
            (out / f"{j:03d}-{fname}").write_bytes(data)
        (out / f"{j:03d}.txt").write_text(f"{problem}\n{args}\n")
    print(f"{n} cases, {sum(sites.values())} problems, {len(sites)} distinct")
    return 1 if sites else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 0,
                  results="--results" in sys.argv))
