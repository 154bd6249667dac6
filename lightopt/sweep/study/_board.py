"""TensorBoard for the study: the study-level run, appended after each trial, and Optuna's plots as images.

:class:`StudyRun`, an Optuna callback, appends to ``<log_dir>/<study>/study/`` after each trial the
trials that finished since (every worker's): best value so far against trial number and against
wall time, trial counts per state; and Optuna's plots as images (in ``study/plots/``), redrawn on
a schedule. One process per log directory writes the run, into an event file of its own that
starts with the whole history and a restart marker, so TensorBoard drops the files before it; the
other processes of a study leave the run to it. Each trial's own HParams session is the trial's
(:mod:`lightopt.sweep.trial`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import struct
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from lightopt import _validation
from lightopt.runconfig import ConfigError
from lightopt.sweep.store import minimizes, objective_names, stderr_line
from lightopt.sweep.study._drawing import Drawing, DrawingResult
from lightopt.sweep.study._history import StudyHistory, restart_event
from lightopt.sweep.study._plots import plot_study
from lightopt.sweep.trial import is_global_zero, write_events

__all__ = ["DRAW_SHARE", "StudyRun", "draw_plots", "sweeping"]

_PLOT_DIR = "plots"
_KEEP_S = 600.0  # seconds a replaced event file of the study run stays
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
_NO_LOCK = object()  # held where there is no flock
# Plots are redrawn during a sweep no sooner than DRAW_SHARE times their last drawing time.
DRAW_SHARE = 20


class StudyRun:
    """Optuna callback that appends each finished trial to the study-level run ``<study_dir>/study/``.

    Scalars: ``study/best_value`` (best so far, step = trial number), ``study/best_value_by_time``
    (best so far in the order trials finished; its wall times are the trials' ends: use the
    Relative or Wall axis), ``study/trial_value`` (each complete trial's value) and
    ``study/trials_complete|pruned|failed`` (counts as trials finish). With several objectives:
    ``study/trial_value/<metric>`` per objective and the Pareto front's size
    (``study/pareto_front_size``, ``study/pareto_front_size_by_time``) instead of the best value,
    and Optuna's Pareto-front plot among the images. Every worker's trials are
    there: each write reads the study's trials from the first one not yet finished on, and
    appends the trials that finished since, whoever ran them (:class:`~lightopt.sweep.study.StudyHistory`), so a write
    costs the same in a study of ten trials and of ten thousand. A step by trial number appears
    once every trial below it has finished.

    One process per log directory writes the run: it holds ``study/.writer.lock`` and appends to
    an event file of its own, which it starts with the whole history read from the storage (once
    per process, not per trial). The other processes of the study skip it (their trials reach the
    run through the writer's next write) and take over when the writer ends.

    Images, in the run ``study/plots``: Optuna's plots (``plots/<name>``, from
    :func:`~lightopt.sweep.study.plot_study`, kept as PNG files in ``<study_dir>/plots/``), drawn
    when :meth:`write` is called with ``plots=True``, as ``run_sweep`` does at the end (the last
    ``sweep run`` of the study on a machine, :func:`sweeping`), and during the sweep when the
    newest is older than ``plot_every`` seconds (across all processes of the study; the first
    time, ``plot_every`` after this callback was made) and than :data:`DRAW_SHARE` times the last
    drawing took: drawing takes seconds and grows with the study, so it never takes more than
    about 1/DRAW_SHARE of the sweep's time. Given the study's ``storage`` (its URL or journal
    path), each drawing runs in a process of its own (:class:`~lightopt.sweep.study.Drawing`),
    which keeps matplotlib and the drawing's memory out of this one; the sweep goes on meanwhile
    and the images are written at the next trial's end (a final drawing is waited for). Without
    it (an in-memory study) the drawing runs here. ``drawings`` records each drawing's trials,
    seconds and CPU.
    """

    def __init__(self, study_dir: str | Path, plot_every: float = 60.0, storage: str | None = None) -> None:
        if not _validation.is_real(plot_every) or not plot_every >= 0:
            raise ValueError(f"`plot_every` must be a number of seconds >= 0, but got plot_every={plot_every!r}.")
        self.study_dir = Path(study_dir)
        self.plot_every = float(plot_every)
        self.storage = storage
        self.created = time.time()
        self.drawing_s = 0.0  # how long the last drawing took
        self.drawings: list[DrawingResult] = []  # every drawing made, in this process or its own
        self._drawing: Drawing | None = None  # a drawing process not collected yet
        self._told = False  # a failed drawing was said once
        self._history: StudyHistory | None = None
        self._study: tuple[int, str] | None = None  # the study the history follows
        self._file: Any = None  # our event file, open for appending
        self._path: Path | None = None
        self._lock: Any = None  # the open writer lock, once held

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.write(study)

    def write(self, study: optuna.Study, plots: bool | None = None) -> Path | None:
        """Append ``study``'s newly finished trials; ``plots`` True/False forces/skips drawing (None: by age).

        Returns the scalars' event file (None on ranks other than 0, and where another process
        writes the run). A study other than the one written so far starts a new file.
        """
        if not is_global_zero():
            return None
        self._collect(wait=bool(plots))  # a drawing process that has ended: its images go into the run
        if plots or (plots is None and self._drawing is None and self._plots_stale()):
            self._write_plots(study, wait=bool(plots))
        if not self._hold():
            return None
        events = None
        if self._history is not None and self._study == (id(study), study.study_name):
            with contextlib.suppress(ValueError):  # trials that do not extend the ones written: start again
                events = self._history.read(study)
        if events is None:
            self._start(study, study.get_trials(deepcopy=False))
        elif events:
            writer = RecordWriter(self._file)
            for event in events:
                writer.write(event.SerializeToString())
            writer.flush()
        return self._path

    def behind(self, study: optuna.Study) -> bool:
        """Whether a trial of ``study`` finished after the newest plot was drawn (or there is no plot yet)."""
        ends = [t.datetime_complete for t in study.get_trials(deepcopy=False, states=_FINISHED)]
        newest = max((e.timestamp() for e in ends if e is not None), default=None)
        pngs = [p.stat().st_mtime for p in (self.study_dir / _PLOT_DIR).glob("*.png")]
        return newest is not None and (not pngs or newest > max(pngs))

    def close(self) -> None:
        """Close the event file and hand the run over to the next process (also done when collected).

        A drawing process still running is waited for, and its images written.
        """
        self._collect(wait=True)
        for handle in (self._file, self._lock):
            if handle is not None and handle is not _NO_LOCK:
                handle.close()
        self._file = self._lock = self._history = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _hold(self) -> bool:
        """Whether this process writes the run: it holds the writer lock, or takes it now."""
        if self._lock is not None:
            return True
        try:
            import fcntl
        except ImportError:  # no flock (Windows): every process writes a file of its own
            self._lock = _NO_LOCK
            return True
        run = self.study_dir / "study"
        run.mkdir(parents=True, exist_ok=True)
        handle = open(run / ".writer.lock", "a")  # noqa: SIM115 - closed in close(), which frees the lock
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock = handle
        return True

    def _start(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
        """A new event file with the whole history of ``trials``, kept open to append to."""
        if self._file is not None:
            self._file.close()
        self._history = StudyHistory(minimizes(study), objective_names(study))
        self._study = (id(study), study.study_name)
        self._path = _replace_run(self.study_dir / "study", self._history.add(trials))
        self._file = open(self._path, "ab")  # noqa: SIM115 - closed in close() or by the next _start

    def _write_plots(self, study: optuna.Study, wait: bool) -> None:
        """Draw the plots: in a process of their own when the storage is known (collected later unless ``wait``)."""
        if importlib.util.find_spec("matplotlib") is None:  # an optional dependency (the examples extra)
            return
        if self.storage is not None:
            try:
                self._drawing = Drawing(self.storage, study.study_name, self.study_dir / _PLOT_DIR)
            except OSError:  # no interpreter to start (an embedded Python): drawn here instead, from now on
                self.storage = None
            else:
                if wait:
                    self._collect(wait=True)
                return
        started, cpu = time.monotonic(), time.process_time()
        drawn, finished = draw_plots(study, self.study_dir / _PLOT_DIR)
        self._add(DrawingResult(drawn, finished, time.monotonic() - started, time.process_time() - cpu, os.getpid()))

    def _collect(self, wait: bool) -> None:
        """The drawing process's result, if it has ended (or once it ends, with ``wait``)."""
        if self._drawing is None:
            return
        result = self._drawing.result(wait)
        if result is None:
            return
        self._drawing = None
        if result.error is not None and not self._told:
            self._told = True
            stderr_line(f"the study's plots were not drawn: {result.error}")
        self._add(result)

    def _add(self, result: DrawingResult) -> None:
        """Record ``result`` and put its images into the run ``study/plots``."""
        self.drawing_s = result.seconds
        self.drawings.append(result)
        images = []
        for path in sorted(result.drawn):
            with contextlib.suppress(FileNotFoundError):  # replaced meanwhile by another process's drawing
                image = _image_summary(f"plots/{path.stem}", path.read_bytes())
                if image is not None:
                    event = event_pb2.Event(wall_time=path.stat().st_mtime, step=result.finished, summary=image)
                    images.append(event)
        if images:
            _replace_run(self.study_dir / "study" / _PLOT_DIR, images)

    def _plots_stale(self) -> bool:
        pngs = list((self.study_dir / _PLOT_DIR).glob("*.png"))
        drawn = max((p.stat().st_mtime for p in pngs), default=self.created)
        return time.time() - drawn >= max(self.plot_every, DRAW_SHARE * self.drawing_s)


