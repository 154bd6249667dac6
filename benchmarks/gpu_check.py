"""lightopt's GPU paths on a machine with NVIDIA GPUs: device sweeps, out of memory, mixed precision, NaN checks.

About 5 minutes on one H100 or H200 with 16 cores. From the repository root::

    python benchmarks/gpu_check.py --out "$OUT"          # everything below
    python benchmarks/gpu_check.py --out /tmp/g --only sweep,oom
    python benchmarks/gpu_check.py --out /tmp/g --accelerator cpu   # the script's own smoke run, no GPU

Needs lightopt's dependencies (optuna, jsonargparse; torch, lightning, tensorboard and scikit-learn
are usually there); a missing one is named in one line and the script exits with code 2. Writes
``gpu_check.json`` (every measurement, the machine, each part's pass or fail), ``gpu_check.md``
(the summary), ``gpu_check.log`` (each part's output) and ``optim_step_cuda.json`` into ``--out``.
Exit code 0 when every part passed, 1 otherwise.

Parts:

``sweep``
    ``lightopt sweep run`` of a digits sweep on the GPU with ``--devices auto --trials-per-device 2``
    (one GPU: 2 workers share it; N GPUs: 2N workers). Each trial records its
    ``CUDA_VISIBLE_DEVICES``, process, start and end (tests.sweep.device_helpers.RecordingMLP).
    Passes when no id ever holds more than 2 trials, every id is used, the workers ran at once,
    and every trial is complete with its ``device`` attribute.
``ddp`` (2 GPUs or more)
    2-device DDP trials with ``--devices auto``: each trial's ranks see its pair of ids.
``oom``
    ``--devices 0`` (plus ``1`` with 2 GPUs): trial 0 allocates its GPU in 1 GiB blocks until CUDA
    really runs out of memory. Passes when it is recorded failed with an out-of-memory reason, the
    next trial of that worker starts with the cache returned (little memory reserved) and
    completes, and the other device's trials all complete.
``precision``
    Each first-order optimizer fitted on CUDA under ``bf16-mixed`` and ``16-mixed`` (Lightning's
    GradScaler), against the ``torch.optim`` optimizer it equals (largest parameter difference);
    RMSProp, which has no torch twin, must train; Nesterov ``mode='interim'`` must give its
    one-line ValueError under 16-mixed. Records the kernel path each took (foreach, fused).
``nan``
    lightopt's ``LossCheck`` on CUDA: a loss that turns NaN at step 7 must stop the fit by step 50
    (the check's cadence off the CPU, without a host sync per step); where the optimizers have their
    own check (``check_finite_every``), the step at which it alone stops the same fit; and the time
    per step with no check, each check at its default cadence, and ``LossCheck`` every step.
``optim_step``
    ``benchmarks/optim_step.py --device cuda --quick``: lightopt's ``optimizer.step()`` against
    ``torch.optim`` on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("sweep", "ddp", "oom", "precision", "nan", "optim_step")
NEEDED = ("torch", "lightning", "optuna", "jsonargparse", "tensorboard", "sklearn", "yaml")
ACCELERATOR = "gpu"  # --accelerator cpu: the same parts on the CPU (GPU-only checks skipped), to test this script


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- sweeps through the real command ------------------------------------------------------------


def _sweep_file(work: Path, name: str, n_trials: int, trainer: dict[str, Any], **model_args: Any) -> tuple[Path, Path]:
    import yaml

    record = work / f"{name}.jsonl"
    data = {
        "study": {
            "name": name,
            "n_trials": n_trials,
            "sampler": {"name": "random", "seed": 0},
            "pruner": "none",
            "log_dir": str(work / "runs"),
            "stop_after_same_failures": 0,
        },
        "model": {
            "class_path": "tests.sweep.device_helpers.RecordingMLP",
            "init_args": {"hidden": 256, "record_file": str(record), **model_args},
        },
        "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 64}},
        "trainer": {"max_epochs": 3, "accelerator": ACCELERATOR, "devices": 1, **trainer},
        "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
        "search": {"optimizer.init_args.lr": {"low": 0.01, "high": 0.5, "log": True}},
    }
    file = work / f"{name}.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    return file, record


def _run_sweep(file: Path, log: io.TextIOBase, *args: str, timeout: float = 240) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "lightopt", "sweep", "run", str(file), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.perf_counter() - started
    log.write(
        f"$ lightopt sweep run {file.name} {' '.join(args)}  (exit {proc.returncode}, {seconds:.1f} s)\n"
        f"{proc.stdout}{proc.stderr}\n"
    )
    return proc.returncode, proc.stdout, seconds


def _trials(work: Path, name: str) -> list[Any]:
    import optuna

    journal = work / "runs" / name / "study.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage).trials


def _records(path: Path) -> list[dict[str, Any]]:
    from tests.sweep.device_helpers import records

    return records(path) if path.is_file() else []


def part_sweep(work: Path, log: io.TextIOBase, gpus: int) -> dict[str, Any]:
    from tests.sweep.device_helpers import most_at_once

    workers = 2 * gpus
    file, record = _sweep_file(work, "per_device", 3 * workers, {}, wait_for=workers)
    devices = "auto" if ACCELERATOR == "gpu" else "0"
    code, out, seconds = _run_sweep(file, log, "--devices", devices, "--trials-per-device", "2")
    check(code == 0, f"the sweep exited with code {code}")
    seen = _records(record)
    by_id: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in seen:
        by_id[r["visible"]].append((r["start"], r["end"]))
    per_id = {device: most_at_once(spans) for device, spans in by_id.items()}
    trials = _trials(work, "per_device")
    result = {
        "seconds": round(seconds, 1),
        "trials": len(trials),
        "workers": len({r["pid"] for r in seen}),
        "most_at_once_per_id": per_id,
        "most_at_once": most_at_once([(r["start"], r["end"]) for r in seen]),
        "gpu": seen[0]["gpu"] if seen else None,
        "progress_lines": [line for line in out.splitlines() if line.startswith("[")][:4],
    }
    check(len(by_id) == gpus, f"ids used {sorted(by_id)}, expected {gpus}")
    check(max(per_id.values()) <= 2, f"more than 2 trials on one id: {per_id}")
    check(result["most_at_once"] == workers, f"the {workers} workers never all ran at once")
    check(all(t.state.name == "COMPLETE" for t in trials), "a trial did not complete")
    check(all(t.user_attrs.get("device") in by_id for t in trials), "a trial lacks its device attribute")
    check(ACCELERATOR == "cpu" or all(r["gpu"] for r in seen), "a trial did not train on the GPU")
    return result


def part_ddp(work: Path, log: io.TextIOBase, gpus: int) -> dict[str, Any]:
    if gpus < 2:
        return {"skipped": f"{gpus} GPU: DDP trials need 2"}
    file, record = _sweep_file(work, "ddp", gpus, {"strategy": "ddp", "devices": 2}, wait_for=gpus // 2)
    code, _, seconds = _run_sweep(file, log, "--devices", ",".join(str(i) for i in range(gpus - gpus % 2)))
    check(code == 0, f"the sweep exited with code {code}")
    seen = _records(record)
    groups = sorted({r["visible"] for r in seen})
    trials = _trials(work, "ddp")
    check(all(t.state.name == "COMPLETE" for t in trials), "a DDP trial did not complete")
    check(all(len(r["visible"].split(",")) == 2 for r in seen), f"a rank saw other than 2 ids: {groups}")
    return {"seconds": round(seconds, 1), "groups": groups, "ranks": len(seen)}


def part_oom(work: Path, log: io.TextIOBase, gpus: int) -> dict[str, Any]:
    if ACCELERATOR != "gpu":
        return {"skipped": "a real out-of-memory needs a GPU"}
    devices = "0,1" if gpus >= 2 else "0"
    file, record = _sweep_file(work, "oom", 6 if gpus >= 2 else 3, {}, fill_on="trial_0000")
    code, _out, seconds = _run_sweep(file, log, "--devices", devices)
    check(code == 0, f"the sweep exited with code {code}")
    trials = _trials(work, "oom")
    seen = _records(record)
    filled = next((r for r in seen if r.get("error") == "OutOfMemoryError"), None)
    check(filled is not None, "trial 0 never ran out of memory")
    check(
        trials[0].state.name == "FAIL" and "out of memory" in trials[0].user_attrs.get("fail_reason", ""),
        f"trial 0: {trials[0].state.name} {trials[0].user_attrs.get('fail_reason')}",
    )
    same_worker = [r for r in seen if r["pid"] == filled["pid"] and r["start"] > filled["end"]]
    check(bool(same_worker), "the worker that ran out of memory ran no further trial")
    after = same_worker[0]
    check(after["reserved_at_start"] < 2**30, f"{after['reserved_at_start']} bytes still reserved after the OOM trial")
    check(all(t.state.name == "COMPLETE" for t in trials[1:]), "a trial after the OOM one did not complete")
    return {
        "seconds": round(seconds, 1),
        "filled_gib": filled.get("filled_gib"),
        "reserved_when_full_gib": round(filled.get("reserved_when_full", 0) / 2**30, 1),
        "reserved_at_next_start_mib": round(after["reserved_at_start"] / 2**20, 1),
        "fail_reason": trials[0].user_attrs.get("fail_reason"),
        "devices": sorted({t.user_attrs.get("device") for t in trials}),
    }


# --- fits in this process -----------------------------------------------------------------------


def _regression(make_optimizer: Any, nan_at: int | None = None) -> Any:
    """A 64-256-1 MLP regression; with ``nan_at``, its loss turns NaN from that step on."""
    import lightning as L
    import torch

    class Regression(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1))
            self.losses: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x).float(), y)
            if nan_at is not None and self.global_step >= nan_at:
                return loss * float("nan")  # no host read here: that would sync every step
            self.losses.append(loss.detach())  # read at the end: no host sync per step
            return loss

        def configure_optimizers(self) -> Any:
            return make_optimizer(self.parameters())

    return Regression()


def _loader(batch_size: int = 128) -> Any:
    import torch

    x = torch.randn(1024, 64, generator=torch.Generator().manual_seed(0))
    y = x @ torch.linspace(-1, 1, 64).unsqueeze(1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def _fit(module: Any, precision: str, steps: int, callbacks: list[Any] | None = None, batch_size: int = 128) -> Any:
    import lightning as L

    from lightopt.sweep.trial import quiet_lightning

    with quiet_lightning():
        trainer = L.Trainer(
            max_steps=steps,
            accelerator=ACCELERATOR,
            devices=1,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks or [],
        )
        trainer.fit(module, _loader(batch_size))
    return trainer


def _path(optimizer: Any) -> str:
    group = optimizer.param_groups[0]
    return f"foreach={group.get('foreach')} fused={group.get('fused')}"


def part_precision(work: Path, log: io.TextIOBase, gpus: int) -> dict[str, Any]:
    import torch

    from lightopt.optim import SGD, AdaGrad, Adam, RMSProp

    pairs = {
        "SGD": (lambda p: SGD(p, lr=0.01), lambda p: torch.optim.SGD(p, lr=0.01)),
        "SGD momentum": (lambda p: SGD(p, lr=0.01, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
        "SGD Nesterov": (
            lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True),
            lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True),
        ),
        "AdaGrad": (lambda p: AdaGrad(p, lr=0.05, eps=1e-7), lambda p: torch.optim.Adagrad(p, lr=0.05, eps=1e-7)),
        "Adam": (lambda p: Adam(p, lr=0.003), lambda p: torch.optim.Adam(p, lr=0.003)),
        "RMSProp": (lambda p: RMSProp(p, lr=0.003), None),
        "RMSProp Nesterov": (lambda p: RMSProp(p, lr=0.003, momentum=0.9, nesterov=True), None),
    }
    rows, failures = [], []
    for precision in ("bf16-mixed", "16-mixed"):
        for name, (ours, theirs) in pairs.items():
            module = _regression(ours)
            trainer = _fit(module, precision, 40)
            row = {
                "optimizer": name,
                "precision": precision,
                "path": _path(trainer.optimizers[0]),
                "first_loss": float(module.losses[0]),
                "last_loss": float(module.losses[-1]),
            }
            if theirs is not None:
                reference = _regression(theirs)
                _fit(reference, precision, 40)
                row["max_param_diff"] = max(
                    float((p - q).abs().max()) for p, q in zip(module.parameters(), reference.parameters())
                )
                if row["max_param_diff"] > 1e-4:
                    failures.append(f"{name} {precision}: differs from torch by {row['max_param_diff']:.2e}")
            if not row["last_loss"] < row["first_loss"]:
                failures.append(f"{name} {precision}: the loss did not go down")
            rows.append(row)
            log.write(json.dumps(row) + "\n")
    interim = {}
    for optimizer in (SGD, RMSProp):
        try:
            _fit(
                _regression(lambda p, o=optimizer: o(p, lr=0.01, momentum=0.9, nesterov=True, mode="interim")),
                "16-mixed",
                5,
            )
            interim[optimizer.__name__] = "no error"
            if ACCELERATOR == "gpu":  # Lightning gives 16-mixed a GradScaler on CUDA only
                failures.append(f"{optimizer.__name__} interim under 16-mixed raised nothing")
        except ValueError as error:
            interim[optimizer.__name__] = str(error)
    check(not failures, "; ".join(failures))
    return {"fits": rows, "interim_under_16_mixed": interim}


def _sgd(**kwargs: Any) -> Any:
    """lightopt's SGD(lr=0.01); ``check_finite_every`` is passed only where the optimizer has that check."""
    import inspect

    from lightopt.optim import SGD

    if "check_finite_every" in kwargs and "check_finite_every" not in inspect.signature(SGD).parameters:
        kwargs.pop("check_finite_every")
    return lambda p: SGD(p, lr=0.01, **kwargs)


