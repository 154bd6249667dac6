"""TensorBoard for one trial: its HParams session, written into its run when it ends, however it ends.

Written with TensorBoard's own protos and record writer; TensorFlow is not needed.

Each trial's run ``<log_dir>/<study>/trial_NNNN/`` (where the trial's ``TensorBoardLogger`` also
writes) gets one more event file when the trial ends, whatever its end (complete, pruned, failed,
even before its Trainer existed): the HParams session (:func:`trial_hparams`: the searched
parameters under their dotted names, plus :data:`FIXED` settings of the config), the experiment
config (the search space's domains and the declared :data:`METRICS`), and those metrics as scalars;
with several objectives also one metric per objective, ``objective/<metric>`` (the trial's values,
all from the round where the first metric was best, as :class:`~lightopt.sweep.trial.Objective`
returns them; a pruned trial's too). :data:`STATES` codes the trial's state as a number, and the
``state`` hparam names it (complete, pruned, failed); a failed trial's ``fail_reason`` is an hparam
too, and its reason and traceback's last lines are text in its run (:func:`write_failure`). Integer
choices are categories (``16``, not ``16.000``); ``seed_everything`` is marked as differing between
trials. The session's status is Success for complete and pruned trials (the dashboard's status
filter has no "aborted"), Failure for failed ones.

The study-level run (best so far, counts, Optuna's plots) is the study's:
:class:`lightopt.sweep.study.StudyRun`. Open the dashboard on the study's directory
(``lightopt tensorboard FILE_or_NAME`` does): the HParams plugin takes the experiment config of
the first run that has one, so a log directory holding several studies shows one study's columns.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp

from lightopt.sweep.store import trial_dir
from lightopt.sweep.trial._events import is_global_zero, write_events

__all__ = [
    "ATTRIBUTES",
    "FIXED",
    "METRICS",
    "STATES",
    "STATE_NAMES",
    "experiment_summary",
    "objective_tag",
    "hparam_value",
    "trial_hparams",
    "trial_run",
    "write_failure",
    "write_trial",
]

# Settings of the trial's config shown next to the searched parameters (when the config has them), with their type.
FIXED = {
    "model.class_path": api_pb2.DATA_TYPE_STRING,
    "optimizer.class_path": api_pb2.DATA_TYPE_STRING,
    "lr_scheduler.class_path": api_pb2.DATA_TYPE_STRING,
    "data.init_args.batch_size": api_pb2.DATA_TYPE_FLOAT64,
    "seed_everything": api_pb2.DATA_TYPE_FLOAT64,
}
# Trial attributes shown next to them (when the trial has them): ``device``, the ids a ``--devices`` sweep gave it.
ATTRIBUTES = {"device": api_pb2.DATA_TYPE_STRING}
# The trial's state as a category (``trial/state`` is the same as a number), and a failed trial's reason.
STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
_DIFFERS = {"seed_everything"}  # each trial has its own seed: never "does not differ" in the dashboard
# The declared HParams metrics, scalars in each trial's run: tag -> description.
METRICS = {
    "trial/best_value": "the best of the study's metric over the trial's validation rounds (its value)",
    "trial/final_value": "the study's metric at the trial's last validation round",
    "trial/state": "0 complete, 1 pruned, 2 failed",
    "trial/epochs": "epochs run",
    "trial/duration_s": "the trial's wall time in seconds",
}
STATES = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
_STATUS = {"COMPLETE": api_pb2.STATUS_SUCCESS, "PRUNED": api_pb2.STATUS_SUCCESS, "FAIL": api_pb2.STATUS_FAILURE}


def hparam_value(value: Any) -> bool | float | str:
    """``value`` as an HParams value: booleans and numbers stay, anything else becomes text.

    >>> hparam_value(3), hparam_value(True), hparam_value(None), hparam_value("lightopt.optim.SGD")
    (3.0, True, 'null', 'lightopt.optim.SGD')
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return "null" if value is None else str(value)


