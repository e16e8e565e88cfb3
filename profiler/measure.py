"""Measuring one profiled case: saved activations, time per step, time per operator class, peak memory."""
from __future__ import annotations

import gc
import statistics
import time
import warnings
from contextlib import contextmanager

import torch

# operator classes the time model has a term for
CLASSES = ("matmul", "attention", "gather", "memory_bound")
OPS_KEPT = 40  # operators recorded per case (ops_s, ops_calls)
_MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm")
_GATHER = ("aten::index_select", "aten::index_copy", "aten::index_add", "aten::index", "aten::gather",
           "aten::scatter", "aten::index_put", "aten::_index_put_impl_")
# aggregate ops whose time is already in their children
_WRAPPERS = ("aten::linear", "aten::matmul", "aten::scaled_dot_product_attention", "aten::t", "aten::view",
             "aten::reshape", "aten::transpose", "aten::expand", "aten::as_strided", "aten::_reshape_alias")


def classify(name: str) -> str | None:
    # Compiled code (FlexAttention on CUDA) launches Triton kernels, not aten ops; inductor names each
    # launch's profiler range after the kernel: "triton_tem_*" for templates (FlexAttention's forward and
    # backward are the only templates the executor compiles), "triton_poi_*"/"triton_red_*"/... for the
    # pointwise and reduction kernels around them.
    if name.startswith("triton_"):
        return "attention" if name.startswith("triton_tem") or "flex" in name else "memory_bound"
    if name.startswith("aten::") is False:
        return None
    if "attention" in name or "flash" in name or "fmha" in name:
        return "attention"
    if name in _MATMUL:
        return "matmul"
    if any(name.startswith(g) for g in _GATHER):
        return "gather"
    if name in _WRAPPERS:
        return None
    return "memory_bound"


@contextmanager
def saved_tensor_accounting():
    """The unique storages autograd saves for backward: yields {storage pointer: bytes}."""
    seen: dict[int, int] = {}
    alive = []  # hold every storage so that no address is reused while we count

    def pack(t):
        try:
            st = t.untyped_storage()
            alive.append(st)
            seen.setdefault(st.data_ptr(), st.nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def constant_tensors(model) -> list:
    """Tensors that are not activations: parameters and the plan's precomputed index/mask/rotary tensors."""
    out = list(model.parameters())
    if getattr(model, "_idx_lm", None) is not None:
        out.append(model._idx_lm)
    for io in (model._io or []) + getattr(model, "_built", []):
        block = io.block_mask.as_tuple()[:-1] if io.block_mask is not None else ()
        out += [t for t in (io.idx_q, io.idx_kvo, io.mask, io.cos_q, io.sin_q, io.cos_k, io.sin_k, *block)
                if isinstance(t, torch.Tensor)]
    return out


def constant_storages(model) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in constant_tensors(model)}


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def step_peak(model, ids, labels, optimizer) -> tuple[int, int] | None:
    """(bytes allocated before a training step, peak bytes during it), gradients freed before it as a
    training loop frees them, after an untimed step that materialises the optimizer states. CUDA:
    ``memory_allocated`` and ``max_memory_allocated``. The CPU has no such counters: the profiler's
    allocation events (``profile_memory``) give every allocation and free in order, the peak is the
    largest running sum over what lived before, and what lived before is counted from the tensors
    themselves (weights, the plan's constant tensors, optimizer states, the batch). None elsewhere."""
    device = ids.device
    if device.type not in ("cuda", "cpu"):
        return None
    model(ids, labels).backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        static = torch.cuda.memory_allocated(device)
        model(ids, labels).backward()
        optimizer.step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        model.zero_grad(set_to_none=True)
        return static, peak
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    if getattr(model, "_dynamic", False):  # freed by the next forward, which the profiler would not see
        model._built = []
    states = [v for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    static = storage_bytes(constant_tensors(model) + states + [ids, labels])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(ids, labels).backward()
            optimizer.step()
    model.zero_grad(set_to_none=True)
    sizes = []

    def walk(node):
        if node.tag == _EventType.Allocation:
            sizes.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)
    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    running = top = 0
    for _, size in sorted(sizes):
        running += size
        top = max(top, running)
    return static, static + top


def saved_activation_bytes(model, ids, labels) -> int:
    """Bytes of activations saved for backward by one forward (parameters, inputs and the plan's
    index, mask and rotary tensors excluded)."""
    model.zero_grad(set_to_none=True)
    with saved_tensor_accounting() as seen:
        loss = model(ids, labels)
    constants = constant_storages(model) | {ids.untyped_storage().data_ptr(), labels.untyped_storage().data_ptr()}
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(b for p, b in seen.items() if p not in constants)


