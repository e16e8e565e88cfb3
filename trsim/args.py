"""Argument types shared by the subcommands: a bad flag value is one line and exit code 2, like bad input."""
from __future__ import annotations

import argparse
import re


def hardware_preset(value: str) -> str:
    from trsim.simulator.presets import HARDWARE_PRESETS
    if value not in HARDWARE_PRESETS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(HARDWARE_PRESETS)}, got {value!r}")
    return value


def device(value: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {value!r}")
    return value


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return n


def whole_number(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return n


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the same one line as any bad input: ``trsim: error: PROG: MESSAGE``."""

    def error(self, message: str):
        import sys
        sys.stderr.write(f"trsim: error: {self.prog}: {' '.join(message.split())}\n")
        raise SystemExit(2)
