"""Smoke test of benchmarks/optim_step.py: it runs in-process and reports every pair. No timing thresholds."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optim_step.py"

# Every optimizer the benchmark must report, and the arms it times on the CPU.
EXPECTED = [
    "SGD",
    "SGD momentum=0.9",
    "SGD momentum=0.9 nesterov",
    "AdaGrad",
    "RMSProp",
    "RMSProp momentum=0.9",
    "Adam",
    "control: torch Adam as 'lightopt'",
]
_ARMS = {"lightopt default", "lightopt checks off", "torch default", "torch loop", "torch foreach", "torch fused"}
_NO_FUSED = {"RMSProp", "RMSProp momentum=0.9"}  # torch has no fused RMSprop


def _load(name, path):
    """Import a benchmark script as module ``name`` for the tests of one module (then forget it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, and class paths in sweep configs, look the module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def optim_step():
    yield from _load("optim_step", _SCRIPT)


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of the main results table, keyed by optimizer."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] in EXPECTED:
            rows[cells[0]] = cells
    return rows


def test_quick_run_reports_every_optimizer(optim_step, tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = ["--quick", "--rounds", "2", "--layers", "2", "--max-width", "16", "--block-ms", "1", "--json", str(out)]
    assert optim_step.main(argv) == 0
    stdout = capsys.readouterr().out

    rows = _table_rows(stdout)
    assert set(rows) == set(EXPECTED)
    for cells in rows.values():
        for column in (4, 5):  # default / torch default, default / torch fastest
            ratio = float(cells[column].split()[0])
            assert math.isfinite(ratio) and ratio > 0

    report = json.loads(out.read_text())
    assert [r["case"] for r in report["results"]] == EXPECTED
    for r in report["results"]:
        expected_arms = _ARMS - ({"torch fused"} if r["case"] in _NO_FUSED else set())
        if r["case"].startswith("control"):
            expected_arms = expected_arms - {"lightopt checks off"}
        assert set(r["medians_s"]) == expected_arms
        assert all(len(times) == 2 for times in r["rounds_s"].values())
        assert all(math.isfinite(v) and v > 0 for v in r["medians_s"].values())
        for key in ("vs_torch_default", "vs_torch_fastest"):
            assert 0 < r[key]["ratio_ci_low"] <= r[key]["ratio_ci_high"]
        assert r["torch_fastest"] in ("loop", "foreach", "fused")
        assert r["lightopt_path"] == ("foreach" if r["case"] in _NO_FUSED else "fused")
    assert report["machine"]["cpu"] in stdout and report["n_params"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rounds", "1"], "`--rounds` must be >= 2, but got rounds=1."),
        (["--layers", "0"], "`--layers` must be >= 1, but got layers=0."),
    ],
)
def test_bad_arguments_exit_2(optim_step, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        optim_step.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# benchmarks/callback_overhead.py: it runs in-process on tiny fits and reports every callback.

_OVERHEAD_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "callback_overhead.py"

OVERHEAD_CASES = {
    "control: no callback vs no callback",
    "GradientMonitor()",
    "GradientMonitor(check_every_step=True)",
    "EarlyStopping('val_loss', patience=1000)",
    "Initialization()",
    "PolyakAveraging()",
    "GradientClipping(clip_val=1.0)",
    "CurvatureMonitor(every_n_steps=2)",
    "CurvatureMonitor(every_n_steps=5)",
}


@pytest.fixture(scope="module")
def callback_overhead():
    yield from _load("callback_overhead", _OVERHEAD_SCRIPT)


def test_callback_overhead_reports_every_callback(callback_overhead, tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = [
        "--quick",
        "--rounds",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--warmup",
        "0",
        "--curvature-every",
        "2",
        "5",
        "--json",
        str(out),
    ]
    assert callback_overhead.main(argv) == 0
    stdout = capsys.readouterr().out

    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[0] in OVERHEAD_CASES:
            rows[cells[0]] = cells
    assert set(rows) == OVERHEAD_CASES
    for cells in rows.values():
        ratio = float(cells[4].split()[0])
        assert math.isfinite(ratio) and ratio > 0

    report = json.loads(out.read_text())
    assert report["skipped"] == []
    assert {r["case"] for r in report["results"]} == OVERHEAD_CASES
    for r in report["results"]:
        assert len(r["wall_a_rounds"]) == len(r["wall_b_rounds"]) == 2
        assert r["steps_with"] == r["steps_without"] == 9  # 1,077 training images in batches of 128
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("without_s", "with_s", "ratio", "cpu_ratio"))
        assert 0 < r["ratio_ci_low"] <= r["ratio_ci_high"]
    by_case = {r["case"]: r for r in report["results"]}
    assert by_case["CurvatureMonitor(every_n_steps=2)"]["events"] == 5  # steps 0, 2, 4, 6, 8
    assert report["machine"]["cpu"] in stdout


# ---------------------------------------------------------------------------------------------
# benchmarks/trial_overhead.py: it runs in-process on one-epoch trials and reports the three arms.

_TRIAL_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "trial_overhead.py"


@pytest.fixture(scope="module")
def trial_overhead():
    yield from _load("trial_overhead", _TRIAL_SCRIPT)


def test_trial_overhead_reports_three_arms(trial_overhead, tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = [
        "--quick",
        "--rounds",
        "2",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--warmup",
        "0",
        "--profile-trials",
        "1",
        "--json",
        str(out),
    ]
    assert trial_overhead.main(argv) == 0
    stdout = capsys.readouterr().out
    for name in trial_overhead.ARM_NAMES.values():
        assert f"| {name} |" in stdout
    for key in ("B/A", "C/A", "C/B"):
        assert f"| {key} |" in stdout

    report = json.loads(out.read_text())
    for arm in report["arms"].values():
        assert len(arm["wall_rounds"]) == 2 and all(math.isfinite(w) and w > 0 for w in arm["wall_rounds"])
    losses = [arm["val_loss"] for arm in report["arms"].values()]
    assert max(losses) - min(losses) < 1e-4  # the same batches, the same weights: the same work in every arm
    for r in report["ratios"].values():
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert 0 < r["ratio_ci_low"] <= r["ratio_ci_high"]
    assert report["profile"]["top"] and report["profile"]["packages"]
    assert report["machine"]["cpu"] in stdout


def test_trial_overhead_bad_arguments_exit_2(trial_overhead, capsys):
    with pytest.raises(SystemExit) as exc:
        trial_overhead.main(["--trials", "0"])
    assert exc.value.code == 2
    assert "`--trials` must be >= 1, but got trials=0." in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# benchmarks/workers.py: one quick round of both arms (two tiny trials each), the same trials in both.

_WORKERS_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "workers.py"


@pytest.fixture(scope="module")
def workers_benchmark():
    yield from _load("workers_benchmark", _WORKERS_SCRIPT)


def test_workers_benchmark_reports_both_arms(workers_benchmark, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert workers_benchmark.main(["--quick", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "| 1 |" in stdout and "| 2 |" in stdout and "| 2 workers / 1 worker |" in stdout
    report = json.loads(out.read_text())
    assert sorted(report["jobs"]) == ["digits_lr", "digits_sgd"]  # the main job and digits_lr.yaml
    for arm in (arm for job in report["jobs"].values() for arm in job["arms"].values()):
        assert len(arm["rounds"]) == 1 and arm["rounds"][0]["states"] == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 0}
        assert math.isfinite(arm["trials_per_min"]) and arm["trials_per_min"] > 0
    assert report["machine"]["cpu"] in stdout


def test_workers_benchmark_bad_arguments_exit_2(workers_benchmark, capsys):
    with pytest.raises(SystemExit) as exc:
        workers_benchmark.main(["--trials", "0"])
    assert exc.value.code == 2
    assert "`--trials` must be >= 1, but got trials=0." in capsys.readouterr().err


# benchmarks/search_efficiency.py: a quick run of every method, the cached reference, the counting.

_SEARCH_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_efficiency.py"


@pytest.fixture(scope="module")
def search_efficiency():
    yield from _load("search_efficiency", _SEARCH_SCRIPT)


def test_search_efficiency_quick_run_writes_every_method(search_efficiency, tmp_path, capsys):
    argv = [
        "--quick",
        "--seeds",
        "1",
        "--workers",
        "1",
        "--reference-trials",
        "1",
        "--reference-seeds",
        "2",
        "--budget-epochs",
        "1",
        "--out-dir",
        str(tmp_path),
    ]
    assert search_efficiency.main(argv) == 0
    stdout = capsys.readouterr().out
    report = json.loads((tmp_path / "search_efficiency_quick.json").read_text())
    searches = report["searches"]
    assert [s["method"] for s in searches] == list(search_efficiency.METHODS)
    reference = report["reference"]["value"]
    assert report["threshold"] == pytest.approx(report["reference"]["best_val_loss"] * 1.02)  # "lowest", the default
    # The reference is the best setting's median over the seeds it was retrained with.
    checks = report["reference"]["settings_check"]
    assert len(checks) == 2 and all(len(c["losses"]) == 2 for c in checks)
    assert reference == min(c["median"] for c in checks) == min(statistics.median(c["losses"]) for c in checks)
    for s in searches:
        assert s["n_trials"] >= 1 and s["epochs_spent"] > 0
        if s["reached"]:
            assert 0 < s["epochs_to_threshold"] <= s["epochs_spent"] and s["best_val_loss"] <= report["threshold"]
        else:  # censored: it spent its budget of one epoch (one 1-epoch trial) without reaching the threshold
            assert s["epochs_spent"] == pytest.approx(1.0) and s["best_val_loss"] > report["threshold"]
        assert f"| {s['method']} |" in stdout
    rows = (tmp_path / "search_efficiency_quick.csv").read_text().splitlines()
    assert len(rows) == 1 + len(searches) and rows[0].startswith("method,seed,reached,epochs_to_threshold")
    assert (tmp_path / "search_efficiency_quick.png").stat().st_size > 0

    # The reference is cached and reused when asked and its settings match.
    assert search_efficiency.main([*argv, "--reuse-reference", "--methods", "random"]) == 0
    assert "reference: reusing" in capsys.readouterr().out
    again = json.loads((tmp_path / "search_efficiency_quick.json").read_text())
    assert again["reference"]["value"] == reference and [s["method"] for s in again["searches"]] == ["random"]

    # --summarize reads the searches back and writes the same tables, running nothing.
    first = tmp_path / "first.json"
    first.write_text((tmp_path / "search_efficiency_quick.json").read_text())
    assert search_efficiency.main(["--summarize", str(first), "--out-dir", str(tmp_path / "again")]) == 0
    assert "| random |" in capsys.readouterr().out
    summarized = json.loads((tmp_path / "again" / "first.json").read_text())
    assert summarized["table"] == json.loads(first.read_text())["table"]
    assert (tmp_path / "again" / "first.png").stat().st_size > 0


def test_search_efficiency_counts_pruned_trials_and_censors(search_efficiency):
    trials = [  # a pruned trial (1 epoch), a completed one (2 epochs), then one that reaches 0.1 half-way in
        {"epochs": 1.0, "rounds": [(0.5, 0.9, 10.0), (1.0, 0.8, 11.0)]},
        {"epochs": 2.0, "rounds": [(1.0, 0.5, 12.0), (2.0, 0.3, 13.0)]},
        {"epochs": 2.0, "rounds": [(0.5, 0.2, 14.0), (1.0, 0.1, 15.0), (2.0, 0.05, 16.0)]},
    ]
    reached = search_efficiency.summarize(trials, threshold=0.1, start=5.0)
    curve = [[0.5, 0.9], [1.0, 0.8], [2.0, 0.5], [3.0, 0.3], [3.5, 0.2], [4.0, 0.1], [5.0, 0.05]]
    assert reached == {
        "reached": True,
        "epochs_to_threshold": 4.0,
        "wall_to_threshold_s": 10.0,
        "epochs_spent": 5.0,
        "best_val_loss": 0.05,
        "n_trials": 3,
        "curve": curve,
    }
    assert search_efficiency.epochs_to(reached, 0.35) == 3.0 and math.isinf(search_efficiency.epochs_to(reached, 0.01))
    censored = search_efficiency.summarize(trials, threshold=0.01, start=5.0)
    assert not censored["reached"] and censored["epochs_to_threshold"] is None and censored["epochs_spent"] == 5.0
    table = search_efficiency.method_table(
        [
            {
                "method": "optuna",
                "seed": s,
                "reached": s < 2,
                "epochs_to_threshold": 10.0 * (s + 1) if s < 2 else None,
                "wall_to_threshold_s": 1.0,
                "epochs_spent": 50.0,
                "n_trials": 4,
            }
            for s in range(5)
        ]
    )
    assert table["optuna"]["reached"] == 2 and math.isinf(table["optuna"]["epochs_median"])  # 3 of 5 censored
    assert table["optuna"]["epochs_q1"] == 20.0


def test_search_efficiency_ratio_of_medians_is_paired_by_seed(search_efficiency):
    def search(method, seed, epochs):
        return {
            "method": method,
            "seed": seed,
            "reached": math.isfinite(epochs),
            "epochs_to_threshold": epochs if math.isfinite(epochs) else None,
            "curve": [[epochs, 0.0]],
        }

    optuna = [10.0, 20.0, 30.0, math.inf, math.inf]
    raw = [5.0, 10.0, 15.0, 20.0, math.inf]
    searches = [search("optuna", k, e) for k, e in enumerate(optuna)] + [
        search("lightopt-raw", k, e) for k, e in enumerate(raw)
    ]
    row = search_efficiency.ratios(searches)["lightopt-raw"]
    assert row["ratio"] == 2.0 and row["seeds"] == 5  # medians 30 and 15
    low, high = row["ci95"]
    assert 0 < low <= 2.0 <= high and row["undefined_resamples"] > 0  # some resamples censor both medians
    assert search_efficiency.ratios(searches, threshold=-1.0)["lightopt-raw"]["ratio"] is None  # no curve gets to -1
    assert "optuna / lightopt-raw (median epochs, 5 paired seeds): 2.00 [" in search_efficiency.format_ratios(
        {"lightopt-raw": row}
    )


def test_search_efficiency_bad_arguments_exit_2(search_efficiency, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        search_efficiency.main(["--seeds", "0"])
    assert exc.value.code == 2
    assert "`--seeds` must be >= 1, but got seeds=0." in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        search_efficiency.main(["--summarize", str(tmp_path / "missing.json")])
    assert exc.value.code == 2 and "`--summarize` must name a results JSON" in capsys.readouterr().err


# benchmarks/search_robust.py: the recommendation's seed-averaged score, the counting, a quick run and its resume.

_ROBUST_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_robust.py"


@pytest.fixture(scope="module")
def search_robust():
    yield from _load("search_robust", _ROBUST_SCRIPT)


def test_search_robust_scores_the_recommendation_by_its_seed_mean_and_censors(search_robust):
    good = {"lr": 0.1, "momentum": 0.9, "batch_size": 32}
    lucky = {"lr": 0.5, "momentum": 0.5, "batch_size": 16}  # a setting whose own trial was lucky: worse on average
    key_good, key_lucky = search_robust.setting_key("t", good), search_robust.setting_key("t", lucky)
    evaluations = {key_good: {"1": 1.0, "2": 1.2}, key_lucky: {"1": 1.5, "2": 1.7, "3": 0.1}}
    seeds = [1, 2]
    assert search_robust.score(evaluations, key_good, seeds) == pytest.approx(1.1)
    assert search_robust.score(evaluations, key_good, [1, 2, 3]) == math.inf  # a missing seed is never a score
    search = {
        "task": "t",
        "method": "optuna",
        "seed": 0,
        "trials": [  # epochs spent after each trial, pruned ones included, and the recommendation then
            {"epochs": 0.5, "wall_s": 1.0, "state": "PRUNED", "setting": None},
            {"epochs": 4.5, "wall_s": 3.0, "state": "COMPLETE", "setting": lucky},
            {"epochs": 5.0, "wall_s": 3.5, "state": "PRUNED", "setting": lucky},
            {"epochs": 9.0, "wall_s": 6.0, "state": "COMPLETE", "setting": good},
        ],
    }
    points = search_robust.trajectory(search, evaluations, seeds)
    assert points == [
        [0.5, 1.0, math.inf],
        [4.5, 3.0, pytest.approx(1.6)],
        [5.0, 3.5, pytest.approx(1.6)],
        [9.0, 6.0, pytest.approx(1.1)],
    ]
    assert search_robust.first_within(points, 1.1 * 1.02, budget=10) == (9.0, 6.0)
    assert search_robust.first_within(points, 1.1 * 1.02, budget=8) == (math.inf, math.inf)  # censored, not dropped
    assert search_robust.first_within(points, 1.7, budget=10) == (4.5, 3.0)

    other = {**search, "method": "lightopt", "trials": [*search["trials"][1:2], {**search["trials"][3], "epochs": 6.0}]}
    tables = search_robust.summarize([search, other], evaluations, {"t": 1.1}, seeds, budget=8.0)
    strict = tables["t 0.02"]
    assert strict["optuna"]["reached"] == 0 and strict["optuna"]["epochs_median"] == math.inf
    assert strict["lightopt"]["reached"] == 1 and strict["lightopt"]["epochs_median"] == 6.0
    assert strict["lightopt"]["optuna_over_this"]["ratio"] == math.inf  # only Optuna censored
    loose = tables["t 0.1"]  # 1.21: neither reaches it before the good setting either
    assert loose["optuna"]["epochs_median"] == math.inf and loose["lightopt"]["epochs_median"] == 6.0
    assert [s["within"]["0.02"]["epochs"] for s in (search, other)] == [math.inf, 6.0]


def test_search_robust_quick_run_then_resume(search_robust, tmp_path, capsys):
    argv = [
        "--quick",
        "--seeds",
        "1",
        "--budget-epochs",
        "1",
        "--eval-seeds",
        "1",
        "--reference-trials",
        "2",
        "--reference-top",
        "1",
        "--reference-seeds",
        "2",
        "--workers",
        "1",
        "--out-dir",
        str(tmp_path),
    ]
    assert search_robust.main(argv) == 0
    report = json.loads((tmp_path / "search_robust_quick.json").read_text())
    searches = report["searches"]
    assert {(s["task"], s["method"]) for s in searches} == {
        (t, m) for t in search_robust.TASKS for m in search_robust.METHODS
    }
    cache = json.loads((tmp_path / "search_robust_quick_cache.json").read_text())["evaluations"]
    for task, detail in report["reference_detail"].items():
        # The reference is the lowest mean over the reference seeds of the long searches' best settings.
        assert len(detail["candidates"]) in (1, 2) and all(len(c["losses"]) == 2 for c in detail["candidates"])
        assert report["reference"][task] == min(statistics.mean(c["losses"]) for c in detail["candidates"])
    for s in searches:
        # One 1-epoch trial spends the budget, after the range test where the method runs one (its epochs first).
        before = s["range_test"]["epochs"] if s["method"] == search_robust.RANGE_METHOD else 0.0
        assert s["trials"][0]["epochs"] == pytest.approx(before + 1.0)
        for trial in s["trials"]:
            setting = trial["setting"]
            if setting is None:
                continue
            # The real values, whatever coordinates the method searched in, each scored on the evaluation seed.
            assert (
                1e-4 < setting["lr"] < 100
                and 0 <= setting["momentum"] < 1
                and setting["batch_size"] in (16, 32, 64, 128, 256)
            )
            key = search_robust.setting_key(s["task"], setting)
            assert str(report["eval_seeds"][0]) in cache[key]
        reached = s["within"]["0.1"]["epochs"]
        assert reached == math.inf or reached == pytest.approx(before + 1.0)
    for task, row in report["range_tests"].items():
        # Counted as trained: 100 batches at the file's batch size 64, each epoch's last batch the remainder.
        (tested,) = [s["range_test"] for s in searches if s["task"] == task and "range_test" in s]
        size = search_robust.n_train(task)
        epoch = [64] * (size // 64) + ([size % 64] if size % 64 else [])
        assert tested["batches"] == 100 and tested["examples"] == sum((epoch * 100)[:100])
        assert tested["epochs"] == pytest.approx(tested["examples"] / size)
        assert row["bounds"] == [[0, tested["low"], tested["high"]]] and tested["low"] <= tested["high"]
    rows = (tmp_path / "search_robust_quick.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * len(searches)
    assert (tmp_path / "search_robust_quick.png").stat().st_size > 0
    capsys.readouterr()

    # Run again with --resume: nothing left to search or evaluate, the same tables.
    assert search_robust.main([*argv, "--resume"]) == 0
    assert f"0 searches ({len(searches)} done before)" in capsys.readouterr().out
    again = json.loads((tmp_path / "search_robust_quick.json").read_text())
    assert again["tables"] == report["tables"]


def test_search_robust_rejects_bad_arguments(search_robust, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        search_robust.main(["--reduction-factor", "1"])
    assert exc.value.code == 2
    assert "`--reduction-factor` must be >= 2, but got reduction_factor=1." in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        search_robust.main(["--report-only", "--quick", "--out-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "`--report-only` needs the searches of an earlier run, but neither" in capsys.readouterr().err


def _robust_run(directory: Path, budget: float, reference: float, reached: dict[tuple[str, int], float]) -> Path:
    """A finished run's JSON with searches that got within 2% at ``reached[(method, seed)]`` epochs."""
    directory.mkdir(parents=True)
    searches = [
        {"task": "t", "method": method, "seed": seed, "within": {"0.02": {"epochs": epochs, "wall_s": epochs}}}
        for (method, seed), epochs in reached.items()
    ]
    run = {"settings": {"budget_epochs": budget}, "reference": {"t": reference}, "searches": searches}
    (directory / "search_robust.json").write_text(json.dumps(run))
    return directory


def test_search_robust_pools_runs_on_other_seeds_as_paired_searches(search_robust, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(search_robust, "TOLERANCES", (0.02,))
    inf = math.inf
    first = _robust_run(
        tmp_path / "a",
        160,
        1.0,
        {("optuna", 0): 40, ("lightopt-sh", 0): 20, ("optuna", 1): inf, ("lightopt-sh", 1): inf},
    )
    second = _robust_run(  # the held-out set reuses seed numbers of its own: still separate pairs
        tmp_path / "b", 160, 2.0, {("optuna", 0): 60, ("lightopt-sh", 0): 30, ("lightopt-sh", 1): 10}
    )
    out = tmp_path / "pooled"
    assert search_robust.main(["--pool", str(first), str(second), "--out-dir", str(out)]) == 0
    rows = json.loads((out / "search_robust_pooled.json").read_text())["tables"]["t 0.02"]
    assert rows["optuna"]["searches"] == 3 and rows["optuna"]["reached"] == 2  # b's seed 1 has no optuna search
    assert rows["lightopt-sh"]["searches"] == 4 and rows["lightopt-sh"]["reached"] == 3
    assert rows["lightopt-sh"]["epochs_median"] == pytest.approx(25.0)
    # paired: a:0 (40/20), a:1 (inf/inf), b:0 (60/30); medians 60 over 30
    assert rows["lightopt-sh"]["optuna_over_this"]["ratio"] == pytest.approx(2.0)
    assert "| lightopt-sh | 3/4 |" in capsys.readouterr().out
    _robust_run(tmp_path / "c", 80, 1.0, {("optuna", 0): 40})
    with pytest.raises(SystemExit) as exc:
        search_robust.main(["--pool", str(first), str(tmp_path / "c"), "--out-dir", str(out)])
    assert exc.value.code == 2
    assert "the runs have different budgets ([80, 160])" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        search_robust.main(["--pool", str(tmp_path / "none"), "--out-dir", str(out)])
    assert "does not exist; give the out-dir of a finished run." in capsys.readouterr().err


# benchmarks/recommend_seeds.py: `sweep best --seeds N --top K` against the search's own recommendation, at equal
# epochs, on a hand-made search (no training).

_SEEDS_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recommend_seeds.py"


@pytest.fixture(scope="module")
def recommend_seeds():
    yield from _load("recommend_seeds", _SEEDS_SCRIPT)


def test_recommend_seeds_mirrors_sweep_best_seeds_and_compares_at_equal_epochs(recommend_seeds):
    from lightopt.sweep.spec import trial_seed

    rs, robust = recommend_seeds, recommend_seeds.robust
    lucky, steady, third, late = (
        {"lr": 0.5, "momentum": 0.5, "batch_size": 16},
        {"lr": 0.1, "momentum": 0.9, "batch_size": 32},
        {"lr": 0.2, "momentum": 0.8, "batch_size": 64},
        {"lr": 0.3, "momentum": 0.7, "batch_size": 128},
    )

    def trial(number, epochs, state, value, own, setting):
        return {
            "number": number,
            "epochs": epochs,
            "state": state,
            "value": value,
            "own": own,
            "setting": setting,
            "trial_seed": 100 + number,
        }

    trials = [
        trial(0, 4.0, "COMPLETE", 1.3, third, third),
        trial(1, 5.0, "PRUNED", 0.1, late, third),  # pruned: never a candidate, whatever its value
        trial(2, 9.0, "COMPLETE", 1.0, lucky, lucky),  # the best value, a lucky seed
        trial(3, 13.0, "COMPLETE", 1.1, steady, lucky),
        trial(4, 30.0, "COMPLETE", 0.5, late, late),  # after B + C = 12 + 2 * 1 * 4 = 20: not plain's
    ]
    # The top K = 2 COMPLETE trials by value after B = 12 epochs (trial 3 finishes at 13).
    assert [t["number"] for t in rs.candidates_at(trials, 12.0, 2)] == [2, 0]
    assert [t["number"] for t in rs.candidates_at(trials, 13.0, 2)] == [2, 3]
    assert rs.other_seeds(102, 2) == [trial_seed(102, 1), trial_seed(102, 2)]
    evaluations = {
        robust.setting_key("t", lucky): {str(s): 1.6 for s in rs.other_seeds(102, 1)} | {"7": 1.5, "8": 1.5},
        robust.setting_key("t", third): {str(s): 1.2 for s in rs.other_seeds(100, 1)} | {"7": 1.1, "8": 1.3},
    }
    # The trial's own value counts: lucky's mean (1.0 + 1.6) / 2 = 1.3 loses to third's (1.3 + 1.2) / 2 = 1.25.
    chosen = rs.lever("t", trials, 12.0, 0, 2, 1, evaluations)
    assert chosen["number"] == 0 and chosen["setting"] == third
    assert [c["mean"] for c in chosen["candidates"]] == [pytest.approx(1.3), pytest.approx(1.25)]

    run = {
        "eval_seeds": [7, 8],
        "reference": {"t": 1.0},
        "settings": {"budget_epochs": 40.0, "out_dir": "r"},
    }
    search = {
        "task": "t",
        "method": "lightopt-sh",
        "seed": "0",
        "run": {"max_epochs": 4},
        "trials": [{k: t[k] for k in ("epochs", "state", "setting")} for t in trials],
        "scores": [
            [t["epochs"], 0.0, {"third": 1.2, "lucky": 1.5, "late": 1.05}[name]]
            for t, name in zip(trials, ("third", "third", "lucky", "lucky", "late"))
        ],
    }
    row = rs.compare(run, search, {"trials": trials}, 12.0, 2, 1, evaluations)
    # Plain gets B + C = 12 + 8 epochs: its recommendation then is lucky's (trial 3 finished at 13), 50% above.
    assert row["retrain_epochs"] == 8.0 and row["plain_epochs"] == 13.0 and not row["plain_capped"]
    assert row["plain_excess"] == pytest.approx(50.0) and row["lever_excess"] == pytest.approx(20.0)
    assert row["same_setting"] is False
    assert row["at_b_excess"] == pytest.approx(50.0)  # its own recommendation at B = 12 was already lucky's (trial 2)
    capped = rs.compare(
        {**run, "settings": {**run["settings"], "budget_epochs": 10.0}},
        search,
        {"trials": trials},
        12.0,
        2,
        1,
        evaluations,
    )
    assert capped["plain_capped"] and capped["plain_epochs"] == 9.0  # the budget's last point, fewer epochs
    # A failed (non-finite) run puts its candidate behind every candidate without one, whatever its mean.
    broken = {**evaluations, robust.setting_key("t", third): {str(trial_seed(100, 1)): math.inf, "7": 1.0, "8": 1.0}}
    assert rs.lever("t", trials, 12.0, 0, 2, 1, broken)["number"] == 2

    table = rs.summarize([row, {**row, "plain_excess": 1.0, "lever_excess": 4.0}])["t lightopt-sh B=12"]
    assert table["plain_within_0.02"] == 1 and table["lever_within_0.05"] == 1 and table["lever_within_0.1"] == 1
    assert table["plain_excess_median"] == pytest.approx(25.5) and table["lever_excess_median"] == pytest.approx(12.0)
    diff = table["difference"]
    assert diff["median"] == pytest.approx(-13.5) and (diff["lever_better"], diff["plain_better"]) == (1, 1)
    assert diff["median_ci95"][0] == pytest.approx(-30.0) and diff["median_ci95"][1] == pytest.approx(3.0)
