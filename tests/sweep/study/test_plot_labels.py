"""Optuna's contour and parallel-coordinate plots with short distinct labels, log axes over decades, sizes that fit."""

from __future__ import annotations

import itertools
import warnings

import matplotlib
import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.visualization import matplotlib as optuna_mpl

from lightopt.sweep.study import plot_study
from lightopt.sweep.study._plot_labels import display_study, draw, short_labels, spans_decades

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LR, SCHED_LR, HORIZON, ACCUMULATE = (
    "optimizer.init_args.lr",
    "lr_scheduler.init_args.lr",
    "optimizer.init_args.momentum:horizon",
    "trainer.accumulate_grad_batches",
)
LABELS = {
    LR: "optimizer.lr",
    SCHED_LR: "lr_scheduler.lr",
    HORIZON: "momentum:horizon",
    ACCUMULATE: "accumulate_grad_batches",
}


def test_short_labels_are_the_last_segment_plus_what_tells_keys_apart():
    names = [
        LR,
        SCHED_LR,
        HORIZON,
        "optimizer.init_args.momentum",
        "data.init_args.batch_size",
        "seed_everything",
        "model.init_args.encoder.dropout",
        "model.init_args.decoder.dropout",
    ]
    assert short_labels(names) == {
        LR: "optimizer.lr",
        SCHED_LR: "lr_scheduler.lr",
        HORIZON: "momentum:horizon",
        "optimizer.init_args.momentum": "momentum",
        "data.init_args.batch_size": "batch_size",
        "seed_everything": "seed_everything",
        "model.init_args.encoder.dropout": "encoder.dropout",
        "model.init_args.decoder.dropout": "decoder.dropout",
    }
    # alone, a key is its last segment; the coordinate stays, and tells two coordinates of one key apart
    assert short_labels([LR]) == {LR: "lr"}
    assert short_labels([HORIZON, "optimizer.init_args.lr:effective", LR]) == {
        HORIZON: "momentum:horizon",
        "optimizer.init_args.lr:effective": "lr:effective",
        LR: "lr",
    }
    assert short_labels([HORIZON, "trainer.momentum:horizon"]) == {
        HORIZON: "optimizer.momentum:horizon",
        "trainer.momentum:horizon": "trainer.momentum:horizon",
    }
    # a key that is a suffix of another
    assert short_labels(["x.lr", "a.x.lr"]) == {"x.lr": "lr", "a.x.lr": "a.lr"}
    tricky = ["a.x.lr", "b.x.lr", "b.y.lr", "x.lr", "lr", "a.init_args.lr", "init_args.lr", "y.a.lr"]
    labels = short_labels(tricky)
    assert len(set(labels.values())) == len(tricky) and all(labels[n].split(".")[-1] == "lr" for n in tricky)
    assert short_labels([]) == {}


def test_spans_decades():
    assert spans_decades([1e-4, 1e-3, 1e-2]) and spans_decades([1, 100]) and spans_decades([16, 2048])
    assert not spans_decades([1, 99]) and not spans_decades([0.1, 0.9]) and not spans_decades([5])
    assert not spans_decades([0.0, 1e-3, 1.0]) and not spans_decades([-1e-3, 1.0])  # no log of zero or below
    assert (
        not spans_decades(["sgd", "adam"]) and not spans_decades([True, 1000]) and not spans_decades([1, float("inf")])
    )


def _study() -> optuna.Study:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float(LR, 1e-5, 1.0)  # searched linearly, sampled across five decades
        sched_lr = trial.suggest_float(SCHED_LR, 1e-3, 5e-3)  # linear and narrow: stays linear
        horizon = trial.suggest_float(HORIZON, 1.0, 10.0)
        accumulate = trial.suggest_int(ACCUMULATE, 1, 4)
        return float(np.log10(lr) ** 2 + 100 * sched_lr + horizon / 10 + accumulate / 4)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({LR: 1e-5})
    study.enqueue_trial({LR: 1e-3})
    study.enqueue_trial({LR: 0.5})
    study.optimize(objective, n_trials=10)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # a failed trial is copied as it is
    return study


