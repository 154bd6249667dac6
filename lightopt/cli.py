"""The ``lightopt`` command line: ``lightopt fit FILE``, ``lightopt sweep run|show|best|reproduce|plot``,
``lightopt tune lr FILE`` and ``lightopt tensorboard``.

User errors (a bad file, a bad option, a study that is not there) print one line on stderr and
exit with code 2; nothing is written to a study before its file has been checked. A sweep that
stopped early because its trials all failed the same way exits with code 1, and so does a storage
that failed (a full disk, a read-only or deleted journal, a database unreachable for longer than
:data:`lightopt.sweep.store.OUTAGE_S`): one line naming it, nothing recorded lost. Ctrl-C and
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
from typing import Any

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

    fit = commands.add_parser(
        "fit",
        help="one training run from a config file",
        description=(
            "Train once from a LightningCLI config, read by LightningCLI's own parser: what `python main.py fit "
            "--config FILE` takes (model, data, trainer, optimizer, lr_scheduler, seed_everything, ckpt_path), "
            "including its --print_config output. lightopt's optimizers, schedules and callbacks are available by "
            "class path. A sweep file runs its run config (study and search are ignored). Dotted overrides come "
            "last: --trainer.max_epochs 3."
        ),
    )
    fit.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        help="YAML config, e.g. one written by `lightopt sweep best --export` (optional with --config)",
    )
    _add_run_config_arguments(fit)
    fit.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: a sweep file's study.threads, "
        "else torch's default, one per core). The shipped sweeps set 1: the digits MLP trained 2x faster "
        "on 1 thread than on torch's default (5.6 s vs 11.4 s)",
    )

    sweep = commands.add_parser(
        "sweep",
        help="Optuna sweeps from a file: run, show, best, reproduce, plot",
        description="Optuna sweeps from a sweep file.",
        epilog=_EPILOG,
    )
    sweep_commands = sweep.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", parser_class=_Parser)

    run = sweep_commands.add_parser(
        "run",
        help="create or resume a study and run its trials",
        description=(
            "Create the study or resume it, and run trials until it has --n-trials in all (trials from earlier "
            "runs count). One line per trial, then the best trial and where the logs are."
        ),
    )
    run.add_argument(
        "file",
        metavar="FILE",
        help="the sweep file (study and search; it may hold run-config keys that override the --config files)",
    )
    _add_run_config_arguments(run)
    run.add_argument(
        "--n-trials", type=int, metavar="N", help="the study's total number of trials (default: study.n_trials)"
    )
    run.add_argument(
        "--timeout", type=float, metavar="S", help="stop starting trials after S seconds (default: study.timeout)"
    )
    run.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna database URL or a journal file path (default: "
        "$LIGHTOPT_STORAGE, else study.storage, else <log_dir>/<name>/study.journal)",
    )
    run.add_argument(
        "--study-name", metavar="NAME", help="the study's name (default: study.name, else the file's stem)"
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes running trials in "
        "parallel on this machine (default: 1; with --devices, one per device slot)",
    )
    run.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads per trial (default: study.threads, else torch's; 1 with --workers > 1)",
    )

    run.add_argument(
        "--devices",
        metavar="IDS",
        help="run the trials on these GPUs, e.g. 0,1,2,3, or auto (every "
        "GPU torch sees): each worker gets its ids as CUDA_VISIBLE_DEVICES, so its code sees cuda:0; "
        "a DDP trial (strategy: ddp, devices: N) takes N of them",
    )
    run.add_argument(
        "--trials-per-device",
        type=int,
        metavar="K",
        help="with --devices: K trials at once on each device (default: 1)",
    )

    for name, help_text in (
        ("show", "the trial table and the best trial"),
        ("best", "the best trial's config, runnable with `lightopt fit`"),
    ):
        sub = sweep_commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        sub.add_argument("target", metavar="FILE_or_NAME", help="the sweep file, or the study's name")
        _add_run_config_arguments(sub, overrides=False)
        sub.add_argument(
            "--storage",
            metavar="URL",
            help="where the study is (default: $LIGHTOPT_STORAGE, else from "
            "the file, else <log-dir>/<name>/study.journal)",
        )
        sub.add_argument("--log-dir", default="runs", help="for a NAME: the sweep's log_dir (default: runs)")
        if name == "show":
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        else:
            sub.add_argument("--export", metavar="PATH", help="write the config here instead of printing it")
            _add_seeds_arguments(sub)
            sub.add_argument(
                "--trial",
                type=int,
                metavar="K",
                help="trial K's config instead of the best trial's (required with several objectives: "
                "one of the Pareto front's trials, see `sweep show`)",
            )

    reproduce = sweep_commands.add_parser(
        "reproduce",
        help="run one trial again and compare its value",
        description=(
            "Run trial K again as the sweep ran it: the file's config with the trial's params and its recorded seed "
            "(given a NAME: the trial's recorded config), the same metric, the best over the validation rounds. "
            "Prints the recorded value, the new one and their absolute and relative difference. A pruned trial "
            "is run to its full length; a failed one cannot be reproduced. "
            "Logs: <log_dir>/<name>-reproduce/reproduce_KKKK/, apart from the study's trials."
        ),
    )
    reproduce.add_argument("target", metavar="FILE_or_NAME", help="the sweep file, or the study's name")
    _add_run_config_arguments(reproduce, overrides=False)
    reproduce.add_argument(
        "--trial", type=int, required=True, metavar="K", help="the trial's number (see `sweep show`)"
    )
    reproduce.add_argument(
        "--seeds",
        type=int,
        default=0,
        metavar="N",
        help="also train the same params with N other "
        "seeds and show the spread: how much of the value came from the seed (default 0)",
    )
    plot = sweep_commands.add_parser(
        "plot",
        help="Optuna's plots of the study as PNG files",
        description=(
            "Write Optuna's matplotlib plots as PNG files: optimization history, parameter importances (with 2 "
            "complete trials and 2 params), parallel coordinates, slices and contours (with 2 params). "
            "Prints the paths."
        ),
    )
    plot.add_argument("target", metavar="FILE_or_NAME", help="the sweep file, or the study's name")
    _add_run_config_arguments(plot, overrides=False)
    plot.add_argument("--out", metavar="DIR", help="where the PNG files go (default: <log_dir>/<name>/plots/)")
    for sub in (reproduce, plot):
        sub.add_argument(
            "--storage",
            metavar="URL",
            help="where the study is (default: $LIGHTOPT_STORAGE, else from "
            "the file, else <log-dir>/<name>/study.journal)",
        )
        sub.add_argument("--log-dir", default="runs", help="for a NAME: the sweep's log_dir (default: runs)")
    reproduce.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: study.threads, else torch's); the sweep's count gives the closest match",
    )
    tune = commands.add_parser(
        "tune",
        help="the learning-rate range test (lightopt tune lr FILE)",
        description="Tuning aids run on a config's model, data and optimizer.",
    )
    tune_commands = tune.add_subparsers(dest="tune_command", metavar="SUBCOMMAND", parser_class=_Parser)
    lr = tune_commands.add_parser(
        "lr",
        help="a learning-rate range test: the loss as the lr grows, and a suggested range",
        description=(
            "The learning-rate range test of the book's §8.3.1: train the file's model on its data with its "
            "optimizer for --steps batches while the learning rate grows exponentially from --min-lr to --max-lr "
            "(the config's schedule is set aside), stop once the smoothed loss exceeds 4x its lowest, and print the "
            "curve, a suggested range (upper end: the lr of the lowest smoothed loss after the first 10 steps, the "
            "largest before the loss rises; lower end: two decades below) and write a PNG of it. For a sweep file "
            "the range is the search entry's (a coordinate: effective entry is tested in the effective step "
            "lr/(1-momentum) at the file's momentum; both are shown). The test runs in this process on one device, "
            "with no logger, checkpoint or callback of the config; nothing of the run is kept."
        ),
    )
    lr.add_argument("file", metavar="FILE", nargs="?", help="a run config or a sweep file (optional with --config)")
    _add_run_config_arguments(lr)
    lr.add_argument("--steps", type=int, default=100, metavar="N", help="training batches of the test (default 100)")
    lr.add_argument(
        "--min-lr",
        type=float,
        metavar="LR",
        help="where the test starts (default: the search entry's low, else 1e-6); in the entry's coordinate",
    )
    lr.add_argument(
        "--max-lr",
        type=float,
        metavar="LR",
        help="where it ends (default: the search entry's high, else 10); in the entry's coordinate",
    )
    lr.add_argument("--out", metavar="PNG", help="the plot's path (default: <FILE's stem>-lr-range-test.png)")
    lr.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: study.threads, else torch's)")

    from lightopt.sweep.readback import add_parser as add_tensorboard_parser

    add_tensorboard_parser(commands)
    return parser


def _add_seeds_arguments(best: argparse.ArgumentParser) -> None:
    """``sweep best``'s noise-aware options: --seeds, --top, --json, --threads."""
    best.add_argument(
        "--seeds",
        type=int,
        default=0,
        metavar="N",
        help="train the top K trials with N other seeds each (the seeds of `sweep reproduce --seeds N`) and "
        "recommend the best mean over each trial's N+1 runs; runs recorded in the study by an earlier call are "
        "reused; logs in <log_dir>/<name>-seeds/ (default 0: the best trial by value, as recorded)",
    )
    best.add_argument(
        "--top", type=int, metavar="K", help="with --seeds: how many of the best trials to train again (default 3)"
    )
    best.add_argument("--json", action="store_true", help="with --seeds: print the candidates' table as JSON")
    best.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="with --seeds: torch CPU threads per run (default: study.threads, else torch's)",
    )


