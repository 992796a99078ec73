"""`python -m study`: the `study` command."""

import sys

from study.cli import console

sys.exit(console())
