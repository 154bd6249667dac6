"""``lightopt tensorboard FILE_or_NAME``: TensorBoard on a study's logs, found as ``lightopt sweep show`` finds it."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

__all__ = ["add_parser", "serve"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tensorboard`` subcommand to ``lightopt``'s subparsers."""
    parser = commands.add_parser(
        "tensorboard",
        help="TensorBoard on a study's logs (HParams of every trial)",
        description=(
            "Start TensorBoard on <log_dir>/<study name>/: one run per trial (its training curves and, in the HParams "
            "tab, its parameters, best and final values, epochs and state) and the study run (best so far, trial "
            "counts, Optuna's plots). Prints the URL; Ctrl+C stops it."
        ),
    )
    parser.add_argument("target", metavar="FILE_or_NAME", help="the sweep file, or the study's name")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="where the study is (default: from the file, else <log-dir>/<name>/study.journal)",
    )
    parser.add_argument("--log-dir", default="runs", help="for a NAME: the sweep's log_dir (default: runs)")
    parser.add_argument("--port", type=int, metavar="N", help="the port (default: 6006, or the next free one)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to serve on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    return parser


def serve(args: argparse.Namespace) -> int:
    """Run the command: find the study's log directory, start TensorBoard there, print the URL, serve until Ctrl+C."""
    from tensorboard import program

    from lightopt.runconfig import ConfigError as SweepConfigError
    from lightopt.sweep.readback._find import find_study
    from lightopt.sweep.store import study_dir

    if args.port is not None and not 0 < args.port < 65536:
        raise SweepConfigError(f"`--port` must be in [1, 65535], but got port={args.port}.")
    try:
        socket.getaddrinfo(args.host, None)
    except (socket.gaierror, UnicodeError):
        raise SweepConfigError(
            f"`--host` must be an address or name of this machine, but got host={args.host!r}."
        ) from None
    study, sweep, _ = find_study(args.target, args.storage, args.log_dir)
    log_dir = sweep.study.log_dir if sweep is not None and sweep.study is not None else args.log_dir
    directory = study_dir(log_dir, study.study_name)
    if not Path(directory).is_dir():
        raise SweepConfigError(
            f"study {study.study_name!r} has no logs at {directory}; give --log-dir (the sweep's study.log_dir)."
        )
    argv = [None, "--logdir", str(directory), "--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    board = program.TensorBoard()
    board.configure(argv=argv)
    try:
        url = board.launch()
    except program.TensorBoardServerException as error:
        raise SweepConfigError(f"TensorBoard cannot start: {error.msg}") from None
    print(
        f"TensorBoard on {directory} ({len(study.trials)} trials of study {study.study_name!r}): {url} "
        f"(Ctrl+C to stop)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("TensorBoard stopped", flush=True)
    return 0