def _add_run_config_arguments(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="BASE.yaml",
        help="a run config (model, "
        "data, trainer, ...), e.g. the project's own; repeat it: later files override earlier ones "
        "key by key, as in LightningCLI"
        + ("; the FILE's keys and dotted overrides come last" if overrides else " (give those the sweep ran with)"),
    )
    parser.add_argument(
        "--model-class",
        metavar="CLASS",
        help="for a LightningCLI(Model, ...) project: the module's "
        "class; `model:` then holds its init args (also `lightning_cli: {model_class: ...}`)",
    )
    parser.add_argument(
        "--datamodule-class",
        metavar="CLASS",
        help="for a LightningCLI(Model, DataModule) project: the datamodule's class; `data:` then holds its init args",
    )
    parser.add_argument(
        "--cli-class",
        metavar="CLASS",
        help="the project's own LightningCLI subclass (linked or added "
        "arguments), e.g. myproject.cli.MyCLI (default: Lightning's LightningCLI)",
    )


def _load(args: argparse.Namespace, file: str | None, overrides: Sequence[str] = ()) -> Any:
    """The checked sweep or run file of a command's FILE, --config files, class flags and dotted overrides."""
    from lightopt.runconfig import parse_overrides
    from lightopt.sweep import load

    if file is None and not args.config:
        raise _UsageError(f"lightopt {args.command}: give a config FILE or --config BASE.yaml")
    return load(file, args.config, parse_overrides(overrides), _cli_classes(args))


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(lightopt's own arguments, dotted overrides)``: ``--trainer.max_epochs 3`` and ``--a.b=3`` go to the second."""
    regular: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        argument = argv[i]
        if argument == "--":
            regular += argv[i:]
            break
        if argument.startswith("--") and "." in argument[2:].partition("=")[0]:
            takes_next = "=" not in argument and i + 1 < len(argv)
            overrides += argv[i : i + 2] if takes_next else [argument]
            i += 2 if takes_next else 1
            continue
        regular.append(argument)
        i += 1
    return regular, overrides


def _cli_classes(args: argparse.Namespace) -> dict[str, str]:
    """The ``lightning_cli`` block the class flags give."""
    flags = (
        ("model_class", args.model_class),
        ("datamodule_class", args.datamodule_class),
        ("class_path", args.cli_class),
    )
    return {key: value for key, value in flags if value is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for user errors)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # class paths such as examples.digits.DigitsMLP, as with `python -m`
    parser = _parser()
    previous = _terminate_as_interrupt()
    prestarted = None
    try:
        regular, overrides = _split_overrides(list(sys.argv[1:] if argv is None else argv))
        args = parser.parse_args(regular)
        args.overrides = overrides
        if overrides and not (
            args.command == "fit"
            or getattr(args, "sweep_command", None) == "run"
            or getattr(args, "tune_command", None) == "lr"
        ):
            parser.error(f"unrecognized arguments: {' '.join(overrides)}")
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "sweep" and args.sweep_command is None:
            parser.parse_args(["sweep", "--help"])
        if args.command == "fit":
            return _fit(args)
        if args.command == "tune":
            if args.tune_command is None:
                parser.parse_args(["tune", "--help"])
            return _tune_lr(args)
        if args.command == "tensorboard":
            from lightopt.sweep.readback import serve

            return serve(args)
        if args.storage is None:  # a database URL from the environment keeps its password out of shell history
            from lightopt.sweep.store import STORAGE_ENV

            args.storage = os.environ.get(STORAGE_ENV) or None
        if args.sweep_command == "run" and args.devices is None:  # children import while this process does
            from lightopt.sweep.study import prestart_workers

            prestarted = prestart_workers(args.workers, [args.file, *args.config])
        commands = {
            "run": _sweep_run,
            "show": _sweep_show,
            "best": _sweep_best,
            "reproduce": _sweep_reproduce,
            "plot": _sweep_plot,
        }
        return commands[args.sweep_command](args)
    except (_UsageError, ImportError) as error:
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
    except OSError as error:  # a path the command cannot use: a file where a folder goes, a read-only folder, ...
        if error.filename is None:
            raise
        print(f"error: {_path_error(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # imported here, not above: `lightopt --help` imports no torch (see _user_error)
        code = _user_error(error)
        if code is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return code
    finally:
        if prestarted is not None:  # children no sweep took: killed, reaped
            prestarted.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _path_error(error: OSError) -> str:
    """One line for a path that cannot be used, with the fix for the common causes."""
    import errno

    fixes = {
        errno.EEXIST: "a file is in the way of a folder: remove it or choose another path",
        errno.ENOTDIR: "a file is in the way of a folder: remove it or choose another path",
        errno.EACCES: "no permission: choose a folder you can write to",
        errno.EROFS: "a read-only file system: choose a folder you can write to",
        errno.ENOSPC: "the disk is full: free space or choose another folder",
    }
    fix = fixes.get(error.errno)
    return f"{error.filename}: {error.strerror or error}" + (f" ({fix})" if fix else "")


def _user_error(error: Exception) -> int | None:
    """The exit code of an error the user can fix: 2 for a bad file or option, 1 for a storage that failed.

    The classes are imported only here: an error of theirs means their modules are loaded already.
    """
    from lightopt.runconfig import ConfigError

    if isinstance(error, ConfigError):
        return 2
    from lightopt.sweep.store import StorageError

    return 1 if isinstance(error, StorageError) else None


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
    from lightopt.sweep import fit
    from lightopt.sweep.spec import check_threads
    from lightopt.sweep.trial import torch_threads

    run_file = _load(args, args.file, args.overrides)
    try:
        check_threads("--threads", args.threads)
    except ValueError as error:
        raise _UsageError(f"lightopt fit: {error}") from None
    threads = args.threads if args.threads is not None else getattr(run_file.study, "threads", None)
    with torch_threads(threads):
        run = fit(run_file.run, spec=run_file.cli)
    log_dir = run.trainer.log_dir  # a collective under DDP: every rank asks
    _close_process_group()
    if not run.trainer.is_global_zero:
        return 0  # a DDP rank that Lightning started (strategy: ddp): rank 0 reports
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items() if v.numel() == 1}
    shown = ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())) or "no metrics logged"
    print(f"fit done: {shown}")
    if log_dir:
        print(f"logs: {log_dir}")
    return 0


