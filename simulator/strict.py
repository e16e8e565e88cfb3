"""Strict validation of user documents with one clear message per failure.

pydantic does the validation; this module adds what its lax mode lacks and rewrites its errors:

* no coercion between kinds of value: ``true`` is not the number 1, ``"8"`` is not 8 and ``1`` is not
  ``true`` (``refuse_coercions`` compares the validated document with the raw one, so it covers every
  field of every model, including fields added later);
* messages read ``expected ..., got ...`` and field paths are paths into the user's document: pydantic's
  internal union-member tags (``literal[...]``, ``LayerEntry``) and class names ("instance of Task")
  never reach the user.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ScenarioError, describe

_KIND_WORDS = {"bool": "true or false", "number": "a number", "str": "a string", "null": "no value",
               "dict": "a mapping", "list": "a list"}


def _kind(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "str"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "dict"
    if isinstance(v, (list, tuple)):
        return "list"
    return type(v).__name__


def _join(prefix: str, parts) -> str:
    return ".".join([p for p in [prefix] if p] + [str(p) for p in parts])


def refuse_coercions(raw: Any, validated: Any, prefix: str = "", where: str | None = None) -> None:
    """Raise ScenarioError at the first scalar whose kind changed in validation (bool <-> number <-> string)."""
    stack = [(raw, validated, ())]
    while stack:
        r, v, path = stack.pop()
        if isinstance(v, BaseModel):
            v = v.model_dump()
        if isinstance(r, dict) and isinstance(v, dict):
            stack.extend((r[k], v[k], path + (k,)) for k in reversed(list(r)) if k in v)
        elif isinstance(r, (list, tuple)) and isinstance(v, (list, tuple)):
            stack.extend((a, b, path + (i,)) for i, (a, b) in reversed(list(enumerate(zip(r, v)))))
        else:
            kr, kv = _kind(r), _kind(v)
            if kr != kv and kr in ("bool", "number", "str") and kv in ("bool", "number", "str"):
                want = "a whole number" if isinstance(v, int) and kv == "number" else _KIND_WORDS[kv]
                raise ScenarioError(where, _join(prefix, path), f"{want}, got {describe(r)}")


def _clean_loc(loc, raw) -> tuple[list, Any, bool]:
    """The parts of a pydantic location that are keys or indices of the user's document (dropping union
    member tags and validator names), the raw value found there, and whether the whole path was found."""
    parts, node, found = [], raw, True
    for part in loc:
        if isinstance(node, dict) and part in node:
            parts.append(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(part)
            node = node[part]
        elif isinstance(part, str) and _looks_internal(part):
            continue
        else:
            parts.append(part)  # a missing key: still part of the path the user must fix
            node, found = None, False
    return parts, node, found


_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "tuple", "set"}


def _looks_internal(part: str) -> bool:
    """pydantic's union-member and validator tags: ``literal['a','b']``, ``function-after[...]``, ``LayerEntry``."""
    return ("[" in part or "(" in part or part in _TAGS
            or (part[:1].isupper() and part.replace("_", "").isalnum() and not part.isupper()))


_TYPE_ERRORS = {"model_type", "model_attributes_type", "dict_type", "is_instance_of", "dataclass_type"}


def _phrase(err: dict) -> str:
    t, ctx = err["type"], err.get("ctx") or {}
    simple = {
        "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
        "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
        "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
        "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
        "list_type": "a list", "tuple_type": "a list", "set_type": "a list", "missing": "a value (required)",
        "int_parsing_size": "a whole number of sensible size", "none_required": "no value",
    }
    if t in simple:
        return simple[t]
    if t == "literal_error":
        return f"one of {ctx.get('expected', '')}".replace("'", "")
    if t in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        word = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[t]
        bound = next(iter(ctx.values()))
        return f"a number {word} {bound:,}" if isinstance(bound, int) and abs(bound) >= 10**4 else f"a number {word} {bound}"
    if t in ("too_short", "too_long"):
        n = ctx.get("min_length" if t == "too_short" else "max_length")
        return f"{'at least' if t == 'too_short' else 'at most'} {n:,} item{'s' if n != 1 else ''}"
    if t == "string_too_short":
        return "a non-empty string" if ctx.get("min_length") == 1 else f"at least {ctx.get('min_length')} characters"
    if t == "string_too_long":
        return f"at most {ctx.get('max_length'):,} characters"
    if t == "value_error":
        msg = err["msg"]
        return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    if t == "assertion_error":
        return err["msg"].removeprefix("Assertion failed, ")
    return err["msg"][:1].lower() + err["msg"][1:]


def error_from_validation(exc: ValidationError, raw: Any = None, where: str | None = None,
                          prefix: str = "", known_keys=None) -> ScenarioError:
    """One ScenarioError for a pydantic ValidationError: the error deepest in the user's document (type
    errors of a union member that did not apply lose to errors inside the member that did)."""
    best = None
    for err in exc.errors(include_url=False):
        parts, _, _ = _clean_loc(err["loc"], raw)
        score = (len(parts), err["type"] not in _TYPE_ERRORS and err["type"] != "missing")
        if best is None or score > best[0]:
            best = (score, err, parts)
    _, err, parts = best
    field = _join(prefix, parts) or "<root>"
    t = err["type"]
    if t == "extra_forbidden":
        key = parts[-1] if parts else "?"
        text = f"a known key, got unknown key {describe(key)}"
        if known_keys:
            text = f"one of the keys {', '.join(known_keys)}, got unknown key {describe(key)}"
        return ScenarioError(where, field, text)
    phrase = _phrase(err)
    if t in ("missing",) or t == "value_error" and ", got " in phrase:
        return ScenarioError(where, field, phrase)
    if t == "value_error" or t == "assertion_error":
        return ScenarioError(where, field, phrase)
    return ScenarioError(where, field, f"{phrase}, got {describe(err.get('input'))}")


def validate(model: type[BaseModel], raw: Any, where: str | None = None, prefix: str = ""):
    """``model.model_validate(raw)`` with coercions refused and one clear ScenarioError on failure."""
    try:
        obj = model.model_validate(raw)
    except ValidationError as exc:
        keys = _known_keys(model, exc)
        raise error_from_validation(exc, raw, where, prefix, keys) from None
    refuse_coercions(raw, obj, prefix, where)
    return obj


def _known_keys(model: type[BaseModel], exc: ValidationError):
    errs = exc.errors(include_url=False)
    if errs and errs[0]["type"] == "extra_forbidden" and len(errs[0]["loc"]) == 1:
        return [f.alias or n for n, f in model.model_fields.items()]
    return None
