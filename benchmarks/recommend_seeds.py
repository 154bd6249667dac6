"""Does ``lightopt sweep best --seeds N --top K`` recommend better settings than the search alone, at equal epochs?

``sweep best --seeds N --top K`` trains the top ``K`` COMPLETE trials of a study (by value, ties the
lower number: ``lightopt.sweep.store.top_trials``) with ``N`` other seeds each, the seeds
``trial_seed(the trial's seed, i)``, i = 1..N, counts the trial's own value as the run of its own
seed and recommends the best mean over the ``N + 1`` runs (fewest failed runs first, then the mean,
then the lower trial number). That re-training costs ``C = K * N * max_epochs`` epochs. Here, for
each search of finished ``search_robust.py`` runs and each budget point ``B``:

* **plain**: the search's own recommendation after ``B + C`` epochs (the last trial finished by
  then, read from the run's recorded trajectory), so that both arms spend the same epochs;
* **lever**: the search's state after ``B`` epochs (trials finished by then), its top ``K`` trials
  re-trained with ``N`` seeds each by ``search_robust.evaluate`` (full training, each run scored by
  its best validation round, as lightopt scores a trial), the recommendation chosen by the rule
  above.

Both are scored as ``search_robust.py`` scores a recommendation: the mean validation loss over the
run's 10 evaluation seeds, reported as the excess over that run's reference. Where ``B + C`` is past
the run's budget, plain gets the run's last point within the budget (fewer epochs than the lever:
that favours the lever) and the row says so. A search's trials are not in ``search_robust.json``
(only its recommendations), so each search is run again to ``B`` epochs with the same seed
(``run_search(..., detail=True)``; deterministic on CPU, and checked: its recommendations must be
the recorded ones). The searches run again are kept in ``OUT_DIR/searches.json``; every training
run (the lever's seeds, the evaluation seeds of a new recommendation) goes into
``search_robust_cache.json``, so a rerun trains nothing new.

Usage::

    python benchmarks/recommend_seeds.py [--seeds-n 3] [--top 3] [--workers 2]
        [--points digits=40,80,160 noisy=40,80,124] [--methods lightopt-sh optuna]
    python benchmarks/recommend_seeds.py --report-only   # the tables again from OUT_DIR, training nothing
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE.parent), str(_HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import search_robust as robust  # noqa: E402
from _measure import machine_info  # noqa: E402

from lightopt.sweep.readback import SeedCandidate, best_by_mean  # noqa: E402
from lightopt.sweep.spec import trial_seed  # noqa: E402
from lightopt.sweep.store import top_trials  # noqa: E402

RESULTS = _HERE / "results"
#: The finished search_robust runs: (task, run directory). Their searches, evaluation seeds and references.
RUNS = (
    ("digits", "search_robust_digits320_eval10"),
    ("digits", "search_robust_digits320_eval10/heldout"),
    ("digits", "search_robust_digits320_eval10/set3"),
    ("noisy", "search_robust_noisy160_eval10"),
    ("noisy", "search_robust_noisy160_eval10/heldout"),
    ("noisy", "search_robust_noisy160_eval10/set3"),
)
#: Budget points B per task: B + 36 (K = N = 3) stays within the runs' budgets (320 and 160 epochs).
POINTS = {"digits": (40.0, 80.0, 160.0), "noisy": (40.0, 80.0, 124.0)}


# --- the rule of `sweep best --seeds N --top K` ---------------------------------------------------


def snapshot(trials: Sequence[dict[str, Any]], budget: float) -> list[dict[str, Any]]:
    """The trials a search had finished after ``budget`` epochs (its recommendation there is the last one's)."""
    return [t for t in trials if t["epochs"] <= budget]


def candidates_at(trials: Sequence[dict[str, Any]], budget: float, top: int) -> list[dict[str, Any]]:
    """The ``top`` trials ``sweep best --seeds`` would train after ``budget`` epochs, best first.

    The trials go into an in-memory study and ``lightopt.sweep.store.top_trials`` picks them, as the
    command does (COMPLETE trials with a value, by value, ties the lower number).
    """
    study = optuna.create_study(direction="minimize")
    by_number = {}
    for t in snapshot(trials, budget):
        if t["state"] != "COMPLETE" or t["value"] is None:
            continue
        by_number[t["number"]] = t
        study.add_trial(optuna.trial.create_trial(value=t["value"], user_attrs={"number": t["number"]}))
    return [by_number[frozen.user_attrs["number"]] for frozen in top_trials(study, top)]


def other_seeds(own_seed: int, n: int) -> list[int]:
    """The seeds ``sweep best --seeds n`` trains a trial with: ``trial_seed(its recorded seed, i)``, i = 1..n."""
    return [trial_seed(own_seed, i) for i in range(1, n + 1)]


def own_seed(trial: dict[str, Any], search_seed: int) -> int:
    """The seed a trial was trained with: lightopt's recorded one; the optuna method's ``trial_seed(seed, number)``."""
    return int(trial["trial_seed"]) if trial.get("trial_seed") is not None else trial_seed(search_seed, trial["number"])


def choose(candidates: Sequence[SeedCandidate]) -> SeedCandidate:
    """The recommendation of ``sweep best --seeds`` among ``candidates`` (a loss: lower is better).

    Example:
        >>> from optuna.trial import create_trial
        >>> a, b = create_trial(value=1.0), create_trial(value=1.2)
        >>> a.number, b.number = 0, 1
        >>> choose([SeedCandidate(a, ((1, 1.0), (2, 1.6))), SeedCandidate(b, ((1, 1.2), (2, 1.2)))]).trial.number
        1
    """
    return best_by_mean(candidates, minimize=True)


def lever(
    task: str,
    trials: Sequence[dict[str, Any]],
    budget: float,
    search_seed: int,
    top: int,
    n: int,
    evaluations: dict[str, dict[str, float]],
) -> dict[str, Any] | None:
    """The lever after ``budget`` epochs: its candidates, their runs and the setting recommended (None: no trial
    complete yet, where the command stops with an error). Each run's loss comes from ``evaluations``; a
    non-finite one is a failed run, as the command shows and does not count."""
    chosen_from = []
    for t in candidates_at(trials, budget, top):
        seed = own_seed(t, search_seed)
        frozen = optuna.trial.create_trial(value=t["value"])
        frozen.number = t["number"]
        runs, failed = [(seed, float(t["value"]))], []
        have = evaluations.get(robust.setting_key(task, t["own"]), {})
        for s in other_seeds(seed, n):
            loss = have[str(s)]
            if math.isfinite(loss):
                runs.append((s, loss))
            else:
                failed.append((s, "non-finite"))
        chosen_from.append((SeedCandidate(frozen, tuple(runs), tuple(failed)), t))
    if not chosen_from:
        return None
    picked = choose([c for c, _ in chosen_from])
    return {
        "candidates": [
            {"number": c.trial.number, "setting": t["own"], "mean": c.mean, "runs": c.n} for c, t in chosen_from
        ],
        "number": picked.trial.number,
        "setting": next(t["own"] for c, t in chosen_from if c is picked),
    }


def plain_at(scores: Sequence[Sequence[float]], epochs: float, budget: float) -> tuple[float, float, bool]:
    """``(epochs, score)`` of the last recorded point at or before ``epochs`` (``budget`` if that is past it), and
    whether it was capped; ``(0, inf)`` when none.

    Example:
        >>> plain_at([[4, 1, 2.0], [9, 2, 1.5], [15, 3, 1.2]], 10, 100)
        (9, 1.5, False)
        >>> plain_at([[4, 1, 2.0], [9, 2, 1.5], [15, 3, 1.2]], 20, 12)
        (9, 1.5, True)
    """
    capped = epochs > budget
    limit = min(epochs, budget)
    found = (0.0, math.inf)
    for spent, _, value in scores:
        if spent > limit:
            break
        found = (spent, value)
    return found[0], found[1], capped


# --- statistics -------------------------------------------------------------------------------------


def paired_difference(plain: Sequence[float], lever_: Sequence[float], resamples: int = 2000) -> dict[str, Any]:
    """Lever minus plain (excess, in points of %), median and mean, each with a bootstrap 95% interval over pairs.

    Pairs where both are infinite are left out (counted); one infinite side gives an infinite difference.

    Example:
        >>> d = paired_difference([5.0, 4.0, 6.0], [3.0, 3.0, 3.0])
        >>> d["median"], d["mean"], d["lever_better"], d["pairs"]
        (-2.0, -2.0, 3, 3)
    """
    diffs = [b - a for a, b in zip(plain, lever_, strict=True) if math.isfinite(a) or math.isfinite(b)]
    out: dict[str, Any] = {
        "pairs": len(diffs),
        "left_out": len(plain) - len(diffs),
        "lever_better": sum(d < 0 for d in diffs),
        "plain_better": sum(d > 0 for d in diffs),
    }
    if not diffs:
        return {**out, "median": math.nan, "mean": math.nan, "median_ci95": [math.nan] * 2, "mean_ci95": [math.nan] * 2}
    values = np.array(diffs, dtype=float)
    rng = np.random.default_rng(0)
    samples = values[rng.integers(0, len(values), (resamples, len(values)))]
    with np.errstate(invalid="ignore"):
        medians, means = np.median(samples, axis=1), np.mean(samples, axis=1)
    out["median"], out["mean"] = float(np.median(values)), float(np.mean(values))
    out["median_ci95"] = [float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))]
    out["mean_ci95"] = [float(np.nanquantile(means, 0.025)), float(np.nanquantile(means, 0.975))]
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (task, method, B): searches, within 2/5/10% for plain and lever, median excesses, the paired difference."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(f"{row['task']} {row['method']} B={row['budget']:g}", []).append(row)
    table = {}
    for name, group in groups.items():
        plain, lev = [r["plain_excess"] for r in group], [r["lever_excess"] for r in group]
        table[name] = {
            "searches": len(group),
            "capped": sum(r["plain_capped"] for r in group),
            "same_setting": sum(r["same_setting"] for r in group),
            "plain_epochs_median": float(np.median([r["plain_epochs"] for r in group])),
            "retrain_epochs_median": float(np.median([r["retrain_epochs"] for r in group])),
            **{
                f"{arm}_within_{tol:g}": sum(v <= tol * 100 for v in values)
                for tol in robust.TOLERANCES
                for arm, values in (("plain", plain), ("lever", lev))
            },
            "plain_excess_median": float(np.median(plain)),
            "lever_excess_median": float(np.median(lev)),
            "difference": paired_difference(plain, lev),
            "at_b_excess_median": float(np.median([r["at_b_excess"] for r in group])),
            "selection": paired_difference([r["at_b_excess"] for r in group], lev),
        }
    return table


