"""Lightning DDP inside a sweep trial: lightopt starts the other ranks itself, one process group per trial.

A trial whose config says ``trainer: {strategy: ddp, devices: N}`` runs as N processes. Rank 0
is the sweep's own process: it builds the Trainer, reports to the study and writes the trial's
TensorBoard logs, exactly as a one-process trial does. Ranks 1..N-1 are fresh Python processes
(``python -m lightopt.sweep.trial._rank``) that receive the trial's config and seed on stdin, fit the same
config with a :class:`~lightopt.sweep.trial.PruningCallback` that has no trial (it only follows
rank 0's broadcast decisions), write nothing to the study, and exit when the fit ends.

Why not Lightning's own ``ddp`` launcher: it re-executes ``sys.argv`` in the children (so each
child would run the whole sweep, or pytest), leaves ``LOCAL_RANK``/``MASTER_PORT``/``WORLD_SIZE``
in the parent's environment (so the next trial's Trainer believes its processes were started
externally and never starts them) and never destroys the process group (so the next trial would
reuse the dead one). Here the environment Lightning reads (``LOCAL_RANK=0``, ``WORLD_SIZE``,
``MASTER_ADDR``, a fresh ``MASTER_PORT``) is set for the trial only, Lightning joins the processes
lightopt started as it joins those of ``torchrun``, and afterwards the process group is destroyed,
every child is waited for (killed if it outlives the fit by :data:`EXIT_GRACE` seconds) and the
environment restored. A rank that exits with an error fails the trial, not the sweep.

``ddp_spawn``/``ddp_fork``/``ddp_notebook`` are refused in sweep trials: their rank 0 runs in a child
process whose callback state never returns to the sweep; ``ddp`` trains the same way.

Devices: under ``--devices`` (:mod:`lightopt.sweep.study`'s devices) a DDP trial's worker sees exactly the
trial's N ids (``CUDA_VISIBLE_DEVICES=2,3``) and every rank inherits them, so rank r trains on
``cuda:r``, Lightning's own placement: all ranks see all N devices, as NCCL's peer-to-peer paths
want. :func:`trial_devices` says how many ids a trial takes; a trial that asks for more than its
worker holds (a search over ``trainer.devices``) fails with that reason before any rank starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from lightopt import _validation
from lightopt.sweep.trial._devices import assigned_devices
from lightopt.sweep.trial._pruning import MetricNotLoggedError
from lightopt.sweep.trial._rank_error import ERROR_MARK, RANK_MODULE

__all__ = ["RankFailed", "ddp_processes", "trial_devices", "trial_processes", "EXIT_GRACE"]

#: Seconds the other ranks get to exit after rank 0's fit has returned, before they are killed.
EXIT_GRACE = 60.0

_SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")
_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")


class RankFailed(RuntimeError):
    """A rank other than 0 of a DDP trial exited with an error (the trial fails, the sweep goes on)."""


def ddp_processes(trainer: Mapping[str, Any] | None) -> int:
    """How many processes lightopt starts for a trial with these Trainer arguments: 0 unless DDP.

    ``strategy`` must be a ``ddp`` string (``"ddp"``, ``"ddp_find_unused_parameters_true"``, ...) for
    anything but 0; ``devices`` gives the count (an int, a numeric string or a list of device indices;
    ``"auto"``/``-1`` means every visible GPU, or 1 process on the CPU). One machine only.

    Example:
        >>> ddp_processes({"strategy": "ddp", "devices": 2, "accelerator": "cpu"})
        2
        >>> ddp_processes({"max_epochs": 3})
        0
    """
    trainer = trainer or {}
    strategy = trainer.get("strategy")
    if not isinstance(strategy, str) or not strategy.startswith("ddp"):
        return 0
    if strategy.startswith(_SPAWNING):
        raise ValueError(
            f"`trainer.strategy` must be 'ddp' in a sweep trial (lightopt starts the other ranks itself and rank 0 "
            f"reports to the study), but got strategy={strategy!r}."
        )
    if trainer.get("num_nodes", 1) != 1:
        raise ValueError(
            f"`trainer.num_nodes` must be 1 for a DDP sweep trial, but got num_nodes={trainer['num_nodes']!r}."
        )
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    elif isinstance(devices, str) and "," in devices:  # "0,1": device indices, as Lightning reads them
        devices = [part for part in devices.split(",") if part.strip()]
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if devices in ("auto", -1):
        gpu = trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return torch.cuda.device_count() if gpu else 1
    if not _validation.is_integer(devices, low=1):
        raise ValueError(
            f"`trainer.devices` must be an int >= 1, a list of devices or 'auto', but got devices={devices!r}."
        )
    return devices


def trial_devices(trainer: Mapping[str, Any] | None) -> int:
    """How many ``--devices`` ids a trial with these Trainer arguments takes: its DDP processes, else 1.

    A DDP trial must give ``devices`` as a count or a list (``"auto"`` would depend on the machine
    that reads it); any other strategy trains on one device.

    Example:
        >>> trial_devices({"strategy": "ddp", "devices": 2}), trial_devices({"accelerator": "gpu"})
        (2, 1)
    """
    trainer = trainer or {}
    devices = trainer.get("devices", "auto")
    machine_dependent = devices in ("auto", -1, "-1")
    if machine_dependent and ddp_processes({**trainer, "devices": 1}):  # the strategy alone says DDP
        raise ValueError(
            f"`trainer.devices` must be a number of devices for a DDP trial run with --devices (each "
            f"trial takes that many of the listed ids), but got devices={devices!r}."
        )
    processes = ddp_processes(trainer)
    if processes:
        return processes
    single = devices in ("auto", -1, "-1", 1, "1", None) or (isinstance(devices, (list, tuple)) and len(devices) == 1)
    if not single:
        raise ValueError(
            f"`trainer.devices` must be 1 (or 'auto') unless `trainer.strategy` is 'ddp' with --devices "
            f"(lightopt spreads the ranks of DDP trials only), but got devices={devices!r}: set "
            f"`strategy: ddp`, or `devices: 1` to run one device per trial."
        )
    return 1


@contextlib.contextmanager
def trial_processes(job: Mapping[str, Any]) -> Iterator[None]:
    """Run the block as rank 0 of the trial ``job`` describes, with its other ranks started for it.

    ``job`` holds ``config``, ``seed``, ``directory``, ``name`` and the pruning callback's ``monitor``,
    ``report_at`` and ``mode``: what :func:`~lightopt.sweep.trial.fit_trial` needs on every rank.
    Nothing happens unless the config asks for DDP, or when ``LOCAL_RANK`` is already set (this
    process is itself a rank, or its ranks were started by someone else, e.g. ``torchrun``).

    Raises:
        RankFailed: another rank exited with an error (chained to rank 0's error, if it had one).
    """
    processes = ddp_processes(job["config"].get("trainer"))
    if processes == 0 or "LOCAL_RANK" in os.environ:
        yield
        return
    _check_assigned(processes)
    saved = {key: os.environ.get(key) for key in _ENV}
    threads = torch.get_num_threads()
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(processes),
        "NODE_RANK": "0",
        "OMP_NUM_THREADS": saved["OMP_NUM_THREADS"] or str(threads),
    }
    children: list[tuple[int, subprocess.Popen, Any]] = []
    interrupt_handler = signal.getsignal(signal.SIGINT)  # Lightning ignores Ctrl-C from its first one on
    try:
        os.environ.update(env, LOCAL_RANK="0")
        payload = json.dumps({**job, "directory": str(job["directory"]), "threads": threads, "sys_path": sys.path})
        for rank in range(1, processes):
            children.append((rank, *_start(rank, env, payload)))
        try:
            yield
        except BaseException as error:
            # A rank that exited by itself within a second is the cause (its crash broke rank 0's
            # collectives), unless it failed with rank 0's own error; ranks still waiting are not.
            exited = _wait(children, grace=1.0)
            failed = _failures([child for child in children if child[0] in exited], same_as=_summary(error))
            _stop(children, grace=2.0)
            if isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt):
                # Lightning turns Ctrl-C in a DDP fit into sys.exit(1), as if it owned the process: undo that.
                raise KeyboardInterrupt from error
            if failed and not isinstance(error, (MetricNotLoggedError, KeyboardInterrupt, SystemExit)):
                raise RankFailed(failed) from error
            raise
        exited = _wait(children, grace=EXIT_GRACE)
        failed = _failures([child for child in children if child[0] in exited])
        if not failed and len(exited) < len(children):
            failed = f"rank(s) still running {EXIT_GRACE:g} s after rank 0's fit ended were killed"
        if failed:
            raise RankFailed(failed)
    finally:
        _stop(children, grace=0.0)
        for _, process, log in children:
            with contextlib.suppress(OSError):
                process.stdin.close()  # type: ignore[union-attr]
            log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
        if threading.current_thread() is threading.main_thread() and interrupt_handler is not None:
            signal.signal(signal.SIGINT, interrupt_handler)


def _check_assigned(processes: int) -> None:
    """Under ``--devices``, refuse a trial that needs more devices than its worker was given."""
    ids = assigned_devices()
    if ids is not None and processes > len(ids):
        raise ValueError(
            f"`trainer.devices` must be at most {len(ids)} in this trial, but got {processes}: its worker "
            f"holds devices {','.join(ids)} (--devices, sized by the file's `trainer.devices`), so a "
            f"search over `trainer.devices` must stay within the file's value."
        )


def _start(rank: int, env: Mapping[str, str], payload: str) -> tuple[subprocess.Popen, Any]:
    """Start rank ``rank`` (``python -m lightopt.sweep.trial._rank``), the job on its stdin, its output to a temp file.

    stdin stays open until the trial ends: the rank exits as soon as it sees end-of-file, so it cannot
    outlive a sweep process that was killed. Its own session keeps Ctrl-C for the sweep, which stops it.
    """
    # Returned open: the caller reads the rank's output after it exits, then closes it.
    log = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", RANK_MODULE],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env, "LOCAL_RANK": str(rank)},
        start_new_session=True,
    )
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(payload.encode() + b"\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
    return process, log


def _wait(children: list[tuple[int, subprocess.Popen, Any]], grace: float) -> set[int]:
    """Wait up to ``grace`` seconds in all for the children to exit; the ranks that did."""
    deadline = time.monotonic() + grace
    for _, process, _ in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
    return {rank for rank, process, _ in children if process.returncode is not None}


def _stop(children: list[tuple[int, subprocess.Popen, Any]], grace: float) -> None:
    """Close rank 0's process group (ending the others' waits on it), wait up to ``grace`` s, kill the rest."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _wait(children, grace)
    for _, process, _ in children:
        if process.returncode is None:
            process.kill()
            process.wait()


def _summary(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _failures(children: list[tuple[int, subprocess.Popen, Any]], same_as: str | None = None) -> str:
    """``"rank R exited with code C: <its error>"`` for each failed child, joined by ``"; "``.

    Empty when every child failed with the error ``same_as`` (rank 0's own, raised on every rank).
    """
    failed, errors = [], []
    for rank, process, log in children:
        if process.returncode:
            log.seek(0)
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
            marked = [json.loads(line[len(ERROR_MARK) :]) for line in lines if line.startswith(ERROR_MARK)]
            error = marked[-1] if marked else (lines[-1] if lines else "")
            errors.append(error)
            failed.append(f"rank {rank} exited with code {process.returncode}" + (f": {error}" if error else ""))
    if same_as is not None and errors and all(error == same_as for error in errors):
        return ""
    return "; ".join(failed)


def _free_port() -> int:
    """A TCP port on the loopback interface that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