def trial_hparams(
    params: Mapping[str, Any], config: Mapping[str, Any] | None, space: Iterable[Any] = ()
) -> dict[str, bool | float | str]:
    """The trial's HParams: its ``params`` (dotted names) and the :data:`FIXED` settings its ``config`` has.

    A parameter of ``space`` whose choices mix types is written as text, as its domain is. A
    parameter searched in another coordinate (``optimizer.init_args.momentum:horizon``) also
    shows the value its key got in ``config`` (``optimizer.init_args.momentum``: α itself).

    >>> trial_hparams({"optimizer.init_args.lr": 0.1}, {"optimizer": {"class_path": "lightopt.optim.SGD"}})
    {'optimizer.init_args.lr': 0.1, 'optimizer.class_path': 'lightopt.optim.SGD'}
    """
    from lightopt.runconfig import get_key

    as_text = {param.name for param in space if param.kind == "categorical" and _choices(param)[1]}
    values = {name: _text(value) if name in as_text else hparam_value(value) for name, value in params.items()}
    for key in [*_converted_keys(space), *FIXED]:
        value = get_key(config or {}, key, None)
        if key not in values and value is not None and not isinstance(value, (dict, list)):
            values[key] = hparam_value(value)
    return values


def _converted_keys(space: Iterable[Any]) -> list[str]:
    """The config keys of the parameters whose trial name is not their key (a converted coordinate)."""
    return [param.key for param in space if param.key != param.name]


def _choices(param: Any) -> tuple[list[bool | float | str], bool]:
    """A categorical parameter's choices as HParams values, and whether they had to become text (mixed types)."""
    choices = [hparam_value(c) for c in param.choices]
    integers = all(isinstance(c, int) and not isinstance(c, bool) for c in param.choices)
    if len({type(c) for c in choices}) > 1 or integers:  # mixed types; integers shown as 16, not 16.000
        return [_text(c) for c in param.choices], True
    return choices, False