@pytest.fixture(scope="module")
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _study()


def _snapshot(study):
    return [(t.number, t.state, t.values, dict(t.params), dict(t.distributions)) for t in study.trials]


def _no_overlap(texts):
    figure = texts[0].figure
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]
    assert boxes
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)


def _shown_xticks(ax):
    low, high = sorted(ax.get_xlim())
    return [t for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]


def _draw(study, function, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = draw(getattr(optuna_mpl, function), study, kind)
    figure = np.asarray(axes, dtype=object).flat[0].figure
    figure.canvas.draw()
    return axes, figure


def test_display_study_renames_and_makes_decades_log_without_touching_the_study(study):
    before = _snapshot(study)
    copy, labels = display_study(study)
    assert labels == LABELS
    assert _snapshot(study) == before and copy is not study
    assert [t.state for t in copy.trials] == [t.state for t in study.trials]
    assert [t.values for t in copy.trials] == [t.values for t in study.trials]
    for original, shown in zip(study.trials, copy.trials):
        assert shown.params == {LABELS[k]: v for k, v in original.params.items()}
    dist = copy.trials[0].distributions
    assert dist["optimizer.lr"] == FloatDistribution(
        min(t.params[LR] for t in study.trials if LR in t.params), 1.0, log=True
    )
    assert dist["lr_scheduler.lr"] == study.trials[0].distributions[SCHED_LR]  # not log: values within a decade
    assert dist["accumulate_grad_batches"] == IntDistribution(1, 4)
    assert not study.trials[0].distributions[LR].log


def test_contour_has_short_distinct_untruncated_labels_and_log_axis_over_decades(study):
    before = _snapshot(study)
    axes, figure = _draw(study, "plot_contour", "contour")
    try:
        grid = np.asarray(axes)
        assert grid.shape == (4, 4)
        expected = sorted(LABELS.values())
        assert [ax.get_xlabel() for ax in grid[-1]] == expected  # bottom row: one x label per column
        assert [ax.get_ylabel() for ax in grid[:, 0]] == expected  # first column: one y label per row
        assert not any(ax.xaxis.label.get_visible() and ax.get_xlabel() for ax in grid[:-1].flat)
        assert not any(ax.yaxis.label.get_visible() and ax.get_ylabel() for ax in grid[:, 1:].flat)
        texts = [t.get_text() for ax in grid.flat for t in (ax.xaxis.label, ax.yaxis.label)]
        assert not any("..." in t or "init_args" in t for t in texts)
        column = {label: i for i, label in enumerate(expected)}
        assert all(ax.get_xscale() == "log" for ax in grid[:, column["optimizer.lr"]])
        assert all(ax.get_yscale() == "log" for ax in grid[column["optimizer.lr"]])
        for label in ("lr_scheduler.lr", "momentum:horizon", "accumulate_grad_batches"):
            assert all(ax.get_xscale() == "linear" for ax in grid[:, column[label]])
        # sized to the grid, and the outer labels do not run into each other
        width, height = figure.get_size_inches()
        assert width >= 2 * 4 and height >= 2 * 4
        _no_overlap([ax.xaxis.label for ax in grid[-1]] + [t for ax in grid[-1] for t in _shown_xticks(ax)])
        _no_overlap([ax.yaxis.label for ax in grid[:, 0]])
    finally:
        plt.close(figure)
    assert _snapshot(study) == before


def test_parallel_coordinate_has_short_distinct_untruncated_labels_and_log_axis_over_decades(study):
    before = _snapshot(study)
    ax, figure = _draw(study, "plot_parallel_coordinate", "parallel_coordinate")
    try:
        ticks = ax.get_xticklabels()
        names = [t.get_text() for t in ticks]
        # Optuna cuts labels of 20 characters or more ("accumulate_grad_b..."): restored
        assert names == ["Objective Value", *sorted(LABELS.values())]
        assert len(set(names)) == len(names) and not any("..." in n for n in names)
        twins = figure.axes[-len(LABELS) :]  # one y axis per parameter, in the order of the labels
        scales = dict(zip(sorted(LABELS.values()), (twin.get_yscale() for twin in twins)))
        assert scales == {
            "accumulate_grad_batches": "linear",
            "lr_scheduler.lr": "linear",
            "momentum:horizon": "linear",
            "optimizer.lr": "log",
        }
        assert figure.get_size_inches()[0] >= 1.5 * (len(LABELS) + 1)
        _no_overlap(ticks)
    finally:
        plt.close(figure)
    assert _snapshot(study) == before


def test_plot_study_writes_readable_pngs(study, tmp_path, monkeypatch):
    before = _snapshot(study)
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figures plot_study draws, to read them back
    try:
        written, notes = plot_study(study, tmp_path / "plots")
        assert notes == []
        assert [p.name for p in written] == [
            "optimization_history.png",
            "param_importances.png",
            "parallel_coordinate.png",
            "slice.png",
            "contour.png",
        ]
        assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
        _, importances, parallel, slices, contour = kept
        assert [t.get_text() for t in parallel.axes[0].get_xticklabels()] == [
            "Objective Value",
            *sorted(LABELS.values()),
        ]
        assert sorted(t.get_text() for t in importances.axes[0].get_yticklabels()) == sorted(LABELS.values())
        shown = {ax.get_xlabel(): ax.get_xscale() for ax in slices.axes if ax.get_xlabel()}
        assert shown == {
            "accumulate_grad_batches": "linear",
            "lr_scheduler.lr": "linear",
            "momentum:horizon": "linear",
            "optimizer.lr": "log",
        }
        assert sorted(ax.get_xlabel() for ax in contour.axes if ax.get_xlabel()) == sorted(LABELS.values())
    finally:
        monkeypatch.undo()
        for figure in kept:
            plt.close(figure)
    assert _snapshot(study) == before


def test_display_study_reads_each_parameters_values_once_not_once_per_trial(monkeypatch):
    """The display distribution of a parameter is computed once (once per trial before: quadratic in the study)."""
    import lightopt.sweep.study._plot_labels as plot_labels

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"a.lr": 1e-4, "b.units": 1})
    study.optimize(lambda t: t.suggest_float("a.lr", 1e-4, 1.0) + t.suggest_int("b.units", 1, 512), n_trials=60)
    calls = []
    counted = plot_labels.spans_decades

    def spans(values, *args):
        calls.append(len(values))
        return counted(values, *args)

    monkeypatch.setattr(plot_labels, "spans_decades", spans)
    copy, _ = display_study(study)
    assert calls == [60, 60]  # one look at each parameter's 60 values
    assert copy.trials[0].distributions["lr"].log  # values over decades on a linear distribution: shown on a log axis