def _tune_lr(args: argparse.Namespace) -> int:
    import math

    from lightopt.sweep.spec import check_threads, lr_entry
    from lightopt.sweep.trial import range_test, torch_threads

    run_file = _load(args, args.file, args.overrides)
    entry = lr_entry(run_file)
    low = args.min_lr if args.min_lr is not None else entry.low if entry.low is not None else 1e-6
    high = args.max_lr if args.max_lr is not None else entry.high if entry.high is not None else 10.0
    try:
        check_threads("--threads", args.threads)
    except ValueError as error:
        raise _UsageError(f"lightopt tune lr: {error}") from None
    if args.steps < 2:
        raise _UsageError(f"lightopt tune lr: `--steps` must be an integer >= 2, but got steps={args.steps}.")
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise _UsageError(
            "lightopt tune lr: the range must satisfy 0 < --min-lr < --max-lr, "
            f"but got min-lr={low:g}, max-lr={high:g}."
        )
    out = (
        Path(args.out) if args.out is not None else Path(f"{Path(args.file or args.config[-1]).stem}-lr-range-test.png")
    )
    if out.suffix.lower() != ".png":
        raise _UsageError(f"lightopt tune lr: `--out` must be a .png file, but got {str(out)!r}.")
    study = run_file.study
    threads = args.threads if args.threads is not None else getattr(study, "threads", None)
    print(
        f"lr range test of {entry.name or entry.key or 'the optimizer'}: {args.steps} batches, {entry.coordinate} "
        f"from {low:g} to {high:g}",
        flush=True,
    )
    with torch_threads(threads):
        result = range_test(
            run_file.run,
            entry,
            cli=run_file.cli,
            min_lr=low,
            max_lr=high,
            steps=args.steps,
            seed=getattr(study, "seed", None),
        )
    print(result.table())
    print(result.describe())
    print(f"plot: {result.plot(out)}")
    return 0


