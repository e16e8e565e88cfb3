"""Communication: the collectives a Megatron-style step issues, their time on the link each group
uses, and the part that overlap cannot hide.

Ring algorithms throughout (NCCL's choice at these sizes): over ``n`` ranks an all-reduce moves
2(n-1)/n of the buffer through each link in 2(n-1) steps, an all-gather or a reduce-scatter (n-1)/n in
n-1 steps. A group stays on NVLink (``intranode_bandwidth``) when all its ranks share a node; ranks are
ordered tensor fastest, then context, data, pipeline (Megatron-Core), so a group of ``size`` ranks at
``stride`` spans ``size x stride`` consecutive GPUs. Collectives reach ``collective_efficiency`` of the
link's per-direction bandwidth (bus bandwidth over link bandwidth); point-to-point sends reach all of it.

Latency follows the structure of NCCL's own tuning model (src/graph/tuning.cc: a base latency per
collective, plus a latency per ring step, the steps that cross nodes at the network's): once per
collective ``collective_base_latency_s``, per step inside a node ``collective_latency_s``, per step
between nodes ``internode_latency_s`` (NCCL counts 2(nodes-1) of an all-reduce's steps, nodes-1 of a
gather's, as crossing). The GPU presets' values are fitted to measured all-reduce times (python -m
trsim.validate.derive_presets).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import HardwareSpec, TrainingSpec

DDP_BUCKET_ELEMENTS = 40e6  # Megatron-Core's default gradient bucket (in elements, whatever their bytes)


def spans_nodes(hw: HardwareSpec, size: int, stride: int = 1) -> bool:
    """Whether a group of ``size`` ranks at ``stride`` (size x stride consecutive GPUs) leaves one node."""
    return size * stride > hw.gpus_per_node


def link_bandwidth(hw: HardwareSpec, size: int, stride: int = 1) -> float:
    """Per-GPU bandwidth of one transfer between two ranks of a group of ``size`` ranks at ``stride``:
    NVLink inside a node, the GPU's own network adapter across nodes (point-to-point sends)."""
    return hw.internode_bandwidth if spans_nodes(hw, size, stride) else hw.intranode_bandwidth


