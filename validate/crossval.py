"""Cross-validation splits that never leak, and held-out prediction.

Items are profiler cases (``fit.Case``) or runs (``runs.Run``); both carry a ``signature`` that is equal
for identical configurations (the same compiled plan on the same model and batch, whatever schedule or
name produced it). Items with one signature form a unit, and every scheme assigns whole units to folds:
by its key (a schedule, a size, a tag; a unit whose items carry several keys goes with the smallest),
one unit per fold for leave-one-out, or a deterministic k-way split of the units. So no fold ever
predicts an item from a fit that saw an identical one.

Schemes: ``loo``; ``k`` (5-fold) or ``kN`` (N-fold); ``group:FIELD`` (a run's tag or attribute, a case's
``schedule``, ``size``, ``task`` or ``source``); the profiler's ``schedule`` and ``size``.
"""
from __future__ import annotations

import hashlib

from trsim.simulator.errors import ScenarioError

from . import fit as F


def parse_scheme(text: str) -> tuple[str, object]:
    if text == "loo":
        return ("loo", None)
    if text == "k":
        return ("k", 5)
    if text.startswith("k") and text[1:].isdigit() and int(text[1:]) >= 2:
        return ("k", int(text[1:]))
    if text.startswith("group:") and len(text) > 6:
        return ("group", text[6:])
    if text in ("schedule", "size"):
        return ("group", text)
    raise ScenarioError("--cv", "cv", f"expected loo, k, kN (N >= 2) or group:FIELD, got {text!r}")


def _key(item, field: str):
    tags = getattr(item, "tags", None) or {}
    if field in tags:
        return str(tags[field])
    if hasattr(item, field):
        return str(getattr(item, field))
    raise ScenarioError(getattr(item, "source", None), f"--cv group:{field}",
                        f"expected a tag or attribute {field!r} on every run or case "
                        f"(missing on {getattr(item, 'name', item)!r})")


def _units(sigs: list[str]) -> list[int]:
    """Items with identical signatures form one unit: unit id per item, in first-seen order."""
    ids: dict[str, int] = {}
    return [ids.setdefault(s, len(ids)) for s in sigs]


def folds(items: list, scheme: tuple[str, object]) -> list[list[int]]:
    """Held-out index sets, one per fold; together they cover every item once, and a fold holds every
    item identical to one of its own (so no training set contains a copy of a held-out item)."""
    kind, arg = scheme
    sigs = [it.signature for it in items]
    unit_of = _units(sigs)
    n_units = max(unit_of) + 1
    if kind == "group":
        # a unit goes to the fold of the smallest label among its items (baseline-identical plans of a
        # schedule that leaves one task alone are held out with the baseline)
        labels: dict[int, str] = {}
        for it, u in zip(items, unit_of):
            k = _key(it, arg)
            labels[u] = min(labels.get(u, k), k)
        names = sorted(set(labels.values()))
        unit_fold = {u: names.index(lab) for u, lab in labels.items()}
    else:
        # units are dealt to folds in the order of a hash of their first item's fold key (a run's
        # configuration as written, not its preset's values: Run.fold_key), so changing a preset constant
        # leaves the split alone; the signature breaks ties
        keys = [getattr(it, "fold_key", s) for it, s in zip(items, sigs)]
        order = sorted(range(n_units), key=lambda u: (hashlib.sha256(keys[unit_of.index(u)].encode()).hexdigest(),
                                                       sigs[unit_of.index(u)]))
        k = n_units if kind == "loo" else min(int(arg), n_units)
        unit_fold = {u: i % k for i, u in enumerate(order)}
    out: dict[int, list[int]] = {}
    for i, u in enumerate(unit_of):
        out.setdefault(unit_fold[u], []).append(i)
    return [out[f] for f in sorted(out)]


def held_out(items: list, hw0, scheme: tuple[str, object], fit_fn=None) -> dict[int, dict]:
    """Predict every item from a fit on the other folds: index -> {predicted_s, fold, fixed} (or an
    ``error`` where the training folds could not be fitted). One fold only: nothing to hold out."""
    fit_fn = fit_fn or F.fit
    fs = folds(items, scheme)
    if len(fs) < 2:
        return {}
    out = {}
    for n, test in enumerate(fs):
        held = set(test)
        train = [it for i, it in enumerate(items) if i not in held]
        try:
            res = fit_fn(train, hw0)
        except ScenarioError as err:
            for i in test:
                out[i] = {"predicted_s": None, "fold": n, "error": err.expected}
            continue
        for i in test:
            hw = items[i].hardware_with(res.values, hw0)
            out[i] = {"predicted_s": items[i].predicted_time(hw), "fold": n, "fixed": sorted(res.fixed)}
    return out