def _stops_at(make_optimizer: Any, callbacks: list[Any]) -> dict[str, Any]:
    """Fit a loss that turns NaN at step 7 (128 steps per epoch, no validation): the step and error that stopped it."""
    module = _regression(make_optimizer, nan_at=7)
    try:
        _fit(module, "32-true", 400, callbacks, batch_size=8)
        error = None
    except Exception as caught:
        error = f"{type(caught).__name__}: {str(caught).splitlines()[0][:200]}"
    return {"stopped_at_step": int(module.global_step), "error": error}


def part_nan(work: Path, log: io.TextIOBase, gpus: int) -> dict[str, Any]:
    import inspect

    from lightopt.optim import SGD
    from lightopt.sweep.trial import LossCheck

    has_own_check = "check_finite_every" in inspect.signature(SGD).parameters
    result: dict[str, Any] = {"loss_check": _stops_at(_sgd(check_finite_every=0), [LossCheck()])}
    stop = result["loss_check"]
    check(stop["error"] is not None and "NonFiniteLossError" in stop["error"], f"LossCheck did not stop it: {stop}")
    check(7 <= stop["stopped_at_step"] <= 51, f"LossCheck stopped at step {stop['stopped_at_step']}, expected 7..51")
    if has_own_check:  # the optimizer's own check at its default cadence, without LossCheck
        result["optimizer_check"] = _stops_at(_sgd(), [])
        check(result["optimizer_check"]["error"] is not None, "the optimizer's check did not stop a NaN fit")

    timings = {}
    steps = 400 if ACCELERATOR == "gpu" else 20
    arms = [
        ("no check", _sgd(check_finite_every=0), []),
        ("LossCheck() default", _sgd(check_finite_every=0), [LossCheck()]),
        ("LossCheck(every=1)", _sgd(check_finite_every=0), [LossCheck(every=1)]),
    ]
    if has_own_check:
        arms.append(("optimizer's check, default", _sgd(), []))
    for label, make, callbacks in arms:
        module = _regression(make)
        _fit(module, "32-true", 20, callbacks)  # warm-up
        _synchronize()
        start = time.perf_counter()
        _fit(module, "32-true", steps, callbacks)
        _synchronize()
        timings[label] = round((time.perf_counter() - start) / steps * 1e3, 3)
    result["ms_per_step"] = timings
    return result