def _close_process_group() -> None:
    """End a DDP fit's process group on every rank before the interpreter exits.

    Lightning leaves it open after ``fit``; torch's gloo threads then met the interpreter's teardown
    and aborted rank 0 now and then ("terminate called without an active exception", exit -6).
    """
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank tears down while another still talks to it
        torch.distributed.destroy_process_group()


def _sweep_run(args: argparse.Namespace) -> int:
    from lightopt.sweep import MetricNotLoggedError, SweepConfigError, run_sweep
    from lightopt.sweep.spec import STUDY_NAME

    sweep = _load(args, args.file, args.overrides)
    if sweep.study is None:
        raise SweepConfigError(
            "the file has no `study` block: add one (name, metric, n_trials, ...) to sweep.", sweep.path
        )
    if args.study_name is not None and not STUDY_NAME.match(args.study_name):
        raise _UsageError(
            f"lightopt sweep run: `--study-name` must be letters, digits, '_', '-' or '.', but got {args.study_name!r}"
        )
    existed = _stored_study(sweep, args, delete=False)
    try:
        result = run_sweep(
            sweep,
            n_trials=args.n_trials,
            timeout=args.timeout,
            storage=args.storage,
            study_name=args.study_name,
            workers=args.workers,
            threads=args.threads,
            devices=args.devices,
            trials_per_device=args.trials_per_device,
        )
    except MetricNotLoggedError as error:
        if not existed:  # the study this run created holds only the trial that found the mistake: nothing is kept
            _stored_study(sweep, args, delete=True)
        raise SweepConfigError(str(error), sweep.path, "study.metric") from None
    if result.stopped:  # every trial failed the same way: exit 1, not 2, since trials ran and were recorded
        print(f"error: {result.stopped}", file=sys.stderr)
        return 1
    return 0


