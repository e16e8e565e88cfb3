"""The per-layer token plan: the single place where a schedule gets its meaning.

A plan says, for every decoder layer ``l`` and every sequence segment ``s`` of a task, how the
segment takes part in the layer (``mode``) and how many of its tokens are present (``present``):

* ``FULL``     the present tokens are queries, keys/values and FFN inputs;
* ``KV_ONLY``  the present tokens are keys/values only (HiMix); their hidden state is not updated,
               so it stays frozen at the input of the first layer in which they stopped being full;
* ``SKIP``     the tokens take no part in the layer (HMGen shallow layer); their state passes unchanged.

Plans are compiled vectorised over ``P`` points (a sweep), so every array has a leading point axis:
``mode[P, L, S]``, ``present[P, L, S]``. The simulator computes costs from these arrays; the profiler
executes exactly these arrays. Nothing else in the project interprets a schedule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from .config import DropSpec, HimixSpec, HmgenSpec, LayerEntry, LayersSpec, MethodSpec, PyramidSpec, Task
from .errors import ScenarioError

FULL, KV_ONLY, SKIP = 0, 1, 2
MODE_NAMES = ("full", "kv_only", "skip")
_MODE_CODES = {n: i for i, n in enumerate(MODE_NAMES)}


@dataclass(frozen=True)
class Layout:
    """The static shape of a task's sequence: ordered segments."""
    names: tuple[str, ...]
    is_image: np.ndarray  # bool [S]
    tokens: np.ndarray    # int64 [S]
    target: np.ndarray    # bool [S]

    @classmethod
    def from_task(cls, task: Task) -> "Layout":
        return cls(names=tuple(s.name for s in task.segments),
                   is_image=np.array([s.kind == "image" for s in task.segments]),
                   tokens=np.array([s.tokens for s in task.segments], dtype=np.int64),
                   target=np.array([s.target for s in task.segments]))

    @property
    def total(self) -> int:
        return int(self.tokens.sum())

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.tokens)[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class Plan:
    """Compiled plan for ``P`` points. Index ``plan.point(i)`` for a single plan (P = 1)."""
    layout: Layout
    mode: np.ndarray      # int8  [P, L, S]
    present: np.ndarray   # int64 [P, L, S]
    sep_q: np.ndarray     # bool  [P, L]  image queries use image-specific Q weights in this layer
    sep_kv: np.ndarray    # bool  [P, L]  image keys/values use image-specific K/V weights in this layer
    rank: np.ndarray      # int64 [P, L, S] tokens scored in layer l to choose the survivors of layer l+1
    method: str = "baseline"
    warnings: tuple[str, ...] = ()
    layer_weights: np.ndarray | None = None  # [L] full-model layers each row stands for (sub-plans)

    @property
    def num_points(self) -> int:
        return self.mode.shape[0]

    @property
    def num_layers(self) -> int:
        return self.mode.shape[1]

    def point(self, i: int) -> "Plan":
        s = slice(i, i + 1)
        return replace(self, mode=self.mode[s], present=self.present[s], sep_q=self.sep_q[s],
                       sep_kv=self.sep_kv[s], rank=self.rank[s])

    def take(self, points) -> "Plan":
        """The plan of the given points (in order)."""
        idx = np.asarray(points, dtype=np.int64)
        return replace(self, mode=self.mode[idx], present=self.present[idx], sep_q=self.sep_q[idx],
                       sep_kv=self.sep_kv[idx], rank=self.rank[idx])

    def distinct_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(first index of each distinct point, inverse) such that ``take(first)`` expanded by ``inverse``
        equals this plan: points whose arrays are identical cost the same, so a sweep prices each once (a
        keep sweep of a 729-token segment has at most 730 distinct plans however many values it lists)."""
        P = self.num_points
        key = np.concatenate([a.reshape(P, -1).astype(np.int64)
                              for a in (self.mode, self.present, self.sep_q, self.sep_kv, self.rank)], axis=1)
        # np.unique(axis=0) sorts whole rows (slow for 10,000 points); a 64-bit row hash sorts one number per
        # point instead, and the exact comparison below falls back to "all distinct" on any collision.
        coef = np.random.default_rng(0).integers(1, 2**62, size=key.shape[1], dtype=np.int64) | 1
        with np.errstate(over="ignore"):
            h = (key * coef).sum(axis=1)
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        if not np.array_equal(key[first][inverse], key):
            return np.arange(P), np.arange(P)
        return first, inverse

    def rows(self, layers) -> "Plan":
        """The sub-plan made of the given layer rows (in order), e.g. to profile a few layers."""
        idx = np.asarray(layers, dtype=np.int64)
        return replace(self, mode=self.mode[:, idx], present=self.present[:, idx], sep_q=self.sep_q[:, idx],
                       sep_kv=self.sep_kv[:, idx], rank=self.rank[:, idx], layer_weights=None)

    def weights(self) -> np.ndarray:
        return np.ones(self.num_layers) if self.layer_weights is None else self.layer_weights

    def signature(self) -> str:
        """A short hash of what is executed (layout and every per-layer array; not the layer weights), the
        same for two schedules whose plans are identical, so that cross-validation can group them."""
        import hashlib
        assert self.num_points == 1
        h = hashlib.sha256()
        for a in (self.layout.tokens, self.layout.is_image, self.layout.target, self.mode, self.present,
                  self.sep_q, self.sep_kv, self.rank):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.astype(a.dtype.newbyteorder("<")).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> list[dict]:
        """Run-length summary of a single plan, for humans and results files."""
        assert self.num_points == 1
        rows, out = [], []
        for l in range(self.num_layers):
            rows.append(tuple((MODE_NAMES[self.mode[0, l, s]], int(self.present[0, l, s]))
                              for s in range(len(self.layout.names))))
        start = 0
        for l in range(1, self.num_layers + 1):
            if l == self.num_layers or rows[l] != rows[start]:
                out.append({"layers": f"{start}-{l - 1}" if l - 1 > start else str(start),
                            "segments": {n: {"mode": m, "present": p}
                                         for n, (m, p) in zip(self.layout.names, rows[start])}})
                start = l
        return out

    def to_dict(self) -> dict:
        assert self.num_points == 1
        return {"segments": [{"name": n, "kind": "image" if im else "text", "tokens": int(t), "target": bool(tg)}
                             for n, im, t, tg in zip(self.layout.names, self.layout.is_image,
                                                     self.layout.tokens, self.layout.target)],
                "mode": self.mode[0].tolist(), "present": self.present[0].tolist(),
                "sep_q": self.sep_q[0].tolist(), "sep_kv": self.sep_kv[0].tolist(),
                "rank": self.rank[0].tolist(), "method": self.method, "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        segs = d["segments"]
        layout = Layout(names=tuple(s["name"] for s in segs),
                        is_image=np.array([s["kind"] == "image" for s in segs]),
                        tokens=np.array([s["tokens"] for s in segs], dtype=np.int64),
                        target=np.array([s["target"] for s in segs]))
        return cls(layout=layout, mode=np.array([d["mode"]], dtype=np.int8),
                   present=np.array([d["present"]], dtype=np.int64), sep_q=np.array([d["sep_q"]], dtype=bool),
                   sep_kv=np.array([d["sep_kv"]], dtype=bool), rank=np.array([d["rank"]], dtype=np.int64),
                   method=d.get("method", "custom"), warnings=tuple(d.get("warnings", ())))


# ------------------------------------------------------------------------------ building blocks
def _baseline(layout: Layout, L: int, P: int) -> dict:
    S = len(layout.names)
    return dict(mode=np.zeros((P, L, S), dtype=np.int8),
                present=np.broadcast_to(layout.tokens, (P, L, S)).copy(),
                sep_q=np.zeros((P, L), dtype=bool), sep_kv=np.zeros((P, L), dtype=bool),
                rank=np.zeros((P, L, S), dtype=np.int64))


def kept_tokens(keep, tokens):
    """Tokens left of a segment of ``tokens`` tokens at fraction ``keep`` of its original size."""
    return np.floor(np.asarray(keep, dtype=float) * tokens + 0.5).astype(np.int64)


def _apply_keep(arrs: dict, layout: Layout, keep: np.ndarray, selection: str) -> None:
    """keep[P, L] fraction of every image segment's original tokens present from each layer on."""
    present = np.where(layout.is_image[None, None, :], kept_tokens(keep[:, :, None], layout.tokens),
                       layout.tokens[None, None, :])
    arrs["present"] = np.minimum(arrs["present"], present)
    _rank_before_drops(arrs, selection)


def _rank_before_drops(arrs: dict, selection: str) -> None:
    """With attention selection, layer l-1 scores a segment's present tokens when layer l keeps fewer."""
    if selection == "attention":
        shrink = np.zeros_like(arrs["present"], dtype=bool)
        shrink[:, :-1] = arrs["present"][:, 1:] < arrs["present"][:, :-1]
        arrs["rank"] = np.where(shrink, arrs["present"], 0)


def _set_projections(arrs: dict, layout: Layout, separate: bool) -> None:
    """One rule for every method: with separate image projections, image tokens use their own Q weights
    in layers where they are queries, and their own K/V weights in layers where they are keys."""
    if not separate or not layout.is_image.any():
        return
    img = layout.is_image[None, None, :] & (arrs["present"] > 0)
    arrs["sep_q"] = (img & (arrs["mode"] == FULL)).any(-1)
    arrs["sep_kv"] = (img & (arrs["mode"] != SKIP)).any(-1)


def hmgen_shallow_layers(num_layers: int, shallow) -> np.ndarray:
    """Shallow-layer mask [P, L] for K shallow layers alternating around the middle:
    start = L//2 - (K-1); layers start, start+2, ..., start+2(K-1)."""
    K = np.atleast_1d(np.asarray(shallow, dtype=np.int64))
    layer = np.arange(num_layers)[None, :]
    start = (num_layers // 2 - (K - 1))[:, None]
    return (K[:, None] > 0) & (layer >= start) & (layer <= start + 2 * (K[:, None] - 1)) & ((layer - start) % 2 == 0)


# ------------------------------------------------------------------------------------ compilers
def compile_points(spec: MethodSpec | None, layout: Layout, num_layers: int, parameter: str | None = None,
                   values=None) -> Plan:
    """Compile a schedule for one task; with ``parameter``/``values``, for every swept value at once."""
    L = num_layers
    P = 1 if values is None else len(values)
    arrs = _baseline(layout, L, P)
    layer = np.arange(L)[None, :]

    def param(name, default):
        if parameter == name:
            return np.asarray(values, dtype=float)
        return np.full(P, default, dtype=float)

    method = "baseline"
    if spec is None:
        pass
    elif isinstance(spec, HimixSpec):
        method = "himix"
        k = param("from_layer", spec.from_layer).astype(np.int64)
        kvo = (layer >= k[:, None])[:, :, None] & layout.is_image[None, None, :]
        arrs["mode"][kvo] = KV_ONLY
        _set_projections(arrs, layout, spec.separate_image_projections)
    elif isinstance(spec, HmgenSpec):
        method = "hmgen"
        if spec.shallow_layers is not None:
            shallow = np.zeros((P, L), dtype=bool)
            shallow[:, spec.shallow_layers] = True
        else:
            shallow = hmgen_shallow_layers(L, param("shallow", spec.shallow).astype(np.int64))
        arrs["mode"][shallow[:, :, None] & layout.is_image[None, None, :]] = SKIP
        _set_projections(arrs, layout, spec.separate_image_projections)
    elif isinstance(spec, DropSpec):
        method = "drop"
        k = param("from_layer", spec.from_layer).astype(np.int64)
        keep = np.where(layer >= k[:, None], param("keep", spec.keep)[:, None], 1.0)
        _apply_keep(arrs, layout, keep, spec.selection)
    elif isinstance(spec, PyramidSpec):
        method = "pyramid"
        keep = np.ones((P, L))
        for from_layer, k in spec.stages:
            keep[:, from_layer:] = k
        _apply_keep(arrs, layout, keep, spec.selection)
    elif isinstance(spec, LayersSpec):
        method = "layers"
        mode, keep = _layers_table(spec, layout, L, "")
        arrs["mode"][:] = mode
        arrs["present"][:] = kept_tokens(keep, layout.tokens[None, :])
        _rank_before_drops(arrs, spec.selection)
        _set_projections(arrs, layout, spec.separate_image_projections)
    else:  # pragma: no cover - parse_method only yields the types above
        raise TypeError(spec)
    return Plan(layout=layout, method=method, warnings=_warnings(arrs, layout), **arrs)


def _warnings(arrs: dict, layout: Layout) -> tuple[str, ...]:
    out = []
    for s, name in enumerate(layout.names):
        if not layout.target[s]:
            continue
        if (arrs["mode"][..., s] == KV_ONLY).any():
            out.append(f"segment '{name}' is a prediction target but is kv_only in some layers: its tokens are not "
                       f"queries there, so training no longer matches autoregressive inference")
        if (arrs["present"][..., s] < layout.tokens[s]).any():
            out.append(f"segment '{name}' is a prediction target but some of its tokens are dropped: training no "
                       f"longer matches autoregressive inference")
    return tuple(out)


def _parse_range(key: str, L: int, field: str) -> range:
    parts = [int(p) for p in re.split(r"\s*-\s*", key.strip())]
    lo, hi = parts[0], parts[-1]
    if hi < lo or hi >= L:
        raise ScenarioError(None, f"{field}.layers.{key}", f"a layer range within 0-{L - 1} (the model has {L} "
                            f"layers), got {key!r}")
    return range(lo, hi + 1)


def _layers_table(spec: LayersSpec, layout: Layout, L: int, field: str):
    S = len(layout.names)
    mode = np.zeros((L, S), dtype=np.int8)
    keep = np.ones((L, S))
    seen: dict[int, str] = {}
    for key, entries in spec.layers.items():
        rng = _parse_range(key, L, field)
        for l in rng:
            if l in seen:
                raise ScenarioError(None, f"{field}.layers.{key}", f"non-overlapping layer ranges, but layer {l} is "
                                    f"also in {seen[l]!r}")
            seen[l] = key
        for target, entry in entries.items():
            entry = LayerEntry(mode=entry) if isinstance(entry, str) else entry
            if target in layout.names:
                cols = [layout.names.index(target)]
            elif target in ("image", "text"):
                cols = [s for s in range(S) if layout.is_image[s] == (target == "image")]
            else:
                raise ScenarioError(None, f"{field}.layers.{key}.{target}",
                                    f"a segment name ({', '.join(layout.names)}) or a kind (image, text)")
            for s in cols:
                if not layout.is_image[s] and (entry.mode != "full" or entry.keep < 1):
                    raise ScenarioError(None, f"{field}.layers.{key}.{target}",
                                        "text segments always take part fully (mode full, keep 1)")
                mode[list(rng), s] = _MODE_CODES[entry.mode]
                keep[list(rng), s] = entry.keep
    for s in range(S):
        grow = np.nonzero(np.diff(keep[:, s]) > 0)[0]
        if grow.size:
            l = int(grow[0]) + 1
            raise ScenarioError(None, f"{field}.layers", f"keep of segment '{layout.names[s]}' never growing deeper "
                                f"in the stack, but it rises from {keep[l - 1, s]} to {keep[l, s]} at layer {l}")
    return mode, keep


def validate_schedule(spec: MethodSpec, task: Task, L: int, field: str, values=None, parameter=None) -> None:
    """Check a schedule against the model depth and the task; raises ScenarioError naming ``field``."""
    def check_layer(v, name):
        if not 0 <= v < L:
            raise ScenarioError(None, f"{field}.{name}", f"a layer index in 0-{L - 1} (the model has {L} layers), "
                                f"got {v}")

    layout = Layout.from_task(task)
    if isinstance(spec, (HimixSpec, DropSpec)):
        check_layer(spec.from_layer, "from_layer")
        if isinstance(spec, DropSpec) and spec.selection == "attention" and spec.from_layer < 1:
            raise ScenarioError(None, f"{field}.from_layer", "from_layer >= 1 with selection 'attention' (the "
                                "layer before the drop scores the tokens)")
    elif isinstance(spec, HmgenSpec):
        if spec.shallow_layers is not None:
            for i, v in enumerate(spec.shallow_layers):
                check_layer(v, f"shallow_layers.{i}")
        else:
            check_hmgen_count(spec.shallow, L, f"{field}.shallow")
    elif isinstance(spec, PyramidSpec):
        for i, (l, _) in enumerate(spec.stages):
            check_layer(l, f"stages.{i}")
        if spec.selection == "attention" and spec.stages[0][0] < 1:
            raise ScenarioError(None, f"{field}.stages.0", "a first stage at layer >= 1 with selection 'attention'")
    elif isinstance(spec, LayersSpec):
        keep = _layers_table(spec, layout, L, field)[1]
        if spec.selection == "attention":
            if (keep[0] < 1).any():
                raise ScenarioError(None, f"{field}.layers", "layer 0 keeping every token with selection 'attention'")
    if not layout.is_image.any():
        raise ScenarioError(None, field, "a task with at least one image segment for a token-reduction schedule")


def check_hmgen_count(K: int, L: int, field: str) -> None:
    if K == 0:
        return
    start = L // 2 - (K - 1)
    last = start + 2 * (K - 1)
    if start <= 0 or last >= L - 1:
        raise ScenarioError(None, field, f"a shallow-layer count that keeps layers 0 and {L - 1} full; {K} "
                            f"shallow layers alternating around the middle would span layers {start}-{last}")


def compile_schedule(scenario, schedule: str, task: str) -> Plan:
    spec = scenario.schedules[schedule].get(task)
    return compile_points(spec, Layout.from_task(scenario.tasks[task]), scenario.model.num_layers)


def query_set_changes(plan: Plan) -> np.ndarray:
    """[P, L] bool: layer l's query tokens differ from layer l-1's (always true at layer 0).

    The query set is the present tokens of the FULL segments. Survivors only change where a segment's
    present count shrinks, so the set is unchanged exactly when every segment keeps its FULL-ness and,
    where FULL, its present count. The executor gathers a compact working state only where this is true
    and writes it back only before the next change (or after the last layer)."""
    full = plan.mode == FULL
    q = np.where(full, plan.present, 0)
    same = (full[:, 1:] == full[:, :-1]).all(-1) & (q[:, 1:] == q[:, :-1]).all(-1)
    return np.concatenate([np.ones((plan.num_points, 1), dtype=bool), ~same], axis=1)


def select_layers(plan: Plan, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``n`` rows of a single plan that represent every distinct kind of layer.

    Rows are grouped by their full signature (modes, present tokens, projections, ranking). Every group
    gets one row, the rest are shared out in proportion to group size; within a group rows are evenly
    spaced. Returns (sorted layer indices, weight of each = how many layers of the full model it stands for).
    """
    assert plan.num_points == 1
    L = plan.num_layers
    if n >= L:
        return np.arange(L), np.ones(L)
    groups: dict[bytes, list[int]] = {}
    for l in range(L):
        sig = (plan.mode[0, l].tobytes() + plan.present[0, l].tobytes() + plan.rank[0, l].tobytes()
               + bytes([int(plan.sep_q[0, l]), int(plan.sep_kv[0, l])]))
        groups.setdefault(sig, []).append(l)
    members = list(groups.values())
    if n < len(members):
        raise ValueError(f"this plan has {len(members)} distinct kinds of layer; profile at least that many "
                         f"layers (got {n})")
    sizes = np.array([len(m) for m in members], dtype=float)
    picks = np.ones(len(members), dtype=np.int64)
    extra = n - len(members)
    if extra:
        share = sizes / sizes.sum() * n - 1
        for _ in range(extra):
            room = np.where(picks < sizes, share - (picks - 1), -np.inf)
            j = int(np.argmax(room))
            picks[j] += 1
    chosen, weights = [], []
    for m, k in zip(members, picks):
        idx = np.unique(np.floor((np.arange(k) + 0.5) * len(m) / k).astype(int))
        chosen += [m[i] for i in idx]
        weights += [len(m) / len(idx)] * len(idx)
    order = np.argsort(chosen)
    return np.asarray(chosen)[order], np.asarray(weights)[order]
