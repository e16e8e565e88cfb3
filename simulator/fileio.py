"""Result files: checked before any work starts, then written atomically (a temporary file beside the
target, renamed over it) with the permissions the user's umask gives a new file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import ScenarioError, describe


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a result file is an ordinary file
    os.replace(tmp, path)


def check_writable(path: str | Path, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Fail now, before any work, if ``path`` cannot be written: wrong extension, a directory, a parent that
    is a file, or a directory where no file can be created (probed by creating and removing a temporary
    file). Missing parent directories are created, as the write itself would."""
    p = Path(path)
    where = str(path)
    if not p.name or p.is_dir():
        raise ScenarioError(where, flag, "a file path, got a directory")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise ScenarioError(where, flag, f"a file name ending in {' or '.join(suffixes)}, got {describe(p.suffix or p.name)}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:100]}.", suffix=".probe", dir=p.parent)
        os.close(fd)
        os.unlink(tmp)
    except FileExistsError:
        raise ScenarioError(where, flag, "a path whose parent folders are folders, got a file in the way")
    except NotADirectoryError:
        raise ScenarioError(where, flag, "a path whose parent folders are folders, got a file in the way")
    except PermissionError:
        raise ScenarioError(where, flag, f"a writable folder, got permission denied in {p.parent}")
    except OSError as exc:
        raise ScenarioError(where, flag, f"a writable path, got {exc.strerror or exc.__class__.__name__}")
    return p


def atomic_write_text(path: str | Path, text) -> None:
    """``text``: a string, or an iterable of strings written one after another (large outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            for piece in ((text,) if isinstance(text, str) else text):
                fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    """Strict JSON (a NaN or infinity is a bug upstream, never written)."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, allow_nan=False) + "\n")


def atomic_savefig(fig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
