"""The `study` command line: its subcommands and their flags (argparse)."""

from __future__ import annotations

import argparse

from study.errors import StudyError
from study.space import overrides

DESCRIPTION = (
    "`study`: run, resume, validate and analyze hyperparameter studies of the report's models; export and use them"
)


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        command = self.prog.removeprefix("study").strip()  # "run" for `study run`; "" for `study`
        raise StudyError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="study", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    run = sub.add_parser("run", help="run one search-space file, or every .yaml in a folder")
    run.add_argument("spaces", nargs="+", metavar="SPACE", help="a search-space .yaml, or a folder of them")
    add_cluster_args(run)
    overrides.add_arguments(run)
    run.add_argument("--name", help="experiment folder name (default NAME-YYYYmmdd-HHMMSS)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest run of this file (or --name) instead of starting anew",
    )
    add_trust_arg(run)
    add_quiet_arg(run)

    resume = sub.add_parser("resume", help="continue an interrupted experiment from its folder")
    resume.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the folder `study run` printed")
    resume.add_argument(
        "--num-samples",
        type=int,
        help="grow an optuna search to N trials in all (more than its num_samples), finished or not",
    )
    add_cluster_args(resume, storage=False)
    add_trust_arg(resume)
    add_quiet_arg(resume)

    validate = sub.add_parser("validate", help="check search-space files without running anything")
    validate.add_argument("spaces", nargs="+", metavar="SPACE", help="a search-space .yaml, or a folder of them")
    overrides.add_arguments(validate)

    analyze = sub.add_parser("analyze", help="tables and learning curves of finished or running experiments")
    analyze.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR", help="local folders or URIs (s3://...)")
    analyze.add_argument(
        "--out", help="where tables and plots go (default EXPERIMENT_DIR/analysis; ./study-analysis for several)"
    )
    analyze.add_argument(
        "--pool",
        action="store_true",
        help="pool runs of the same experiment as more seeds (only if their configs match but for the seed)",
    )

    export = sub.add_parser("export", help="write one trial's trained model to a file (best trial by default)")
    export.add_argument("experiment", metavar="EXPERIMENT_DIR")
    export.add_argument("--trial", metavar="NAME", help="a trial folder name, e.g. cnn64-s1-00005 (default: the best)")
    export.add_argument("--out", required=True, help="the model file to write, e.g. model.pt")
    export.add_argument(
        "--trust",
        action="store_true",
        help="export a checkpoint this user's trials did not sign (someone else's, or changed since): "
        "its weights and the epoch and metrics it claims are then taken as they are",
    )

    predict = sub.add_parser("predict", help="classify image files with an exported model")
    predict.add_argument("model", metavar="MODEL", help="a file written by `study export`")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size; resized to 32x32)")
    predict.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    predict.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="text (default): a line per image; json: a list of {path, top: [{class, probability}]}; "
        "csv: a row per image, class_1, probability_1, ...",
    )

    sub.add_parser("models", help="list the model registry")
    sub.add_parser("datasets", help="list the dataset registry")
    return parser


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="for logs and job schedulers: no status table but one line per trial as it ends; the tables "
        "are written, not printed, and their folder is named",
    )


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust",
        action="store_true",
        help="resume a folder this user's `study run` did not sign (someone else's, a URI), or whose "
        "checkpoints or results its trials did not sign; Ray unpickles its state, which can run code: read it first",
    )


def add_cluster_args(p: argparse.ArgumentParser, storage: bool = True) -> None:
    g = p.add_argument_group("where it runs")
    g.add_argument(
        "--cache-dir",
        help="where this machine keeps decoded copies of datasets, memory-mapped by the trials (default "
        "$STUDY_CACHE_DIR, else $XDG_CACHE_HOME/cifar-study/datasets, i.e. ~/.cache/cifar-study/datasets); "
        "never written into --data-dir",
    )
    g.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: a local Ray)")
    if storage:
        g.add_argument(
            "--storage-path",
            default="results",
            help="folder or URI (s3://...) for results and checkpoints (default ./results)",
        )
    g.add_argument(
        "--autoscale",
        action="store_true",
        help="the cluster adds nodes on demand: skip the check that a node fits one trial",
    )
