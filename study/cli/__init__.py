"""`study`: run, resume, validate and analyze hyperparameter studies of the report's models; export and use them.

Exit codes: 0 success; 1 the study ran but some trials failed; 2 bad input (one line on stderr);
130, 143 and 129 stopped by SIGINT, SIGTERM and SIGHUP (state saved; `study resume` continues).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence

from study.cli.commands import (
    EXIT_BAD_INPUT,
    cmd_analyze,
    cmd_export,
    cmd_list,
    cmd_predict,
    cmd_resume,
    cmd_run,
    cmd_validate,
)
from study.cli.parser import build_parser
from study.errors import StudyError


def main(argv: Sequence[str] | None = None) -> int:
    command_line = ["study", *(sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser().parse_args(command_line[1:])
        args.command_line = command_line
        if getattr(args, "cache_dir", None):  # read by the data check and, inherited, by the trials
            os.environ["STUDY_CACHE_DIR"] = os.path.abspath(os.path.expanduser(args.cache_dir))
        if args.command == "models":
            from study.models import MODELS

            return cmd_list(MODELS)
        if args.command == "datasets":
            from study.data import DATASETS

            return cmd_list(DATASETS)
        handler = {
            "run": cmd_run,
            "resume": cmd_resume,
            "validate": cmd_validate,
            "analyze": cmd_analyze,
            "export": cmd_export,
            "predict": cmd_predict,
        }
        return handler[args.command](args)
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the trials started
        from study.run.execute import experiments_made as made

        if made:
            print(f"study: interrupted; continue with `study resume {made[-1]}`", file=sys.stderr)
        else:
            print("study: interrupted before any experiment folder was made", file=sys.stderr)
        return 130


def console() -> int:
    """The `study` command: `main()`, then an exit without Python's final collection of every object.

    With torch, Ray, pandas and matplotlib loaded, that collection makes an exit take about a
    second (docs/performance.md). Objects are still freed as Python clears its modules and
    atexit handlers still run; only cyclic garbage left at exit is not collected.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console())
