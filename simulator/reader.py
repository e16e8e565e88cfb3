"""Reading user files defensively: scenarios, calibration files, config.json files and results files.

Every failure is a ``ScenarioError`` naming the file: a missing file, a directory, a named pipe (never
opened, so it cannot block), a symlink loop, an unreadable or over-large file, bytes that are not UTF-8,
malformed YAML/JSON/TOML, a key given twice in one mapping (YAML and JSON keep the last one silently;
TOML refuses it itself), the JSON constants NaN/Infinity, and nesting deeper than any real file needs.
YAML is read with PyYAML's safe loader (no object construction).
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import yaml

from .errors import ScenarioError, describe

MAX_BYTES = 64 * 2**20      # no scenario, calibration or config.json comes near this; results files stay far below
MAX_DEPTH = 32              # the deepest real scenario nests 7 levels
MAX_NODES = 2_000_000       # bounds YAML alias expansion ("billion laughs") before anything walks the document

_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


class UnreadableFile(ScenarioError):
    """The file could not be read at all (missing, a directory, a pipe, a loop, permissions): the fault is
    in whatever names the path, so callers re-raise it against the field that gave the path."""

    def for_field(self, field: str) -> ScenarioError:
        return ScenarioError(None, field, f"{self.expected.replace(', got', f' at {self.where}, got', 1)}")


def read_text(path: str | Path, what: str = "file", max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file, or a ScenarioError naming the file and what was wrong."""
    try:
        return _read_text(path, what, max_bytes)
    except ScenarioError as err:
        if err.field == "<file>" and not err.expected.startswith("UTF-8"):
            raise UnreadableFile(err.where, err.field, err.expected) from None
        raise


def _read_text(path: str | Path, what: str, max_bytes: int) -> str:
    p = Path(path)
    where = str(p)
    try:
        st = os.stat(p)  # follows symlinks; a loop raises ELOOP
    except FileNotFoundError:
        raise ScenarioError(where, "<file>", f"an existing {what}, got none (not found)")
    except PermissionError:
        raise ScenarioError(where, "<file>", f"a readable {what}, got permission denied")
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or exc.__class__.__name__)
        raise ScenarioError(where, "<file>", f"a readable {what}, got {reason}")
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(where, "<file>", f"a {what}, got a directory")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise ScenarioError(where, "<file>", f"a regular {what}, got {kind}")
    if st.st_size > max_bytes:
        raise ScenarioError(where, "<file>", f"a {what} of at most {max_bytes // 2**20} MiB, got "
                            f"{st.st_size / 2**20:.0f} MiB")
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except PermissionError:
        raise ScenarioError(where, "<file>", f"a readable {what}, got permission denied")
    except OSError as exc:
        raise ScenarioError(where, "<file>", f"a readable {what}, got {exc.strerror or exc.__class__.__name__}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScenarioError(where, "<file>", f"UTF-8 text, got a byte that is not UTF-8 at offset {exc.start}")


class _DuplicateKey(Exception):
    def __init__(self, key, line: int | None):
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (merge keys ``<<`` may still be overridden)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hashable = hash(key) is not None
                except TypeError:
                    hashable = False
                if hashable and key in seen:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1)
                if hashable:
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k, None)
        out[k] = v
    return out


class _NonFinite(Exception):
    pass


def _json_constant(name):
    raise _NonFinite(name)


def _format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    return {".toml": "toml", ".json": "json"}.get(suffix, "yaml")


def parse_text(text: str, fmt: str, where: str) -> Any:
    """Parse YAML, JSON or TOML text; duplicate keys, JSON NaN/Infinity and runaway nesting are refused."""
    try:
        if fmt == "toml":
            doc = tomllib.loads(text)
        elif fmt == "json":
            doc = json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
        else:
            doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        line = f" (line {exc.line})" if exc.line else ""
        raise ScenarioError(where, str(exc.key), f"each key once in a mapping, got {describe(exc.key)} twice{line}")
    except _NonFinite as exc:
        raise ScenarioError(where, "<file>", f"finite numbers, got {exc.args[0]}")
    except RecursionError:
        raise ScenarioError(where, "<file>", f"nesting at most {MAX_DEPTH} levels deep, got far deeper")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ScenarioError(where, "<file>", f"well-formed {fmt.upper()}, got a syntax error ({detail})")
    check_shape(doc, where)
    return doc


def check_shape(doc: Any, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH or more than MAX_NODES values, without recursing."""
    stack = [(doc, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ScenarioError(where, "<file>", f"at most {MAX_NODES:,} values (YAML aliases included), got more")
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth >= MAX_DEPTH:
            raise ScenarioError(where, "<file>", f"nesting at most {MAX_DEPTH} levels deep, got deeper")
        stack.extend((c, depth + 1) for c in children)


def read_document(path: str | Path, what: str = "scenario file", fmt: str | None = None,
                  max_bytes: int = MAX_BYTES) -> dict:
    """A mapping read from a YAML (safe loader), TOML or JSON file (by suffix unless ``fmt``)."""
    p = Path(path)
    f = _format(p, fmt)
    doc = parse_text(read_text(p, what, max_bytes), f, str(p))
    if not isinstance(doc, dict):
        raise ScenarioError(str(p), "<root>", f"a mapping at the top level, got {describe(doc)}")
    return doc