def stats(xs) -> dict:
    """Median, extremes and interquartile range of repeated measurements (seconds)."""
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "iqr_s": q[2] - q[0],
            "samples": len(xs)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_clock(device):
    """(name, clock) a step is timed with. CUDA: events (no host clock). CPU with torch single-threaded:
    the calling thread's CPU time (every kernel and the CPU autograd engine then run on this thread, so
    time the scheduler gives to other processes on a shared machine is not counted; on an idle machine it
    equals the wall time). CPU with several threads: the wall time (a thread clock would miss the others)."""
    if device.type == "cuda":
        return "cuda_events", None
    if torch.get_num_threads() == 1:
        return "thread_cpu", time.thread_time
    return "wall", time.perf_counter


@contextmanager
def no_gc():
    """Python's cyclic garbage collector off (after one collection), as timeit does: a collection that
    starts inside a timed step walks every object alive, other cases' models included, and charges it
    to whichever step it interrupted."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def step_samples(model, ids, labels, optimizer, steps: int) -> tuple[list[float], list[float]]:
    """Seconds of forward+backward and of the optimizer step, for each of ``steps`` steps (no warm-up;
    callers time inside ``no_gc``)."""
    clock = step_clock(ids.device)[1]
    fb, opt = [], []
    device = ids.device
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        _sync(device)
        if device.type == "cuda":
            e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            e0.record()
            model(ids, labels).backward()
            e1.record()
            optimizer.step()
            e2.record()
            torch.cuda.synchronize(device)
            t_fb, t_opt = e0.elapsed_time(e1) / 1e3, e1.elapsed_time(e2) / 1e3
        else:
            t0 = clock()
            model(ids, labels).backward()
            t1 = clock()
            optimizer.step()
            t2 = clock()
            t_fb, t_opt = t1 - t0, t2 - t1
        fb.append(t_fb)
        opt.append(t_opt)
    model.zero_grad(set_to_none=True)
    return fb, opt


def time_steps(model, ids, labels, optimizer, repeats: int, warmup: int) -> dict:
    """Median and spread of forward+backward, and of the optimizer step, in seconds."""
    with no_gc():
        step_samples(model, ids, labels, optimizer, warmup)
        fb, opt = step_samples(model, ids, labels, optimizer, repeats)
    return {"forward_backward": stats(fb), "optimizer": stats(opt)}


def _step_classes(events, use_dev: bool, n_layers: int) -> tuple[dict, list[float], dict]:
    """Self time per operator class, forward time per layer and, per classified operator, its self time
    and number of calls in one profiled step (seconds)."""
    out = {c: 0.0 for c in CLASSES}
    layers: dict[int, float] = {}
    ops: dict[str, tuple[float, int]] = {}
    for ev in events:
        t = (ev.self_device_time_total if use_dev else ev.self_cpu_time_total) / 1e6
        if ev.key.startswith("trsim.layer."):
            layers[int(ev.key.rsplit(".", 1)[1])] = (ev.device_time_total if use_dev else ev.cpu_time_total) / 1e6
            continue
        cls = classify(ev.key)
        if cls is not None:
            out[cls] += t
            ops[ev.key] = (t, int(ev.count))
    return out, [layers.get(l, 0.0) for l in range(n_layers)], ops


def class_times(model, ids, labels, repeats: int = 5) -> dict:
    """Self time per operator class and forward time per layer over ``repeats`` profiled steps (one
    torch.profiler cycle each): the median of each, and per class the spread. On CUDA the device
    (kernel) time is used, elsewhere the CPU self time."""
    from torch.profiler import ProfilerActivity, profile, schedule
    device = ids.device
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    use_dev = device.type == "cuda"
    n_layers = len(model.layers)
    steps: list[tuple[dict, list[float]]] = []
    model.zero_grad(set_to_none=True)
    _sync(device)
    with warnings.catch_warnings():  # "won't be using warmup": the first, untimed step is the warm-up
        warnings.simplefilter("ignore")
        prof = profile(activities=acts, schedule=schedule(skip_first=1, wait=0, warmup=0, active=1, repeat=repeats),
                       on_trace_ready=lambda p: steps.append(_step_classes(p.key_averages(), use_dev, n_layers)))
    with prof, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats + 1):
            model(ids, labels).backward()
            _sync(device)
            model.zero_grad(set_to_none=True)
            prof.step()
    model.zero_grad(set_to_none=True)
    per_class = {c: stats([s[0][c] for s in steps]) for c in CLASSES}
    layer_fwd = [statistics.median(s[1][l] for s in steps) for l in range(n_layers)]
    # the operators behind the classes, largest first, down to 0.5% of the classified time: what a
    # per-kernel floor or an unpriced kernel looks like (median self time; calls in one step)
    total = sum(v["median_s"] for v in per_class.values())
    names = {k for s in steps for k in s[2]}
    med = {k: statistics.median(s[2].get(k, (0.0, 0))[0] for s in steps) for k in names}
    top = sorted((k for k in names if med[k] >= 0.005 * total), key=lambda k: -med[k])[:OPS_KEPT]
    return {"classes_s": {c: v["median_s"] for c, v in per_class.items()}, "classes_stats": per_class,
            "layer_forward_s": layer_fwd, "ops_s": {k: med[k] for k in top},
            "ops_calls": {k: max(s[2].get(k, (0.0, 0))[1] for s in steps) for k in top}}