def test_a_drawing_copies_the_study_once_and_without_the_trials_configs(monkeypatch, tmp_path):
    """plot_study makes one display copy for all its plots (one per plot before), and the copy leaves out the
    trials' user attributes (a sweep's hold each trial's whole config), keeping what the plots read."""
    import lightopt.sweep.study._plot_labels as plot_labels
    from lightopt.sweep.study import plot_study

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        trial.set_user_attr("config", {"model": {"init_args": {"hidden": list(range(50))}}})
        return trial.suggest_float("a.lr", 1e-4, 1.0, log=True) + trial.suggest_int("b.units", 1, 512)

    study.optimize(objective, n_trials=12)
    copies = []
    made = plot_labels.display_study

    def counting(*args, **kwargs):
        copies.append(made(*args, **kwargs))
        return copies[-1]

    monkeypatch.setattr(plot_labels, "display_study", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written, _ = plot_study(study, tmp_path)
    assert len(written) == 5 and len(copies) == 1
    (copy, _), original = copies[0], study.trials
    assert all(t.user_attrs == {} for t in copy.trials)
    assert [t.values for t in copy.trials] == [t.values for t in original]
    assert [t.intermediate_values for t in copy.trials] == [t.intermediate_values for t in original]
    assert all("config" in t.user_attrs for t in study.trials)  # the study itself is not changed
