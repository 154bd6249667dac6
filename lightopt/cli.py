"""The ``lightopt`` command line: ``lightopt fit FILE``, ``lightopt sweep run|show|best|reproduce|plot`` and
``lightopt tensorboard``.

User errors (a bad file, a bad option, a study that is not there) print one line on stderr and
exit with code 2; nothing is written to a study before its file has been checked. A sweep that
stopped early because its trials all failed the same way exits with code 1, and so does a storage
that failed (a full disk, a read-only or deleted journal, a database unreachable for longer than
:data:`lightopt.sweep.storage.OUTAGE_S`): one line naming it, nothing recorded lost. Ctrl-C and
SIGTERM, at any moment, print one line and exit with code 130 (a running trial is recorded first).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import lightopt

__all__ = ["main"]

_EPILOG = "Sweep files: see the README's Sweeps section and the ready files in sweeps/."


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lightopt", description=lightopt.__doc__, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"lightopt {lightopt.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fit = commands.add_parser("fit", help="one training run from a config file", description=(
        "Train once from a LightningCLI-style config (model, data, trainer, optimizer, lr_scheduler, "
        "seed_everything). lightopt's optimizers, schedules and callbacks are available by class path. "
        "A sweep file runs its base config (study and search are ignored)."))
    fit.add_argument("file", metavar="FILE", help="YAML config, e.g. one written by `lightopt sweep best --export`")
    fit.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's; tiny models run "
                     "fastest on 1)")

    sweep = commands.add_parser("sweep", help="Optuna sweeps from a file: run, show, best, reproduce, plot",
                                description="Optuna sweeps from a sweep file.", epilog=_EPILOG)
    sweep_commands = sweep.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", parser_class=_Parser)

    run = sweep_commands.add_parser("run", help="create or resume a study and run its trials", description=(
        "Create the study or resume it, and run trials until it has --n-trials in all (trials from earlier "
        "runs count). One line per trial, then the best trial and where the logs are."))
    run.add_argument("file", metavar="FILE", help="the sweep file")
    run.add_argument("--n-trials", type=int, metavar="N", help="the study's total number of trials (default: study.n_trials)")
    run.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds (default: study.timeout)")
    run.add_argument("--storage", metavar="URL", help="an Optuna database URL or a journal file path (default: "
                     "$LIGHTOPT_STORAGE, else study.storage, else <log_dir>/<name>/study.journal)")
    run.add_argument("--study-name", metavar="NAME", help="the study's name (default: study.name, else the file's stem)")
    run.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes running trials in "
                     "parallel on this machine (default: 1)")
    run.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per trial (default: study.threads, "
                     "else torch's; 1 with --workers > 1)")

    for name, help_text in (("show", "the trial table and the best trial"),
                            ("best", "the best trial's config, runnable with `lightopt fit`")):
        sub = sweep_commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        sub.add_argument("target", metavar="FILE_or_NAME", help="the sweep file, or the study's name")
        sub.add_argument("--storage", metavar="URL", help="where the study is (default: $LIGHTOPT_STORAGE, else from "
                         "the file, else <log-dir>/<name>/study.journal)")
        sub.add_argument("--log-dir", default="runs", help="for a NAME: the sweep's log_dir (default: runs)")
        if name == "show":
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        else:
            sub.add_argument("--export", metavar="PATH", help="write the config here instead of printing it")

    reproduce = sweep_commands.add_parser("reproduce", help="run one trial again and compare its value", description=(
        "Run trial K again as the sweep ran it: the file's config with the trial's params and its recorded seed "
        "(given a NAME: the trial's recorded config), the same metric, the best over the validation rounds. "
        "Prints the recorded value, the new one and their absolute and relative difference. A pruned trial "
        "is run to its full length; a failed one cannot be reproduced. Logs: <log_dir>/<name>/reproduce_KKKK/."))
    reproduce.add_argument("target", metavar="FILE_or_NAME", help="the sweep file, or the study's name")
    reproduce.add_argument("--trial", type=int, required=True, metavar="K", help="the trial's number (see `sweep show`)")
    reproduce.add_argument("--seeds", type=int, default=0, metavar="N", help="also train the same params with N other "
                           "seeds and show the spread: how much of the value came from the seed (default 0)")
    plot = sweep_commands.add_parser("plot", help="Optuna's plots of the study as PNG files", description=(
        "Write Optuna's matplotlib plots as PNG files: optimization history, parameter importances (with 2 "
        "complete trials and 2 params), parallel coordinates, slices and contours (with 2 params). Prints the paths."))
    plot.add_argument("target", metavar="FILE_or_NAME", help="the sweep file, or the study's name")
    plot.add_argument("--out", metavar="DIR", help="where the PNG files go (default: <log_dir>/<name>/plots/)")
    for sub in (reproduce, plot):
        sub.add_argument("--storage", metavar="URL", help="where the study is (default: $LIGHTOPT_STORAGE, else from "
                         "the file, else <log-dir>/<name>/study.journal)")
        sub.add_argument("--log-dir", default="runs", help="for a NAME: the sweep's log_dir (default: runs)")
    reproduce.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: study.threads, else "
                           "torch's); the sweep's count gives the closest match")
    from lightopt._tensorboard_cli import add_parser as add_tensorboard_parser

    add_tensorboard_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for user errors)."""
    from lightopt.sweep.config import SweepConfigError

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # class paths such as examples.digits.DigitsMLP, as with `python -m`
    parser = _parser()
    previous = _terminate_as_interrupt()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "sweep" and args.sweep_command is None:
            parser.parse_args(["sweep", "--help"])
        if args.command == "fit":
            return _fit(args)
        if args.command == "tensorboard":
            from lightopt._tensorboard_cli import serve

            return serve(args)
        if args.storage is None:  # a database URL from the environment keeps its password out of shell history
            from lightopt.sweep.database import STORAGE_ENV

            args.storage = os.environ.get(STORAGE_ENV) or None
        commands = {"run": _sweep_run, "show": _sweep_show, "best": _sweep_best, "reproduce": _sweep_reproduce,
                    "plot": _sweep_plot}
        return commands[args.sweep_command](args)
    except (_UsageError, SweepConfigError, ImportError) as error:
        print(f"error: {error}" if not isinstance(error, _UsageError) else str(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # a sweep records its running trial first and says so
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:  # --help, --version; Lightning's SIGTERMException after a fit stopped on SIGTERM
        if type(exit_).__name__ == "SIGTERMException":
            print("interrupted: terminated (SIGTERM)", file=sys.stderr)
            return 130
        return exit_.code if isinstance(exit_.code, int) else 0
    except Exception as error:
        from lightopt.sweep.storage import StorageError

        if not isinstance(error, StorageError):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt() -> object:
    """SIGTERM raises ``KeyboardInterrupt`` (one line, exit 130) instead of killing the process silently.

    During a Lightning fit, Lightning's own handler runs first and stops the fit at its next step;
    this one then does nothing. Returns the handler it replaced (None off the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        if signal.getsignal(signal.SIGTERM) is handler:  # not inside Lightning's handler (a fit handles it)
            raise KeyboardInterrupt("terminated (SIGTERM)")

    return signal.signal(signal.SIGTERM, handler)


def _fit(args: argparse.Namespace) -> int:
    from lightopt.sweep import config, fit
    from lightopt.sweep.build import torch_threads

    run_file = config.load(args.file)
    try:
        config.check_threads("--threads", args.threads)
    except ValueError as error:
        raise _UsageError(f"lightopt fit: {error}") from None
    with torch_threads(args.threads):
        run = fit(run_file.run)
    log_dir = run.trainer.log_dir  # a collective under DDP: every rank asks
    if not run.trainer.is_global_zero:
        return 0  # a DDP rank that Lightning started (strategy: ddp): rank 0 reports
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items() if v.numel() == 1}
    shown = ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())) or "no metrics logged"
    print(f"fit done: {shown}")
    if log_dir:
        print(f"logs: {log_dir}")
    return 0


def _sweep_run(args: argparse.Namespace) -> int:
    from lightopt.sweep import config, run_sweep
    from lightopt.sweep.pruning import MetricNotLoggedError

    sweep = config.load(args.file)
    if sweep.study is None:
        raise config.SweepConfigError("the file has no `study` block: add one (name, metric, n_trials, ...) to sweep.",
                                      sweep.path)
    if args.study_name is not None and not config._NAME.match(args.study_name):
        raise _UsageError(f"lightopt sweep run: `--study-name` must be letters, digits, '_', '-' or '.', "
                          f"but got {args.study_name!r}")
    try:
        result = run_sweep(sweep, n_trials=args.n_trials, timeout=args.timeout, storage=args.storage,
                           study_name=args.study_name, workers=args.workers, threads=args.threads)
    except MetricNotLoggedError as error:
        raise config.SweepConfigError(str(error), sweep.path) from None
    if result.stopped:  # every trial failed the same way: exit 1, not 2, since trials ran and were recorded
        print(f"error: {result.stopped}", file=sys.stderr)
        return 1
    return 0


def _sweep_show(args: argparse.Namespace) -> int:
    from lightopt.sweep.report import find_study, format_table, study_json

    study, _, described = find_study(args.target, args.storage, args.log_dir)
    print(study_json(study) if args.json else f"study {study.study_name!r} in {described}\n{format_table(study)}")
    return 0


def _sweep_best(args: argparse.Namespace) -> int:
    from lightopt.sweep.report import best_config, dump_config, find_study

    study, sweep, _ = find_study(args.target, args.storage, args.log_dir)
    config, trial = best_config(study, sweep)
    text = dump_config(config, study, trial)
    if args.export is None:
        print(text, end="")
        return 0
    Path(args.export).write_text(text, encoding="utf-8")
    print(f"best trial {trial.number} written to {args.export}; run it with: lightopt fit {args.export}")
    print(f"its value is the best of {len(study.trials)} trials, each with its own seed; to see how much of it was "
          f"the seed: lightopt sweep reproduce {args.target} --trial {trial.number} --seeds 5")
    return 0


def _sweep_reproduce(args: argparse.Namespace) -> int:
    from lightopt.sweep import config
    from lightopt.sweep.report import find_study, reproduce_trial

    try:
        config.check_threads("--threads", args.threads)
    except ValueError as error:
        raise _UsageError(f"lightopt sweep reproduce: {error}") from None
    if args.seeds < 0:
        raise _UsageError(f"lightopt sweep reproduce: `--seeds` must be >= 0, but got seeds={args.seeds}.")
    study, sweep, _ = find_study(args.target, args.storage, args.log_dir)
    result = reproduce_trial(study, args.trial, sweep, log_dir=args.log_dir, threads=args.threads, seeds=args.seeds)
    print(result.summary(study.study_name))
    return 0


def _sweep_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from lightopt.sweep.report import find_study, plot_study
    from lightopt.sweep.runner import study_dir

    study, sweep, _ = find_study(args.target, args.storage, args.log_dir)
    log_dir = sweep.study.log_dir if sweep is not None and sweep.study is not None else args.log_dir
    out = Path(args.out) if args.out is not None else study_dir(log_dir, study.study_name) / "plots"
    written, notes = plot_study(study, out)
    for note in notes:
        print(f"note: {note}")
    for path in written:
        print(path)
    return 0