def _synchronize() -> None:
    import torch

    if ACCELERATOR == "gpu":
        torch.cuda.synchronize()


def part_optim_step(work: Path, log: io.TextIOBase, gpus: int, out: Path) -> dict[str, Any]:
    target = out / "optim_step_cuda.json"
    device = "cuda" if ACCELERATOR == "gpu" else "cpu"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "optim_step.py"),
            "--device",
            device,
            "--quick",
            "--json",
            str(target),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log.write(proc.stdout + proc.stderr)
    check(proc.returncode == 0, f"optim_step.py exited with code {proc.returncode}")
    return {"table": proc.stdout.strip().splitlines()[-40:], "json": target.name}


# --- the run --------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cores": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()
        )
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, .md and .log")
    parser.add_argument("--only", help=f"comma-separated parts (default all): {','.join(PARTS)}")
    parser.add_argument(
        "--accelerator",
        choices=("gpu", "cpu"),
        default="gpu",
        help="cpu: a smoke run of this script on the CPU, GPU-only checks skipped (default gpu)",
    )
    args = parser.parse_args(argv)
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"error: missing Python packages {', '.join(missing)}: install lightopt's dependencies first "
            f"(pip install -e .[examples]), or carry them as wheels",
            file=sys.stderr,
        )
        return 2
    parts = PARTS if not args.only else tuple(p.strip() for p in args.only.split(","))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    sys.path.insert(0, str(ROOT))
    import torch

    if ACCELERATOR == "gpu" and not torch.cuda.is_available():
        print("error: torch sees no GPU here: run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"lightopt_gpu_check_{os.getpid()}"
    work.mkdir(parents=True)
    gpus = torch.cuda.device_count() if ACCELERATOR == "gpu" else 1
    results: dict[str, Any] = {"machine": _machine(), "parts": {}}
    with open(out / "gpu_check.log", "w", encoding="utf-8") as log:
        for part in parts:
            started = time.perf_counter()
            print(f"== {part}", flush=True)
            try:
                function = globals()[f"part_{part}"]
                result = function(work, log, gpus, out) if part == "optim_step" else function(work, log, gpus)
                status = "skipped" if "skipped" in result else "pass"
            except Exception as error:
                result = {"error": f"{type(error).__name__}: {error}"}
                log.write(traceback.format_exc())
                status = "FAIL"
            result.update(status=status, wall_s=round(time.perf_counter() - started, 1))
            results["parts"][part] = result
            print(
                f"   {status} in {result['wall_s']} s: "
                + json.dumps({k: v for k, v in result.items() if k not in ("fits", "table", "status", "wall_s")})[:600],
                flush=True,
            )
            log.flush()
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    lines = [
        f"# gpu_check on {', '.join(results['machine']['gpus']) or 'the CPU'} "
        f"(torch {results['machine']['torch']}, CUDA "
        f"{results['machine']['cuda']}, {results['machine']['cores']} cores)",
        "",
    ]
    for part, result in results["parts"].items():
        lines.append(f"- **{part}**: {result['status']} ({result['wall_s']} s)")
    fits = results["parts"].get("precision", {}).get("fits", [])
    if fits:
        lines += [
            "",
            "| optimizer | precision | path | loss first -> last | max diff vs torch |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['optimizer']} | {r['precision']} | {r['path']} | {r['first_loss']:.4g} -> {r['last_loss']:.4g} "
            f"| {r.get('max_param_diff', '-')} |"
            for r in fits
        ]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["status"] != "FAIL" for r in results["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