def draw_plots(study: optuna.Study, out: Path) -> tuple[list[Path], int]:
    """Draw Optuna's plots of ``study`` into ``out`` (each file replaced whole).

    Returns the files written and the number of finished trials they show (no files before the
    first complete trial, or without matplotlib).
    """
    finished = len(study.get_trials(deepcopy=False, states=_FINISHED))
    if importlib.util.find_spec("matplotlib") is None:  # an optional dependency (the examples extra)
        return [], finished
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".drawing-{os.getpid()}-") as scratch:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # matplotlib on flat axes of a young study
                written, _ = plot_study(study, scratch)
        except ConfigError:  # no complete trial yet
            return [], finished
        for path in written:
            os.replace(path, out / path.name)
    return [out / path.name for path in written], finished


@contextlib.contextmanager
def sweeping(study_dir: str | Path) -> Iterator[Callable[[], bool]]:
    """Held while this process runs trials of the study logged in ``study_dir``; yields ``last()``.

    Every ``sweep run`` of the study on this machine (and log folder) holds ``study/.sweeping.lock``
    shared while its trials run. ``last()``, called once at the end, lets go of it and says whether
    no other one still holds it: the last to end draws the final plots; the others would draw a
    study that is still growing. Two that end together cannot both see the other: one of them
    takes the lock exclusively. Without ``flock`` (Windows) every process is the last.
    """
    try:
        import fcntl
    except ImportError:
        yield lambda: True
        return
    run = Path(study_dir) / "study"
    run.mkdir(parents=True, exist_ok=True)
    with open(run / ".sweeping.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)

        def last() -> bool:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return True

        yield last


def _image_summary(tag: str, png: bytes) -> summary_pb2.Summary | None:
    """An image summary of ``png`` (None if it is not a whole PNG file)."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or not png.endswith(b"IEND\xaeB`\x82"):
        return None
    width, height = struct.unpack(">II", png[16:24])
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])


def _replace_run(directory: Path, events: list[event_pb2.Event]) -> Path:
    """Make ``events`` the whole content of the run ``directory``: a new event file, older ones dropped.

    The new file starts with a session restart, after which TensorBoard's Python loader drops what
    it read before (the Rust loader replaces points by step anyway). A replaced file is deleted
    only once it is :data:`_KEEP_S` old: the Python loader stops at a file deleted under it.
    """
    marker = restart_event(0)
    name = f"events.out.tfevents.{time.time_ns():020d}.{socket.gethostname()}.{os.getpid()}.lightopt"
    written = write_events(directory, name, [marker, *events])
    for old in directory.glob("events.out.tfevents.*.lightopt"):
        with contextlib.suppress(FileNotFoundError):  # another process removed it first
            if old.name < name and time.time() - old.stat().st_mtime > _KEEP_S:
                old.unlink()
    return written
