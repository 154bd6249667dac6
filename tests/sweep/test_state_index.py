"""Reads of a journal study by state through the sweep's storage: what Optuna's walk gives, without the walk."""

from __future__ import annotations

import random

import optuna
from optuna.trial import TrialState

from lightopt.sweep.store import GuardedStorage, JournalFile
from lightopt.sweep.study import FailureWatch, run_worker

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _seen(trials) -> list[tuple]:
    return [(t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values) for t in trials]


def _handles(tmp_path) -> tuple[GuardedStorage, optuna.storages.JournalStorage, optuna.Study, optuna.Study]:
    path = tmp_path / "study.journal"
    ours = GuardedStorage(optuna.storages.JournalStorage(JournalFile(path)), str(path))
    theirs = optuna.storages.JournalStorage(JournalFile(path))  # another worker's handle on the same file
    study = optuna.create_study(storage=ours, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    other = optuna.load_study(storage=theirs, study_name="s", sampler=optuna.samplers.RandomSampler(seed=1))
    return ours, theirs, study, other


def _same_by_state(ours, theirs, study_id: int) -> None:
    for state in TrialState:
        for states in ((state,), [state], {state}, frozenset([state])):
            got = ours.get_all_trials(study_id, deepcopy=False, states=states)
            assert _seen(got) == _seen(theirs.get_all_trials(study_id, deepcopy=False, states=(state,)))
    copied = ours.get_all_trials(study_id, deepcopy=True, states=(TrialState.COMPLETE,))
    held = ours.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
    assert _seen(copied) == _seen(held) and all(a is not b for a, b in zip(copied, held))
    several = (TrialState.COMPLETE, TrialState.PRUNED)  # more than one state: Optuna's own read
    assert _seen(ours.get_all_trials(study_id, deepcopy=False, states=several)) == _seen(
        theirs.get_all_trials(study_id, deepcopy=False, states=several)
    )


def test_reads_by_state_equal_optunas_walk_while_two_workers_change_the_study(tmp_path):
    """Trials created, changed, finished out of order and enqueued by this handle and another on the same
    file; after each change every one-state read equals Optuna's own, trial for trial."""
    ours, theirs, study, other = _handles(tmp_path)
    rng = random.Random(0)
    running: list[tuple[optuna.Study, optuna.Trial]] = []
    for step in range(240):
        handle = rng.choice([study, other])
        roll = rng.random()
        if roll < 0.35 or not running:
            trial = handle.ask()
            trial.suggest_float("x", 0, 1)
            running.append((handle, trial))
        elif roll < 0.75:
            owner, trial = running.pop(rng.randrange(len(running)))
            state = rng.choice(FINISHED)
            trial.report(rng.random(), 1)
            owner.tell(trial, rng.random() if state == TrialState.COMPLETE else None, state=state)
        elif roll < 0.85:
            owner, trial = rng.choice(running)
            trial.set_user_attr("step", step)  # an open trial changes: read again
        else:
            handle.enqueue_trial({"x": rng.random()})  # waiting, until an ask takes it
        if step % 3 == 0:
            _same_by_state(ours, theirs, study._study_id)
    _same_by_state(ours, theirs, study._study_id)


def test_many_open_trials_are_left_to_optunas_walk_and_the_index_goes_on_after(tmp_path):
    ours, theirs, study, other = _handles(tmp_path)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=5)
    _same_by_state(ours, theirs, study._study_id)
    for _ in range(40):  # more waiting trials than the index re-reads one by one
        other.enqueue_trial({"x": 0.5})
    _same_by_state(ours, theirs, study._study_id)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=45)  # takes the 40, then 5 new
    _same_by_state(ours, theirs, study._study_id)
    assert len(ours.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.COMPLETE,))) == 50


def test_a_deleted_study_is_forgotten(tmp_path):
    ours, theirs, study, _ = _handles(tmp_path)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    assert len(ours.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.COMPLETE,))) == 3
    optuna.delete_study(study_name="s", storage=ours)
    again = optuna.create_study(storage=ours, study_name="s")
    again.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    _same_by_state(ours, theirs, again._study_id)


def _walked_per_trial(tmp_path, size: int, trials: int = 8) -> float:
    """Trials walked by Optuna's journal reads per trial of the worker loop with the median pruner, after
    ``size`` trials, on a journal file opened as a sweep opens it."""
    path = tmp_path / "study.journal"
    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = GuardedStorage(optuna.storages.JournalStorage(JournalFile(path)), str(path))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    sampler = optuna.samplers.RandomSampler(seed=0)  # TPE walks the study itself, in both arms alike
    study = optuna.create_study(storage=storage, study_name="s", sampler=sampler, pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            trial.report(x + step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    run_worker(study, objective, total=size, lock=tmp_path / "lock", failures=FailureWatch(3))
    walked = []
    walk = optuna.storages.JournalStorage.get_all_trials

    def counting(self, study_id, deepcopy=True, states=None):
        found = walk(self, study_id, deepcopy, states)
        walked.append(len(walk(self, study_id, False, None)))  # a filtered read walks every trial
        return found

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as a sweep runs: Optuna's log line reads the best trial
    optuna.storages.JournalStorage.get_all_trials = counting
    try:
        run_worker(study, objective, total=size + trials, lock=tmp_path / "lock", failures=FailureWatch(3))
    finally:
        optuna.storages.JournalStorage.get_all_trials = walk
        optuna.logging.set_verbosity(verbosity)
    return sum(walked) / trials


def test_the_pruners_and_asks_reads_walk_no_more_trials_in_a_larger_study(tmp_path):
    """Optuna's median pruner reads the complete trials at each report and ``study.ask`` looks for waiting
    trials: on a journal file each was a walk of every trial of the study (80 trials walked per trial at 25
    trials, 572 at 250, before). Through the sweep's storage they read what changed."""
    small = _walked_per_trial(tmp_path / "small", 25)
    large = _walked_per_trial(tmp_path / "large", 250)
    assert small == large == 0


def test_finished_trials_share_their_attribute_strings_in_memory(tmp_path):
    """The journal keeps every trial in memory, each with its own copy of a recorded config's strings
    (decoded from its own line); once read finished through the sweep's storage they share one copy."""
    ours, theirs, study, _ = _handles(tmp_path)
    config = {"model": {"class_path": "my_project.nets.ResNet", "init_args": {"act": "gelu"}}}

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("config", config)
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=3)
    first, *later = ours.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
    for trial in later:
        assert trial.user_attrs["config"] == first.user_attrs["config"] == config
        assert trial.user_attrs["config"]["model"]["class_path"] is first.user_attrs["config"]["model"]["class_path"]
        assert trial.user_attrs["worker"]["host"] is first.user_attrs["worker"]["host"]
    stored = [t.user_attrs["config"] for t in theirs.get_all_trials(study._study_id, deepcopy=False)]
    assert stored == [config] * 3
