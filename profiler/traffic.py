"""Memory traffic and operator count of the reference executor, counted at the dispatcher.

Every aten operator the executor dispatches in a training step (forward, then backward) is classified
as the timer classifies it (``measure.classify``); for the memory-bound and gather classes the counter
adds the bytes of every tensor the operator reads and writes (each input once, each output once, as a
kernel that streams them would move them; views and allocations move nothing). The forward is split by
layer at the executor's ``trsim.layer.N`` ranges. torch's FlopCounterMode counts FLOPs this way; no
library counts bytes, hence this small mode.

    python -m trsim.profiler.traffic SCENARIO [--schedule S] [--task T] [--micro-batch B] [--dtype bf16]

Runs on the CPU (SDPA's fused CPU kernel stands for the attention kernels, which it does not count).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .measure import classify

# operators that move no data: views the dispatcher does not mark as such, and bookkeeping
_NO_TRAFFIC = ("aten::detach", "aten::lift_fresh", "aten::alias", "aten::_unsafe_view", "aten::split",
               "aten::split_with_sizes", "aten::chunk", "aten::unbind")
_FACTORIES = ("aten::new_zeros", "aten::new_ones", "aten::new_full", "aten::zeros_like", "aten::ones_like",
              "aten::full_like", "aten::zeros", "aten::ones", "aten::full")
_MARK_ENTER, _MARK_EXIT = "aten::_record_function_enter_new", "aten::_record_function_exit"


class TrafficCounter(TorchDispatchMode):
    """Bytes and operator counts per class; memory-bound bytes per executor layer (key -1: outside layers)."""

    def __init__(self):
        super().__init__()
        self.bytes: Counter = Counter()      # class -> bytes
        self.ops: Counter = Counter()        # class -> operators dispatched (views excluded)
        self.layer_bytes: Counter = Counter()
        self.layer_ops: Counter = Counter()   # memory-bound operators per executor layer (key -1: outside)
        self._stack: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = "aten::" + func._schema.name.split("::", 1)[1]
        if name == _MARK_ENTER:
            label = args[0] if args and isinstance(args[0], str) else ""
            self._stack.append(int(label.rsplit(".", 1)[1]) if label.startswith("trsim.layer.") else -1)
            return out
        if name == _MARK_EXIT:
            if self._stack:
                self._stack.pop()
            return out
        cls = classify(name)
        if cls is None or func.is_view or "empty" in name or name in _NO_TRAFFIC or name == "aten::promote_types":
            return out
        self.ops[cls] += 1
        layer = next((l for l in reversed(self._stack) if l >= 0), -1)
        if cls == "memory_bound":
            self.layer_ops[layer] += 1
        if cls in ("memory_bound", "gather"):
            # factories (new_zeros, zeros_like, ...) take a tensor only as a template: they write, not read
            ins = [] if name in _FACTORIES else [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and not any(t is i for i in ins)]
            moved = sum(t.numel() * t.element_size() for t in ins + outs)
            self.bytes[cls] += moved
            if cls == "memory_bound":
                self.layer_bytes[layer] += moved
        return out


def count_step(model, ids, labels) -> dict:
    """Counted traffic of one forward and one backward (gradients freed first, as in a timed step)."""
    model.zero_grad(set_to_none=True)
    fwd, bwd = TrafficCounter(), TrafficCounter()
    with fwd:
        loss = model(ids, labels)
    with bwd:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {"forward": {"bytes": dict(fwd.bytes), "ops": dict(fwd.ops),
                        "layer_bytes": [fwd.layer_bytes[l] for l in range(len(model.layers))],
                        "outside_layers_bytes": fwd.layer_bytes[-1],
                        "layer_ops": [fwd.layer_ops[l] for l in range(len(model.layers))],
                        "outside_layers_ops": fwd.layer_ops[-1]},
            "backward": {"bytes": dict(bwd.bytes), "ops": dict(bwd.ops)}}


def main(argv=None) -> int:
    from trsim.simulator.config import load_scenario
    from trsim.simulator.plan import compile_schedule

    from .model import Decoder
    ap = argparse.ArgumentParser(prog="python -m trsim.profiler.traffic", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--schedule", default="baseline")
    ap.add_argument("--task", default=None, help="default: the scenario's first task")
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    args = ap.parse_args(argv)
    scn = load_scenario(args.scenario)
    task = args.task or next(iter(scn.tasks))
    plan = compile_schedule(scn, args.schedule, task)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    model = Decoder(scn.model, plan, lm_head=scn.conventions.lm_head, attention="sdpa").to(dtype)
    model.build_io(torch.device("cpu"), dtype)
    ids, labels = model.make_batch(args.micro_batch, torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    print(json.dumps(count_step(model, ids, labels), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
