"""``python -m trsim`` is the ``trsim`` command."""
import sys

from trsim.cli import main

sys.exit(main())
