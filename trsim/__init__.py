"""trsim: cost model and on-GPU validation of token-reduction schedules for unified VLM training.

The repository's top-level folders are installed as one namespace (see pyproject.toml):
``trsim.simulator`` (no torch), ``trsim.profiler`` (torch) and ``trsim.validate``; the command line is
``trsim.cli``. The simulator's API is re-exported here:

    from trsim import load_scenario, simulate
    result = simulate(load_scenario("scenarios/paper_vila_u_3b.yaml"))
"""
from importlib.metadata import PackageNotFoundError, version as _version

from trsim.simulator import *  # noqa: F401,F403
from trsim.simulator import __all__ as _simulator_all

try:
    __version__ = _version("trsim")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__", *_simulator_all]