def _stored_study(sweep: Any, args: argparse.Namespace, delete: bool) -> bool:
    """Whether the sweep's study is stored already; with ``delete``, delete it."""
    import optuna

    from lightopt.runconfig import ConfigError
    from lightopt.sweep.store import open_storage, study_dir

    name = args.study_name or sweep.study.name
    url = args.storage if args.storage is not None else sweep.study.storage
    try:
        storage, _ = open_storage(
            url, study_dir(sweep.study.log_dir, name), create=False, where="--storage", file=sweep.path
        )
        if delete:
            optuna.delete_study(study_name=name, storage=storage)
        return name in optuna.get_all_study_names(storage)
    except (ConfigError, KeyError):
        return False


def _sweep_show(args: argparse.Namespace) -> int:
    from lightopt.sweep.readback import find_study, format_table, study_json

    study, _, described = find_study(args.target, args.storage, args.log_dir, args.config, _cli_classes(args))
    print(study_json(study) if args.json else f"study {study.study_name!r} in {described}\n{format_table(study)}")
    return 0


def _sweep_best(args: argparse.Namespace) -> int:
    from lightopt.sweep.readback import best_config, dump_config, find_study, seed_runs_note

    if args.seeds != 0 or args.top is not None or args.json or args.threads is not None:
        return _sweep_best_by_seeds(args)
    study, sweep, _ = find_study(args.target, args.storage, args.log_dir, args.config, _cli_classes(args))
    several = len(study.directions) > 1
    config, trial = best_config(study, sweep, args.trial)
    note = None if several else seed_runs_note(study, f"lightopt sweep best {args.target}")
    if args.trial is not None:
        note = None
    text = dump_config(config, study, trial, chosen=args.trial is not None, comments=[f"note: {note}"] if note else [])
    if args.export is None:
        print(text, end="")
        return 0
    _write_export(args.export, text)
    which = "trial" if args.trial is not None else "best trial"
    print(f"{which} {trial.number} written to {args.export}; run it with: lightopt fit {args.export}")
    if note is not None:
        print(f"note: {note}")
    if args.trial is not None:
        return 0
    print(
        f"its value is the best of {len(study.trials)} trials, each with its own seed; to see how much of it was "
        f"the seed: lightopt sweep reproduce {args.target} --trial {trial.number} --seeds 5"
    )
    return 0