def _pct(value: float) -> str:
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value:+.1f}"


def format_table(table: dict[str, Any]) -> str:
    lines = [
        "| task, method, B | searches | plain at B+C (median epochs) | within 2% plain / lever | within 5% "
        "| within 10% | median excess % plain / lever | lever − plain, median [95% CI] | mean [95% CI] "
        "| lever better / worse / same setting | lever − own recommendation at B (no cost), median [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        d, e = row["difference"], row["selection"]
        capped = f", {row['capped']} capped" if row["capped"] else ""
        lines.append(
            f"| {name} | {row['searches']} | {row['plain_epochs_median']:.1f}{capped} "
            + "".join(f"| {row[f'plain_within_{t:g}']} / {row[f'lever_within_{t:g}']} " for t in robust.TOLERANCES)
            + f"| {_pct(row['plain_excess_median'])} / {_pct(row['lever_excess_median'])} "
            f"| {_pct(d['median'])} [{_pct(d['median_ci95'][0])}, {_pct(d['median_ci95'][1])}] "
            f"| {_pct(d['mean'])} [{_pct(d['mean_ci95'][0])}, {_pct(d['mean_ci95'][1])}] "
            f"| {d['lever_better']} / {d['plain_better']} / {row['same_setting']} "
            f"| {_pct(e['median'])} [{_pct(e['median_ci95'][0])}, {_pct(e['median_ci95'][1])}] |"
        )
    return "\n".join(lines)


# --- the driver ---------------------------------------------------------------------------------------


def compare(
    run: dict[str, Any],
    search: dict[str, Any],
    rerun: dict[str, Any],
    budget: float,
    top: int,
    n: int,
    evaluations: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """One search at one budget point: plain at B + C against the lever at B (the evaluations all present)."""
    task, eval_seeds = search["task"], run["eval_seeds"]
    reference = run["reference"][task]
    max_epochs = search["run"].get("max_epochs") or robust.TASKS[task]["max_epochs"]
    chosen = lever(task, rerun["trials"], budget, int(search["seed"]), top, n, evaluations)
    retrain = 0.0 if chosen is None else len(chosen["candidates"]) * n * max_epochs
    plain_epochs, plain_score, capped = plain_at(search["scores"], budget + retrain, run["settings"]["budget_epochs"])
    _, at_b_score, _ = plain_at(search["scores"], budget, run["settings"]["budget_epochs"])
    lever_score = (
        math.inf
        if chosen is None
        else robust.score(evaluations, robust.setting_key(task, chosen["setting"]), eval_seeds)
    )
    before = snapshot(search["trials"], plain_epochs)
    plain_setting = before[-1]["setting"] if before else None
    return {
        "task": task,
        "method": search["method"],
        "run": run["settings"]["out_dir"],
        "seed": int(search["seed"]),
        "budget": budget,
        "retrain_epochs": retrain,
        "plain_epochs": plain_epochs,
        "plain_capped": capped,
        "plain_setting": plain_setting,
        "plain_excess": (plain_score / reference - 1) * 100,
        "at_b_excess": (at_b_score / reference - 1) * 100,  # the search's own recommendation at B: no re-training
        "lever": chosen,
        "lever_excess": (lever_score / reference - 1) * 100,
        "same_setting": chosen is not None and plain_setting == chosen["setting"],
    }


def load_runs(names: Sequence[tuple[str, str]], methods: Sequence[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(run, search)`` for every search of ``methods`` in the finished runs."""
    found = []
    for _, name in names:
        run = json.loads((RESULTS / name / "search_robust.json").read_text(encoding="utf-8"))
        found += [(run, s) for s in run["searches"] if s["method"] in methods]
    return found


def search_id(run: dict[str, Any], search: dict[str, Any]) -> str:
    return f"{run['settings']['out_dir']}|{search['method']}|{search['seed']}"


def check_rerun(search: dict[str, Any], rerun: dict[str, Any]) -> int:
    """How many trials of the rerun differ from the recorded search (epochs or recommendation) up to its end."""
    return sum(
        abs(a["epochs"] - b["epochs"]) > 1e-6 or a["setting"] != b["setting"]
        for a, b in zip(rerun["trials"], search["trials"])
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds-n", type=int, default=3, help="N, the other seeds per trial (default 3)")
    parser.add_argument("--top", type=int, default=3, help="K, the top trials trained again (default 3, the CLI's)")
    parser.add_argument(
        "--points",
        nargs="+",
        metavar="TASK=B,B",
        help="budget points per task (default digits=40,80,160 noisy=40,80,124)",
    )
    parser.add_argument("--methods", nargs="+", default=["lightopt-sh"], choices=robust.METHODS)
    parser.add_argument("--tasks", nargs="+", default=list(robust.TASKS), choices=list(robust.TASKS))
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, 1 torch thread each (default 2)")
    parser.add_argument("--cache", default=str(RESULTS / "search_robust_cache.json"), help="the evaluation cache")
    parser.add_argument("--out-dir", default=str(RESULTS / "recommend_seeds"))
    parser.add_argument("--report-only", action="store_true", help="train nothing: fail if an evaluation is missing")
    return parser


def points_of(specs: Sequence[str] | None) -> dict[str, tuple[float, ...]]:
    if not specs:
        return dict(POINTS)
    points = dict(POINTS)
    for spec in specs:
        task, _, values = spec.partition("=")
        if task not in robust.TASKS or not values:
            raise ValueError(f"`--points` takes TASK=B,B,... with TASK one of {list(robust.TASKS)}; got {spec!r}.")
        points[task] = tuple(float(v) for v in values.split(","))
    return points


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.seeds_n < 1 or args.top < 1:
        parser.error(f"`--seeds-n` and `--top` must be >= 1, but got {args.seeds_n} and {args.top}.")
    try:
        points = points_of(args.points)
    except ValueError as error:
        parser.error(str(error))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the in-memory studies of candidates_at, one per point
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = robust.Cache(Path(args.cache))
    machine = machine_info(workers=args.workers)
    previous = out / "recommend_seeds.json"
    if args.report_only and previous.exists():  # the machine that trained, not the one that wrote the tables again
        machine = json.loads(previous.read_text(encoding="utf-8")).get("machine", machine)
    pairs = load_runs([r for r in RUNS if r[0] in args.tasks], args.methods)

    # 1. Each search again, to its largest budget point, with every trial's own setting and value.
    searches_path = out / "searches.json"
    reruns = json.loads(searches_path.read_text(encoding="utf-8")) if searches_path.exists() else {}
    jobs = []
    for run, search in pairs:
        wanted = max(points[search["task"]])
        have = reruns.get(search_id(run, search))
        if have is None or have["budget"] < wanted:
            r = search["run"]
            jobs.append(
                robust.make_job(
                    robust.run_search,
                    search["task"],
                    search["method"],
                    int(search["seed"]),
                    wanted,
                    None,
                    r.get("max_epochs"),
                    tuple(r.get("pruning", (1, 3))),
                    True,
                )
            )
            reruns.pop(search_id(run, search), None)
    if jobs and args.report_only:
        parser.error(f"`--report-only`: {len(jobs)} searches are not in {searches_path}; run without it first.")
    print(f"{len(jobs)} searches to run again ({len(pairs) - len(jobs)} kept)", flush=True)
    by_key = {(s["task"], s["method"], int(s["seed"])): (run, s) for run, s in pairs}

    def keep(result: dict[str, Any]) -> None:
        # search seeds are distinct across the runs of one task, so (task, method, seed) names the search
        run, search = by_key[(result["task"], result["method"], result["seed"])]
        reruns[search_id(run, search)] = {
            "budget": max(points[result["task"]]),
            "trials": result["trials"],
            "mismatched": check_rerun(search, result),
        }
        searches_path.write_text(json.dumps(reruns), encoding="utf-8")

    robust.run_pool(jobs, args.workers, keep)
    used = [search_id(run, search) for run, search in pairs]
    mismatched = {k: reruns[k]["mismatched"] for k in used if reruns[k]["mismatched"]}
    print(f"searches run again: {len(used)}, differing from the recorded ones: {len(mismatched)}", flush=True)

    # 2. The lever's runs (top K at each B, N seeds each), then the evaluation seeds of its recommendations.
    def missing_jobs(wanted: dict[str, tuple[str, dict[str, Any], set[int]]]) -> list:
        return [
            robust.make_job(robust.evaluate_many, task, setting, sorted(seeds))
            for task, setting, seeds in wanted.values()
            if seeds
        ]

    def need(wanted: dict, task: str, setting: dict[str, Any], seeds: Sequence[int]) -> None:
        key = robust.setting_key(task, setting)
        have = cache.evaluations.get(key, {})
        entry = wanted.setdefault(key, (task, setting, set()))
        entry[2].update(s for s in seeds if str(s) not in have)

    forbidden = {s for run, _ in pairs for s in run["eval_seeds"]}
    wanted: dict[str, tuple[str, dict[str, Any], set[int]]] = {}
    for run, search in pairs:
        trials = reruns[search_id(run, search)]["trials"]
        for budget in points[search["task"]]:
            for t in candidates_at(trials, budget, args.top):
                seeds = other_seeds(own_seed(t, int(search["seed"])), args.seeds_n)
                if forbidden & set(seeds):
                    raise RuntimeError(f"a lever seed is an evaluation seed: {sorted(forbidden & set(seeds))}")
                need(wanted, search["task"], t["own"], seeds)
    lever_jobs = missing_jobs(wanted)
    if lever_jobs and args.report_only:
        parser.error(f"`--report-only`: {len(lever_jobs)} settings lack lever runs in the cache.")
    print(f"lever runs: {sum(len(w[2]) for w in wanted.values())} to train", flush=True)
    robust.run_pool(lever_jobs, args.workers, lambda pair: cache.add({pair[0]: pair[1]}))

    wanted = {}
    for run, search in pairs:
        trials = reruns[search_id(run, search)]["trials"]
        for budget in points[search["task"]]:
            chosen = lever(
                search["task"], trials, budget, int(search["seed"]), args.top, args.seeds_n, cache.evaluations
            )
            if chosen is not None:
                need(wanted, search["task"], chosen["setting"], run["eval_seeds"])
    score_jobs = missing_jobs(wanted)
    if score_jobs and args.report_only:
        parser.error(f"`--report-only`: {len(score_jobs)} recommendations lack evaluation runs in the cache.")
    print(f"evaluation runs: {sum(len(w[2]) for w in wanted.values())} to train", flush=True)
    robust.run_pool(score_jobs, args.workers, lambda pair: cache.add({pair[0]: pair[1]}))

    # 3. The comparison.
    rows = [
        compare(run, search, reruns[search_id(run, search)], budget, args.top, args.seeds_n, cache.evaluations)
        for run, search in pairs
        for budget in points[search["task"]]
    ]
    table = summarize(rows)
    text = "\n".join(
        [
            f"sweep best --seeds {args.seeds_n} --top {args.top}: lever at B against plain at B + C "
            f"(C = the re-training's epochs), excess over each run's reference in %, {len(pairs)} searches",
            f"searches run again: {len(used)}, differing from the recorded ones: {len(mismatched)}",
            format_table(table),
            f"machine: {json.dumps(machine)}",
        ]
    )
    print(text, flush=True)
    report = {
        "settings": {
            "seeds_n": args.seeds_n,
            "top": args.top,
            "points": points,
            "methods": args.methods,
            "runs": [name for task, name in RUNS if task in args.tasks],
            "cache": args.cache,
        },
        "machine": machine,
        "mismatched_reruns": mismatched,
        "tables": table,
        "rows": rows,
    }
    (out / "recommend_seeds.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "recommend_seeds.log").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
