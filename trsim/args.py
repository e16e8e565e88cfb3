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


def _int_at_least(lo: int, phrase: str):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or n < lo:
            raise argparse.ArgumentTypeError(f"expected {phrase}, got {value!r}")
        return n
    return parse


positive_int = _int_at_least(1, "a positive whole number")
whole_number = _int_at_least(0, "a whole number >= 0")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the same one line as any bad input: ``trsim: error: PROG: MESSAGE``."""

    def error(self, message: str):
        import sys
        sys.stderr.write(f"trsim: error: {self.prog}: {' '.join(message.split())}\n")
        raise SystemExit(2)