def _text(value: Any) -> str:
    """A categorical choice as HParams text: an integer as itself (``16``), anything else as :func:`hparam_value`."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else str(hparam_value(value))


def experiment_summary(space: Iterable[Any], metric: str, objectives: Sequence[str] = ()) -> summary_pb2.Summary:
    """The HParams experiment config: ``space``'s parameters with their domains, :data:`FIXED`, :data:`METRICS`.

    A parameter searched in another coordinate is followed by its config key (the real value).

    ``metric`` (the study's) names the best and final values in the dashboard. ``objectives``, for a
    study with several, adds one metric per objective: ``objective/<name>`` (:func:`objective_tag`).
    """
    infos = []
    for param in space:
        if param.kind == "categorical":
            domain = hp.Discrete(_choices(param)[0])
        elif param.kind == "int":
            domain = hp.IntInterval(int(param.low), int(param.high))
        else:
            domain = hp.RealInterval(float(param.low), float(param.high))
        info = api_pb2.HParamInfo(name=param.name, differs=True)  # listed first, so shown by default
        domain.update_hparam_info(info)
        infos.append(info)
    names = {info.name for info in infos}
    infos += [
        api_pb2.HParamInfo(name=key, type=api_pb2.DATA_TYPE_FLOAT64, differs=True)
        for key in _converted_keys(space)
        if key not in names
    ]
    names |= {info.name for info in infos}
    infos += [
        api_pb2.HParamInfo(name=key, type=kind, differs=key in _DIFFERS)
        for key, kind in {**FIXED, **ATTRIBUTES}.items()
        if key not in names
    ]
    state = api_pb2.HParamInfo(name="state", differs=True)
    hp.Discrete(list(STATE_NAMES.values())).update_hparam_info(state)
    infos += [state, api_pb2.HParamInfo(name="fail_reason", type=api_pb2.DATA_TYPE_STRING)]
    metrics = [
        api_pb2.MetricInfo(
            name=api_pb2.MetricName(tag=tag),
            description=text,
            display_name=tag.split("/")[1].replace("_value", f" {metric}"),
        )
        for tag, text in METRICS.items()
    ]
    metrics += [
        api_pb2.MetricInfo(
            name=api_pb2.MetricName(tag=objective_tag(name)),
            description=f"objective {index + 1} of the study: {name}, at the round where {metric} was best",
            display_name=name,
        )
        for index, name in enumerate(objectives)
    ]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
    return _plugin_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def objective_tag(metric: str) -> str:
    """The HParams metric of an objective of a study with several: ``objective/<metric>``.

    >>> objective_tag("val_loss")
    'objective/val_loss'
    """
    return f"objective/{metric}"


def write_trial(
    directory: str | Path,
    hparams: Mapping[str, Any],
    metrics: Mapping[str, float | None],
    state: str,
    *,
    experiment: summary_pb2.Summary | None = None,
    start: float | None = None,
    step: int = 0,
) -> Path | None:
    """Write one trial's HParams session and ``metrics`` (tag -> value; None skipped) into its run ``directory``.

    ``state`` is ``"COMPLETE"``, ``"PRUNED"`` or ``"FAIL"``; ``trial/state`` is added from it. Only
    global rank 0 writes; returns the event file, or None on other ranks.
    """
    if state not in STATES:
        raise ValueError(f"`state` must be one of {list(STATES)}, but got state={state!r}.")
    if not is_global_zero():
        return None
    now = time.time()
    start = now if start is None else start
    summaries = [] if experiment is None else [experiment]
    summaries.append(hp.hparams_pb(dict(hparams), trial_id=Path(directory).name, start_time_secs=start))
    values = {**metrics, "trial/state": STATES[state]}
    summaries.append(
        summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                for tag, value in values.items()
                if value is not None
            ]
        )
    )
    end = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=_STATUS[state], end_time_secs=now)
    )
    summaries.append(_plugin_summary(metadata.SESSION_END_INFO_TAG, end))
    events = [event_pb2.Event(wall_time=now, step=step, summary=s) for s in summaries]
    # after Lightning's own event file of the run (same second: "hparams" sorts after its counter)
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.hparams"
    return write_events(Path(directory), name, events)


@contextlib.contextmanager
def trial_run(trial: optuna.Trial, sweep: Any, study_dir: str | Path) -> Iterator[None]:
    """Around a trial's objective: when it ends, however it ends, write the trial's HParams into its run.

    The state is COMPLETE when the body returns, PRUNED on ``optuna.TrialPruned``, FAIL on any other
    exception; values come from the trial's user attributes (``best_value``, ``final_value``,
    ``epochs``, ``global_step``, ``config``), set by :class:`~lightopt.sweep.trial.Objective`.
    """
    start = time.time()
    state = "FAIL"
    try:
        yield
        state = "COMPLETE"
    except optuna.TrialPruned:
        state = "PRUNED"
        raise
    finally:
        attrs = trial.user_attrs
        metrics = {
            "trial/best_value": attrs.get("best_value") if state != "FAIL" else None,
            "trial/final_value": attrs.get("final_value"),
            "trial/epochs": attrs.get("epochs"),
            "trial/duration_s": time.time() - start,
        }
        objectives = list(sweep.study.metrics) if sweep.study.multi_objective else []
        recorded = attrs.get("objective_values") if state != "FAIL" else None
        for index, name in enumerate(objectives):
            metrics[objective_tag(name)] = recorded[index] if recorded else None
        hparams = trial_hparams(trial.params, attrs.get("config"), sweep.search)
        hparams.update({key: hparam_value(attrs[key]) for key in ATTRIBUTES if attrs.get(key) is not None})
        if attrs.get("seed") is not None:  # also where the trial failed before its config was recorded
            hparams.setdefault("seed_everything", hparam_value(attrs["seed"]))
        hparams["state"] = STATE_NAMES[state]
        if state == "FAIL":
            hparams["fail_reason"] = str(attrs.get("fail_reason") or "see the trial's log")[:200]
            write_failure(
                trial_dir(study_dir, trial.number),
                attrs.get("fail_reason"),
                attrs.get("traceback"),
                step=int(attrs.get("global_step") or 0),
            )
        write_trial(
            trial_dir(study_dir, trial.number),
            hparams,
            metrics,
            state,
            start=start,
            experiment=experiment_summary(sweep.search, sweep.study.metric, objectives),
            step=int(attrs.get("global_step") or 0),
        )


def write_failure(
    directory: str | Path, reason: str | None, trace: str | None, *, step: int = 0, lines: int = 20
) -> Path | None:
    """Write a failed trial's reason and the last ``lines`` of its traceback as text (``trial/failure``) in its run."""
    if not is_global_zero():
        return None
    from tensorboard.plugins.text import metadata as text_metadata

    tail = "\n".join((trace or "").rstrip().splitlines()[-lines:])
    markdown = f"**failed:** {reason or 'no reason recorded'}" + (f"\n\n```\n{tail}\n```" if tail else "")
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        string_val=[markdown.encode()],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
    )
    value = summary_pb2.Summary.Value(
        tag="trial/failure",
        tensor=tensor,
        metadata=text_metadata.create_summary_metadata(display_name=None, description=None),
    )
    now = time.time()
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.failure"
    return write_events(
        Path(directory), name, [event_pb2.Event(wall_time=now, step=step, summary=summary_pb2.Summary(value=[value]))]
    )


def _plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    """A summary holding HParams plugin ``data`` under ``tag``, as the plugin's own summaries do."""
    value = summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return summary_pb2.Summary(value=[value])
