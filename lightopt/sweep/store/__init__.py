"""Layer 2 of a sweep, above :mod:`~lightopt.sweep.spec`: where a study is stored and what its records mean.

Imports Optuna only (no torch, no Lightning), eagerly: reading a study back (``lightopt sweep
show``, ``sweep best``, ``lightopt tensorboard``) starts in a fraction of a second.

* where: :func:`study_dir`, :func:`open_storage` (a journal file, :class:`JournalFile`, or a
  database, :func:`open_database`), both wrapped in :class:`GuardedStorage`; failures are
  :class:`StorageError`;
* who: :func:`worker_identity`, :func:`process_alive`; :class:`HostLock` between the workers of a host;
* what the records mean: :func:`is_retryable`, :func:`is_copied` (a ``study.warm_start`` copy),
  :func:`counted`, :class:`StudyTally` (the running counts and best; :func:`one_look` shares one read of a
  database among the scans after a trial), :func:`best_of` /
  :func:`best_trial` / :func:`top_trials` / :func:`is_better` (the one rule for "better" in a direction),
  :func:`pareto_front` / :func:`dominates` (several objectives, named by :func:`objective_names`)
  and :func:`trial_dir` (the one trial-folder name);
* :func:`optuna_quiet`: Optuna's log lines silenced while lightopt prints its own.
"""

from lightopt.sweep.store._best import (
    TRIAL_DIR,
    best_of,
    best_trial,
    dominates,
    is_better,
    is_minimize,
    minimizes,
    objective_names,
    pareto_front,
    top_trials,
    trial_dir,
)
from lightopt.sweep.store._database import (
    CONNECT_TIMEOUT_S,
    STORAGE_ENV,
    database_error,
    grpc_proxy,
    is_transient,
    open_database,
    redact,
)
from lightopt.sweep.store._host_lock import HostLock, lock_path
from lightopt.sweep.store._journal import GRACE_S, LOCK_SUFFIX, JournalFile, JournalLock
from lightopt.sweep.store._locate import JOURNAL_NAME, open_storage, study_dir
from lightopt.sweep.store._optuna_log import optuna_quiet
from lightopt.sweep.store._outcomes import (
    COPIED_FROM,
    DIED,
    ENQUEUED,
    GRACE_PERIOD_S,
    HEARTBEAT_S,
    INTERRUPTED,
    WARM_START,
    counted,
    is_copied,
    is_retryable,
)
from lightopt.sweep.store._processes import describe_worker, on_this_host, process_alive, worker_identity
from lightopt.sweep.store._scan import FinishedScan, one_look, trials_from
from lightopt.sweep.store._storage import OUTAGE_S, GuardedStorage, StorageError, stderr_line
from lightopt.sweep.store._tally import StudyTally

__all__ = [
    "CONNECT_TIMEOUT_S",
    "COPIED_FROM",
    "DIED",
    "ENQUEUED",
    "GRACE_PERIOD_S",
    "GRACE_S",
    "HEARTBEAT_S",
    "INTERRUPTED",
    "JOURNAL_NAME",
    "LOCK_SUFFIX",
    "OUTAGE_S",
    "STORAGE_ENV",
    "TRIAL_DIR",
    "WARM_START",
    "FinishedScan",
    "GuardedStorage",
    "HostLock",
    "JournalFile",
    "JournalLock",
    "StorageError",
    "StudyTally",
    "best_of",
    "best_trial",
    "counted",
    "database_error",
    "dominates",
    "describe_worker",
    "grpc_proxy",
    "is_better",
    "is_copied",
    "is_minimize",
    "is_retryable",
    "is_transient",
    "lock_path",
    "minimizes",
    "objective_names",
    "on_this_host",
    "one_look",
    "open_database",
    "open_storage",
    "optuna_quiet",
    "pareto_front",
    "process_alive",
    "redact",
    "stderr_line",
    "study_dir",
    "top_trials",
    "trial_dir",
    "trials_from",
    "worker_identity",
]