def collective_bandwidth(hw: HardwareSpec, size: int, stride: int = 1) -> float:
    """Bus bandwidth per rank of a ring collective over a group of ``size`` ranks at ``stride``.

    Inside a node: NVLink. Across nodes, each ring crosses every node boundary once and runs over
    NVLink elsewhere; NCCL builds one ring per network adapter, so a group with ``k`` ranks on each
    node spreads its cross-node traffic over those ranks' ``k`` adapters: k x ``internode_bandwidth``,
    at most NVLink's. With one rank per node (a data-parallel group at stride 8 on 8-GPU nodes) that is
    one adapter's bandwidth."""
    if not spans_nodes(hw, size, stride):
        return hw.intranode_bandwidth
    per_node = max(1, min(size, hw.gpus_per_node // max(stride, 1)))
    return min(hw.intranode_bandwidth, per_node * hw.internode_bandwidth)


@dataclass(frozen=True)
class Ring:
    """Where a group's ring collectives run: ``ranks`` ranks on ``nodes`` nodes, ``bw`` bus bandwidth."""
    ranks: int
    nodes: int
    bw: float


def ring(hw: HardwareSpec, size: int, stride: int = 1) -> Ring:
    """The group's ring: it spans size x stride consecutive GPUs (one rank per node beyond a node's width)."""
    span = size * stride
    nodes = size if stride >= hw.gpus_per_node else math.ceil(span / hw.gpus_per_node)
    return Ring(size, nodes, collective_bandwidth(hw, size, stride))


def ring_latency(r: Ring, laps: int, hw: HardwareSpec) -> float:
    """Latency of one ring collective that goes ``laps`` times round the ring (an all-reduce 2, an
    all-gather or reduce-scatter 1)."""
    steps, crossing = laps * (r.ranks - 1), laps * (r.nodes - 1)
    return (hw.collective_base_latency_s + (steps - crossing) * hw.collective_latency_s
            + crossing * hw.internode_latency_s)


def all_reduce(nbytes, r: Ring, hw: HardwareSpec, count=1):
    """``nbytes`` all-reduced over ring ``r`` in ``count`` collectives (buckets) that share the bytes."""
    if r.ranks <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    return nbytes * 2 * (r.ranks - 1) / r.ranks / (r.bw * hw.collective_efficiency) + count * ring_latency(r, 2, hw)


def all_gather(nbytes, r: Ring, hw: HardwareSpec, count=1):
    """Also a reduce-scatter: ``nbytes`` is the whole (unsharded) buffer."""
    if r.ranks <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    return nbytes * (r.ranks - 1) / r.ranks / (r.bw * hw.collective_efficiency) + count * ring_latency(r, 1, hw)


reduce_scatter = all_gather


def point_to_point(nbytes, bw: float, hw: HardwareSpec, across_nodes: bool = False):
    """One send: the link's whole bandwidth, a collective's base latency and one step's (not measured
    here: SimuMax's B200 fit gives 16 us a send, where this prices 35)."""
    step = hw.internode_latency_s if across_nodes else hw.collective_latency_s
    return nbytes / bw + hw.collective_base_latency_s + step


# --------------------------------------------------------------------------- tensor parallel
def tensor_parallel_time(c, m, B: int, e: int, shard, hw: HardwareSpec, recompute: str) -> dict:
    """Megatron tensor-parallel traffic of one micro-batch, per layer [P, L] seconds, and of the LM head.

    Without sequence parallelism each layer all-reduces the attention output projection's and the MLP's
    outputs in forward (query rows) and the column-parallel inputs' gradients in backward (key/value rows
    for Q/K/V, query rows for the MLP). With sequence parallelism each all-reduce becomes an all-gather
    before the column-parallel GEMM and a reduce-scatter after the row-parallel one (same bytes, twice
    the hops). Rows are per context rank. Full recompute runs the forward's collectives again. This traffic
    sits on the critical path (no overlap with the GEMMs that consume it)."""
    t, cp = shard.tensor, shard.context
    if t == 1:
        return {"layer": np.zeros_like(c.nq, dtype=float), "head": 0.0}
    r = ring(hw, t)
    row = m.hidden_size * e * B / cp
    q, kv = c.nq * row, c.nkv * row
    if shard.sequence_parallel:
        fwd = all_gather(kv, r, hw) + reduce_scatter(q, r, hw) + all_gather(q, r, hw) + reduce_scatter(q, r, hw)
        bwd = reduce_scatter(kv, r, hw) + all_gather(q, r, hw) + reduce_scatter(q, r, hw) + all_gather(q, r, hw)
    else:
        fwd = 2 * all_reduce(q, r, hw)
        bwd = all_reduce(kv, r, hw) + all_reduce(q, r, hw)
    layer = fwd + bwd + (fwd if recompute == "full" else 0)
    lm = c.n_lm * row
    # vocabulary-parallel LM head: (SP: gather its input), the input gradient's all-reduce, and the
    # cross-entropy's three fp32 all-reduces (max, sum of exponentials, target logit)
    head = (all_gather(lm, r, hw) + reduce_scatter(lm, r, hw) if shard.sequence_parallel
            else all_reduce(lm, r, hw)) + 3 * all_reduce(c.n_lm * 4 * B / cp, r, hw)
    return {"layer": layer, "head": head}


def contention(hidden, hw: HardwareSpec):
    """Seconds that ``hidden`` seconds of collectives cost the compute they overlap: a running collective
    kernel holds ``collective_compute_units`` of the GPU's ``compute_units`` (NCCL launches one CTA per
    channel, each on an SM of its own), and the overlapped kernels run on the rest, so each second of
    hidden traffic delays the compute by that share of a second. A lower bound: a GEMM sized to fill every
    SM in one wave can lose a whole extra wave, which this does not price."""
    return hidden * (hw.collective_compute_units / hw.compute_units)


def overlapped(comm, gemm, tensor: int):
    """Exposed seconds of tensor-parallel collectives pipelined with the GEMMs that consume or produce
    them (Transformer Engine userbuffers): the transfer is cut into ``tensor`` chunks, each overlapping
    the GEMM on the previous chunk, so the first chunk always waits and whatever the GEMMs cannot cover
    stays exposed: max(comm / tensor, comm - gemm), per layer. No ``contention``: userbuffers run their
    all-gathers on the copy engines and give their reduce-scatters an SM count of their own configuration,
    which nothing here measures."""
    return np.maximum(comm / tensor, comm - gemm)


# -------------------------------------------------------------------------- context parallel
def context_parallel_time(c, m, B: int, e: int, shard, hw: HardwareSpec, attention_layer) -> np.ndarray:
    """Ring attention (Megatron-Core / Transformer Engine): per layer [P, L] exposed seconds.

    Each of c ranks holds 1/c of the keys and values; c-1 ring steps pass a K/V block on in forward and
    the K/V block plus its gradient in backward. Each step's transfer overlaps the attention on the block
    at hand (1/c of the layer's attention), so what is exposed is max(0, transfer - compute) per step, and
    the part hidden costs the attention its ``contention``. ``attention_layer`` is the layer's attention
    time (forward + backward) on this rank."""
    t, cp = shard.tensor, shard.context
    if cp == 1:
        return np.zeros_like(c.nq, dtype=float)
    block = B * c.nkv / cp * 2 * (m.num_key_value_heads // t) * m.head_dim * e
    step = point_to_point(block, link_bandwidth(hw, cp, t), hw, across_nodes=spans_nodes(hw, cp, t))
    fwd_share = attention_layer / (1 + hw.attention_backward_ratio)
    bwd_share = attention_layer - fwd_share
    exposed = np.maximum(0.0, step - fwd_share / cp) + np.maximum(0.0, 2 * step - bwd_share / cp)
    return (cp - 1) * (exposed + contention(3 * step - exposed, hw))


# ------------------------------------------------------------------------- pipeline parallel
def pipeline_p2p_time(c, m, B: int, e: int, shard, hw: HardwareSpec, stages, data_parallel: int,
                      scatter_gather: bool = False) -> np.ndarray:
    """Point-to-point traffic of one micro-batch per stage, [P, p] seconds: each model chunk sends its
    output activations to the next chunk in forward and the gradient of its input to the previous chunk
    in backward; a stage pays for what it sends. The hidden state of the tokens still present crosses
    (per context rank; sharded over tensor ranks with sequence parallelism).

    ``scatter_gather`` (Megatron-LM's default without sequence parallelism, switched off by
    --no-scatter-gather-tensors-in-pipeline): the tensor ranks hold the same activations, so each sends a
    1/tensor slice and the receivers all-gather the slices over NVLink; the sender is charged both."""
    p = stages.pipeline
    out = np.zeros(c.nq.shape[:-1] + (p,))
    if p == 1:
        return out
    span = shard.tensor * shard.context * data_parallel
    bw, across = link_bandwidth(hw, 2, span), spans_nodes(hw, 2, span)
    split = scatter_gather and shard.tensor > 1 and shard.hidden == 1

    def send(rows):
        full = B * rows / shard.context * m.hidden_size * e
        if not split:
            return point_to_point(full / shard.hidden, bw, hw, across)
        return point_to_point(full / shard.tensor, bw, hw, across) + all_gather(full, ring(hw, shard.tensor), hw)

    for j, (a, b) in enumerate(stages.chunks):
        s = stages.stage_of_chunk(j)
        if b < c.live.shape[-1]:  # forward: this chunk's output to the next chunk
            out[..., s] += send(c.live[..., b])
        if a > 0:  # backward: the gradient of this chunk's input to the previous chunk
            out[..., s] += send(c.live[..., a])
    return out


# ------------------------------------------------------------------------------ data parallel
def data_parallel_time(params, t: TrainingSpec, hw: HardwareSpec, n: int, span: int, *, stack: str = "trsim",
                       backward_window=None, forward_window=None, micro_batches: int = 1, layers: int = 1):
    """Data-parallel traffic per step over ``n`` replicas whose group spans ``span`` GPUs; ``params`` are
    the parameters each replica's rank holds. Returns (total, exposed) seconds.

    Volume: gradients all-reduced (ZeRO 0-1) or reduce-scattered and the updated weights all-gathered
    (ZeRO 2, the same bytes); ZeRO-3 / FSDP reduce-scatters the gradients (layer by layer) and gathers no
    updated weights, but all-gathers the weights before each forward and each backward of every
    micro-batch.

    ``trsim`` stack (the project's step model): ``comm_overlap`` of the total hides behind backward.
    ``training.overlap_grad_reduce`` / ``overlap_param_gather`` false take away the window of the
    gradient reduction / of the weight gathers: that traffic is exposed whole.
    Real stacks (Megatron-Core DDP with overlapped gradient reduce, FSDP with prefetch): the gradient
    buckets are reduced while the last micro-batch's backward runs (``backward_window``); the last bucket
    always waits; Megatron's distributed optimizer (ZeRO 1-2 with ``stack: megatron``) reduce-scatters the
    gradients there and all-gathers the updated weights under the next step's first forward
    (``forward_window``); ZeRO-3's weight gathers are prefetched one layer ahead under each micro-batch's forward
    and backward (``forward_window``, ``backward_window``), and the first layer's gather waits.
    """
    if n <= 1:
        z = np.zeros_like(np.asarray(params, dtype=float))
        return z, z
    r = ring(hw, n, span // n)
    gathers_overlap = t.param_gather_overlapped
    if stack == "trsim":
        # ZeRO-3 reduce-scatters the gradients and gathers the weights before forward and again before backward
        zero3 = t.zero_stage == 3
        grads = (reduce_scatter if zero3 else all_reduce)(params * t.gradient_bytes, r, hw)
        gathers = 2 * all_gather(params * t.weight_bytes, r, hw) if zero3 else 0.0
        exposed = (grads * (1 - (hw.comm_overlap if t.overlap_grad_reduce else 0.0))
                   + gathers * (1 - (hw.comm_overlap if gathers_overlap else 0.0)))
        return grads + gathers, exposed
    grad_bytes = params * t.gradient_bytes
    buckets = np.maximum(1, np.ceil(params / DDP_BUCKET_ELEMENTS))  # one collective each
    # without a window (a caller pricing the traffic alone) nothing hides
    backward_window = 0.0 if backward_window is None else backward_window
    forward_window = 0.0 if forward_window is None else forward_window
    # what hides each transfer: gradient buckets under backward, weight gathers under forward (and, for
    # ZeRO-3, under backward too); a stack that does not overlap one of them leaves it no window
    grad_window = backward_window if t.overlap_grad_reduce else 0.0
    gather_forward = forward_window if gathers_overlap else 0.0
    gather_backward = backward_window if gathers_overlap else 0.0
    if stack == "megatron" and t.zero_stage in (1, 2):
        # Megatron-Core's distributed optimizer (--use-distributed-optimizer with --overlap-grad-reduce and
        # --overlap-param-gather): each bucket's gradients are reduce-scattered while the last micro-batch's
        # backward goes on, each rank updates its shard, and the updated weights are all-gathered bucket by
        # bucket as the next step's first forward reaches them. The last gradient bucket and the first
        # weight bucket always wait.
        grads = reduce_scatter(grad_bytes, r, hw, count=buckets)
        gather = all_gather(params * t.weight_bytes, r, hw, count=buckets)
        exposed = (np.maximum(grads / buckets, grads - grad_window)
                   + np.maximum(gather / buckets, gather - gather_forward))
        return grads + gather, exposed
    if t.zero_stage != 3:
        grads = all_reduce(grad_bytes, r, hw, count=buckets)
        return grads, np.maximum(grads / buckets, grads - grad_window)
    # ZeRO-3 / FSDP: each layer's gradients reduce-scattered, its weights gathered, one collective a layer
    grads = reduce_scatter(grad_bytes, r, hw, count=layers)
    last_bucket = grads / layers
    gather = all_gather(params * t.weight_bytes, r, hw, count=layers)
    per_layer = gather / layers
    exp_f = np.maximum(per_layer, gather - gather_forward)   # every micro-batch's forward gathers
    exp_b = np.maximum(per_layer, gather - gather_backward)  # every earlier micro-batch's backward gathers
    # the last micro-batch's backward carries both its weight gathers and the gradient reduction: they share
    # one window, and what each leaves exposed at least (the last bucket, the first layer's gather) waits
    hideable = (np.where(t.overlap_grad_reduce, grads - last_bucket, 0.0)
                + np.where(gathers_overlap, gather - per_layer, 0.0))
    last = grads + gather - np.clip(backward_window, 0.0, hideable)
    total = grads + micro_batches * 2 * gather
    return total, last + micro_batches * exp_f + (micro_batches - 1) * exp_b
