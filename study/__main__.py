import sys

from study.cli import console

sys.exit(console())