def _sweep_best_by_seeds(args: argparse.Namespace) -> int:
    """``sweep best --seeds N``: the top K trials trained with N other seeds, the best mean recommended."""
    import json

    from lightopt.sweep.readback import dump_config, find_study, recommend_by_seeds, trial_run_config
    from lightopt.sweep.spec import check_threads

    if args.seeds < 0:
        raise _UsageError(f"lightopt sweep best: `--seeds` must be >= 0, but got seeds={args.seeds}.")
    if args.seeds == 0:
        flag = "--top" if args.top is not None else "--json" if args.json else "--threads"
        raise _UsageError(
            f"lightopt sweep best: `{flag}` goes with --seeds N (N >= 1, the other seeds each top trial is "
            f"trained with); without --seeds, sweep best exports the best trial as recorded."
        )
    if args.top is not None and args.top < 1:
        raise _UsageError(f"lightopt sweep best: `--top` must be >= 1, but got top={args.top}.")
    if args.trial is not None:
        raise _UsageError(
            "lightopt sweep best: `--trial` and `--seeds` do not go together: --seeds recommends among the top "
            "trials by their mean over other seeds; --trial K exports trial K as recorded."
        )
    try:
        check_threads("--threads", args.threads)
    except ValueError as error:
        raise _UsageError(f"lightopt sweep best: {error}") from None
    study, sweep, _ = find_study(args.target, args.storage, args.log_dir, args.config, _cli_classes(args))
    if len(study.directions) > 1:
        raise _UsageError(
            f"lightopt sweep best: `--seeds` ranks trials by one value, but study {study.study_name!r} has "
            f"{len(study.directions)} objectives: choose a trial of its Pareto front with --trial K (see sweep show)."
        )
    if args.export is not None:  # a path that cannot be written fails now, not after the training
        _write_export(args.export, None)
    result = recommend_by_seeds(
        study,
        args.seeds,
        3 if args.top is None else args.top,
        sweep,
        log_dir=args.log_dir,
        threads=args.threads,
        report=lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True),
    )
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    if args.export is None:
        if not args.json:
            print(f"its config: lightopt sweep best {args.target} --seeds {args.seeds} --export PATH")
        return 0
    chosen = result.recommended
    title = (
        f"Trial {chosen.trial.number} of study {study.study_name!r}, chosen by the mean {result.metric} over "
        f"{chosen.n} runs (its own seed and {args.seeds} others: sweep best --seeds {args.seeds}); its own run"
    )
    comments = [f"mean {chosen.mean:.6g} ± {chosen.std:.4g} over the {chosen.n} runs", result.verdict()]
    _write_export(args.export, dump_config(trial_run_config(chosen.trial, sweep), study, chosen.trial, title, comments))
    print(
        f"trial {chosen.trial.number} written to {args.export}; run it with: lightopt fit {args.export}",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0


def _write_export(path: str, text: str | None) -> None:
    """Write ``text`` to ``path``, its folder made first; None: only make the folder (and check the path)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            if Path(path).is_dir():
                raise IsADirectoryError(21, "Is a directory")
            return
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise _UsageError(
            f"lightopt sweep best: `--export` {path!r} cannot be written: {error.strerror or error}"
        ) from None


def _sweep_reproduce(args: argparse.Namespace) -> int:
    from lightopt.sweep.readback import find_study, reproduce_trial
    from lightopt.sweep.spec import check_threads

    try:
        check_threads("--threads", args.threads)
    except ValueError as error:
        raise _UsageError(f"lightopt sweep reproduce: {error}") from None
    if args.seeds < 0:
        raise _UsageError(f"lightopt sweep reproduce: `--seeds` must be >= 0, but got seeds={args.seeds}.")
    study, sweep, _ = find_study(args.target, args.storage, args.log_dir, args.config, _cli_classes(args))
    result = reproduce_trial(study, args.trial, sweep, log_dir=args.log_dir, threads=args.threads, seeds=args.seeds)
    print(result.summary(study.study_name))
    return 0


def _sweep_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from lightopt.sweep.readback import find_study
    from lightopt.sweep.store import study_dir
    from lightopt.sweep.study import plot_study

    study, sweep, _ = find_study(args.target, args.storage, args.log_dir, args.config, _cli_classes(args))
    log_dir = sweep.study.log_dir if sweep is not None and sweep.study is not None else args.log_dir
    out = Path(args.out) if args.out is not None else study_dir(log_dir, study.study_name) / "plots"
    written, notes = plot_study(study, out)
    for note in notes:
        print(f"note: {note}")
    for path in written:
        print(path)
    return 0
