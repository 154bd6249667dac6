"""The bounds of a ``{range_test: true}`` search entry: tested when the study is created, read back after.

:func:`settle_range_test` runs before the study is opened. A study that exists and recorded a
range test (``user_attrs["lightopt"]["range_test"]``) gives its bounds back, and the test is not
run again, so every resumed run, every worker and ``lightopt sweep show`` draw from the same
range. Otherwise the range test (:func:`~lightopt.sweep.trial.range_test`) runs on the file's
config, prints its curve and suggested range, writes ``<log_dir>/<name>/range_test.png``, and the
record goes to :func:`~lightopt.sweep.study.open_study`, which stores it with the study. A study
that exists without a record but whose recorded search space bounds the entry keeps those bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

from lightopt.runconfig import ConfigError
from lightopt.sweep.spec import SweepConfigError, SweepFile, lr_entry, recorded_range_test, with_recorded_bounds
from lightopt.sweep.store import open_storage, study_dir
from lightopt.sweep.trial import range_test

__all__ = ["RANGE_TEST_PNG", "settle_range_test"]

RANGE_TEST_PNG = "range_test.png"
MIN_LR, MAX_LR, STEPS = 1e-6, 10.0, 100  # the test's range when the entry gives none, and its length


def settle_range_test(
    sweep: SweepFile, storage_url: str | None, name: str, out: TextIO
) -> tuple[SweepFile, dict[str, Any] | None]:
    """``(sweep with the range-test entry bounded, the record to store)``; the record is None when read back.

    A file without a ``{range_test: true}`` entry comes back as it is, with no record.
    """
    deferred = sweep.search.deferred
    if not deferred:
        return sweep, None
    param = deferred[0]
    attrs = _stored_attrs(sweep, storage_url, name)
    record = recorded_range_test(attrs) if attrs is not None else None
    if record is not None and record.get("name") == param.name:
        print(
            f"range test: {param.name} in [{record['low']:.3g}, {record['high']:.3g}], as recorded when study "
            f"{name!r} was created (not run again)",
            file=out,
            flush=True,
        )
        return with_recorded_bounds(sweep, record), None
    stored = ((attrs or {}).get("lightopt") or {}).get("space", {}).get(param.name) or {}
    if "low" in stored and "high" in stored:
        print(
            f"range test: {param.name} in [{stored['low']:.3g}, {stored['high']:.3g}], the bounds study {name!r} "
            "recorded (not run again)",
            file=out,
            flush=True,
        )
        return with_recorded_bounds(sweep, {"name": param.name, **stored}), None
    entry = lr_entry(sweep)
    low = entry.low if entry.low is not None else MIN_LR
    high = entry.high if entry.high is not None else MAX_LR
    print(
        f"range test for {param.name} (§8.3.1): {STEPS} training batches, {entry.coordinate} from {low:.3g} to "
        f"{high:.3g}, before study {name!r} is created",
        file=out,
        flush=True,
    )
    try:
        result = range_test(
            sweep.run, entry, cli=sweep.cli, min_lr=low, max_lr=high, steps=STEPS, seed=sweep.study.seed
        )
    except ValueError as error:
        raise SweepConfigError(f"the range test of `search.{param.key}` failed: {error}", sweep.path) from None
    plot = result.plot(study_dir(sweep.study.log_dir, name) / RANGE_TEST_PNG)
    print(result.table(), file=out)
    print(result.describe(), file=out)
    print(f"range test plot: {plot}", file=out, flush=True)
    record = {**result.record(), "plot": str(plot)}
    return with_recorded_bounds(sweep, record), record


def _stored_attrs(sweep: SweepFile, storage_url: str | None, name: str) -> Mapping[str, Any] | None:
    """The stored study's user attributes, or None when there is no such study (or storage) yet."""
    url = storage_url if storage_url is not None else sweep.study.storage
    database = url is not None and "://" in url  # a database that cannot be opened fails now, before the test
    try:
        storage, _ = open_storage(url, study_dir(sweep.study.log_dir, name), create=database, file=sweep.path)
    except ConfigError:
        if database:
            raise
        return None  # no journal file yet
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        return None
