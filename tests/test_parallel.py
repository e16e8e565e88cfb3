"""Parallel layouts, recompute, precision, training stacks and task mixing: the schema's rules (bad
input exits 2 with one line), hand-computed values for each new term, and invariants."""
import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from trsim.simulator import costs, scenario_from_dict, simulate
from trsim.simulator.config import ParallelismSpec
from trsim.simulator.errors import ScenarioError
from trsim.simulator import collectives, memory, mixing, parallel


def _with(doc, parallelism=None, **training):
    d = copy.deepcopy(doc)
    if parallelism is not None:
        d["parallelism"] = parallelism
    d["training"].update(training)
    return d


# ------------------------------------------------------------------------------------ bad input
BAD_LAYOUTS = [
    (dict(num_gpus=8), dict(tensor=3), {}, "parallelism.tensor", "dividing hardware.num_gpus"),
    (dict(num_gpus=8), dict(tensor=2, pipeline=2, context=3), {}, "parallelism.context", "dividing"),
    (dict(num_gpus=8), dict(tensor=8), {}, "parallelism.tensor", "model.num_attention_heads"),
    (dict(num_gpus=4), dict(tensor=4), {}, "parallelism.tensor", "model.num_key_value_heads"),
    (dict(num_gpus=8), dict(pipeline=8), {}, "parallelism.pipeline", "at most model.num_layers"),
    (dict(num_gpus=2), dict(pipeline=2, virtual_stages=3), {}, "parallelism.virtual_stages", "dividing"),
    (dict(num_gpus=1), dict(virtual_stages=2), {}, "parallelism.virtual_stages", "without pipeline"),
    (dict(num_gpus=4), dict(pipeline=4), dict(global_batch_size=4), "training.global_batch_size",
     "at least pipeline (4) micro-batches"),
    (dict(num_gpus=2), dict(pipeline=2, virtual_stages=2), dict(global_batch_size=6), "training.global_batch_size",
     "multiple of pipeline (2)"),
    (dict(num_gpus=2), dict(pipeline=2, layers_per_stage=[1, 2]), {}, "parallelism.layers_per_stage", "summing"),
    (dict(num_gpus=2), dict(pipeline=2, layers_per_stage=[4]), {}, "parallelism.layers_per_stage",
     "one layer count per pipeline stage"),
    (dict(num_gpus=1), None, dict(precision="fp8"), "training.precision", "no fp8"),
    (dict(num_gpus=1), None, dict(activation_checkpointing=True, recompute="selective"), "training",
     "agreeing with recompute"),
    (dict(num_gpus=1), None, dict(recompute="some"), "training.recompute", ""),
    (dict(num_gpus=1), None, dict(stack="deepspeed"), "training.stack", ""),
    (dict(num_gpus=1), dict(tensor=0), {}, "parallelism.tensor", ""),
]


@pytest.mark.parametrize("hardware,par,training,field,needle", BAD_LAYOUTS)
def test_impossible_layouts_exit_2_with_one_line(tmp_path, tiny_doc, hardware, par, training, field, needle):
    doc = _with(tiny_doc, par, **training)
    doc["hardware"].update(hardware)
    doc["training"].setdefault("global_batch_size", 2)
    if "global_batch_size" not in training:
        doc["training"]["global_batch_size"] = doc["training"]["micro_batch_size"] * hardware["num_gpus"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = subprocess.run([sys.executable, "-m", "trsim", "simulate", str(path)], capture_output=True, text=True)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"trsim: error: {path}: {field}") and needle in lines[0], lines[0]


def test_activation_checkpointing_still_means_full_recompute(tiny_doc):
    a = scenario_from_dict(_with(tiny_doc, activation_checkpointing=True))
    b = scenario_from_dict(_with(tiny_doc, recompute="full"))
    assert a.training.recompute == "full" and a.training.checkpointing
    assert simulate(a).schedules[1].step.time_s == simulate(b).schedules[1].step.time_s
    assert scenario_from_dict(_with(tiny_doc, activation_checkpointing=False)).training.recompute == "none"


def test_data_parallel_size_and_micro_batches(tiny_doc):
    doc = _with(tiny_doc, dict(tensor=2, pipeline=2), global_batch_size=16)
    doc["hardware"]["num_gpus"] = 8
    doc["model"]["num_key_value_heads"] = 2
    scn = scenario_from_dict(doc)
    assert scn.data_parallel == 2 and scn.grad_accumulation == 16 // (2 * 2)
