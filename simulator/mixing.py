"""How tasks share a step: the ideal mean, task-homogeneous micro-batches (the step waits for the
slowest data-parallel replica) and packed mixed micro-batches.

Homogeneous: each of the ``m`` micro-batches a replica runs per step holds one task, drawn
independently in proportion to the tasks' samples, so a replica's task counts are multinomial. A
replica's time is that of its pipeline with those counts; the step ends when the slowest of the ``dp``
replicas ends. Its expectation is computed exactly, as the order statistic of ``dp`` independent draws
from the finite distribution of replica times (every count vector enumerated with its multinomial
probability), not by simulation.
"""
from __future__ import annotations

from dataclasses import fields, replace
from itertools import combinations

import numpy as np
from scipy.special import gammaln

MAX_COMPOSITIONS = 2_000_000  # count vectors x points held at once; larger problems are cut into point chunks
MAX_COUNT_VECTORS = 100_000   # count vectors enumerated at all (a few seconds); beyond, refused up front


def check_enumerable(micro_batches: int, tasks: int) -> None:
    """Refuse, before any work, a homogeneous mix whose count vectors (C(m + k - 1, k - 1)) cannot be
    enumerated in reasonable time and memory (it grows like m^(k-1): 10 tasks over 100 micro-batches is 4e12)."""
    import math

    from .errors import ScenarioError
    n = math.comb(micro_batches + tasks - 1, tasks - 1)
    if n > MAX_COUNT_VECTORS:
        raise ScenarioError(None, "training.task_mixing", f"a homogeneous mix of at most {MAX_COUNT_VECTORS:,} "
                            f"task-count vectors per replica, got {n:,.3g} ({tasks} tasks over {micro_batches:,} "
                            f"micro-batches); use task_mixing: ideal or mixed, or fewer micro-batches per step")


def compositions(m: int, k: int) -> np.ndarray:
    """Every vector of ``k`` non-negative integers summing to ``m`` (stars and bars), [J, k]."""
    if k == 1:
        return np.array([[m]], dtype=np.int64)
    out = []
    for bars in combinations(range(m + k - 1), k - 1):
        edges = (-1,) + bars + (m + k - 1,)
        out.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.asarray(out, dtype=np.int64)


def multinomial_pmf(counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Probability of each count vector [J, k] under a multinomial with ``probs`` [k]."""
    m = counts.sum(-1)
    with np.errstate(divide="ignore"):
        logp = np.log(probs)
    terms = np.where(counts > 0, counts * logp, 0.0)
    return np.exp(gammaln(m + 1) - gammaln(counts + 1).sum(-1) + terms.sum(-1))


def expected_max(values: np.ndarray, probs: np.ndarray, n: int) -> np.ndarray:
    """E[max of ``n`` independent draws] of a discrete distribution: ``values`` [P, J], ``probs`` [J];
    sum_j x_(j) (F_j^n - F_(j-1)^n) over the values in increasing order."""
    order = np.argsort(values, axis=-1, kind="stable")
    x = np.take_along_axis(values, order, axis=-1)
    cdf = np.minimum(np.cumsum(probs[order], axis=-1), 1.0)
    fn = cdf ** n
    return (x * np.diff(fn, axis=-1, prepend=0.0)).sum(-1)


def homogeneous_step(stage_times: list[np.ndarray], fractions: list[float], micro_batches: int, replicas: int,
                     virtual: int) -> np.ndarray:
    """Expected pipeline time of the slowest of ``replicas`` data-parallel replicas, [P].

    ``stage_times``: per task, one micro-batch's time on each stage [P, p]. A replica drawing counts n_k
    keeps its slowest stage busy for max_s sum_k n_k T_sk; warm-up and cool-down are those of the mean
    micro-batch, (sum_s Tbar_s - max_s Tbar_s) / v, as in ``parallel.pipeline_time``."""
    f = np.asarray(fractions, dtype=float)
    keep = f > 0
    # a sweep varies one task: the others' times are [1, p] and broadcast against the swept task's [P, p]
    T = np.stack(np.broadcast_arrays(*[t for t, k in zip(stage_times, keep) if k]), axis=-1)  # [P, p, K]
    f = f[keep]
    mean = (T * f).sum(-1)
    fill = (mean.sum(-1) - mean.max(-1)) / virtual
    check_enumerable(micro_batches, len(f))
    counts = compositions(micro_batches, len(f))
    probs = multinomial_pmf(counts, f)
    P = T.shape[0]
    step = max(1, MAX_COMPOSITIONS // max(1, len(counts) * T.shape[1]))
    out = np.empty(P)
    for a in range(0, P, step):
        busy = np.einsum("psk,jk->pjs", T[a:a + step], counts).max(-1)  # [P, J]
        out[a:a + step] = expected_max(busy, probs, replicas)
    return out + fill


def packed_counts(counts_list, fractions):
    """The token counts of a micro-batch that packs every task's samples in proportion to ``fractions``
    (per sample of the packed micro-batch): each count is the fraction-weighted sum, so GEMMs see the
    packed rows and a variable-length attention kernel the sum of the sequences' pairs."""
    base = counts_list[0]
    out = {}
    for fld in fields(base):
        name = fld.name
        if name in ("masked", "gathered", "regathered", "written_back", "weights"):
            continue
        out[name] = sum(f * getattr(c, name) for c, f in zip(counts_list, fractions))
    return replace(base, **out, masked=out["nkvo"] > 0, gathered=out["nq"] < out["total"],
                   regathered=out["nq_regathered"] > 0, written_back=out["nq_written_back"] > 0)
