"""``python -m engine``: the lab's command line, the engine's commands and the findings commands.

A package's ``__main__`` is a program, not a module anything imports, so it is where the layers
meet: engine/cli.py never imports the findings package above it, and this entry point runs the
engine's command line with the findings commands added (``findings.cli.main``).
"""

import sys

from findings.cli import main

sys.exit(main())
