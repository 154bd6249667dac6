"""Time ``optimizer.step()`` of lightopt's first-order optimizers, with default arguments, against ``torch.optim``.

For every first-order optimizer (SGD with momentum, Nesterov, AdaGrad, RMSProp with and without
momentum, Adam; plain SGD too) the arms are: lightopt with default arguments; lightopt with its
NaN/inf checks off (``check_finite_every=0``), which prices the default checks; and the
``torch.optim`` optimizer of the same name with default arguments and on each of its kernel paths
(``foreach=False``, ``foreach=True``, ``fused=True`` where torch has it). All arms get copies of
the same synthetic parameters and the same random gradients, filled once: only ``step()`` is
timed, never a forward or backward pass. After a warm-up, each round times every arm for one
block of K steps, in a fresh random order per round (seeded), so that drift and load from other
jobs on the machine fall on all arms alike. Reported per optimizer: the median time per step of
each arm; lightopt's default against torch's default and against torch's fastest arm in this run
(the torch arm with the lowest median), as ratios of medians with paired bootstrap 95% intervals
over rounds; and the cost of the checks.

Usage::

    python benchmarks/optim_step.py [--device cpu|cuda] [--rounds N] [--quick] [--json out.json]

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightopt.optim import SGD, AdaGrad, Adam, RMSProp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _measure

# Targets: lightopt's default at most 1.0x torch's fastest path, and at least 2x faster than torch's
# default where torch's default is its per-tensor loop (the CPU).
TARGET_FASTEST = 1.0
TARGET_DEFAULT_SPEEDUP = 2.0
_PATH_KWARGS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}

Factory = Callable[[list[torch.Tensor], dict[str, Any]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Case:
    """A lightopt optimizer and the torch.optim optimizer of the same name, with the same hyperparameters."""

    name: str
    lightopt: Factory
    torch: Factory
    note: str = ""


def _cases() -> list[Case]:
    t = torch.optim
    return [
        Case("SGD", lambda p, k: SGD(p, lr=1e-3, **k), lambda p, k: t.SGD(p, lr=1e-3, **k)),
        Case(
            "SGD momentum=0.9",
            lambda p, k: SGD(p, lr=1e-3, momentum=0.9, **k),
            lambda p, k: t.SGD(p, lr=1e-3, momentum=0.9, **k),
        ),
        Case(
            "SGD momentum=0.9 nesterov",
            lambda p, k: SGD(p, lr=1e-3, momentum=0.9, nesterov=True, **k),
            lambda p, k: t.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, **k),
        ),
        Case(
            "AdaGrad",
            lambda p, k: AdaGrad(p, lr=1e-2, eps=1e-7, **k),
            lambda p, k: t.Adagrad(p, lr=1e-2, eps=1e-7, **k),
        ),
        Case(
            "RMSProp",
            lambda p, k: RMSProp(p, lr=1e-3, rho=0.9, eps=1e-6, **k),
            lambda p, k: t.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6, **k),
            note="δ inside the root vs torch's outside: the same op count",
        ),
        Case(
            "RMSProp momentum=0.9",
            lambda p, k: RMSProp(p, lr=1e-3, rho=0.9, eps=1e-6, momentum=0.9, **k),
            lambda p, k: t.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6, momentum=0.9, **k),
        ),
        Case("Adam", lambda p, k: Adam(p, lr=1e-3, **k), lambda p, k: t.Adam(p, lr=1e-3, **k)),
        Case(
            "control: torch Adam as 'lightopt'",
            lambda p, k: t.Adam(p, lr=1e-3, fused=True),
            lambda p, k: t.Adam(p, lr=1e-3, **k),
            note="torch's fused Adam in lightopt's place: its ratio to torch's fused arm is the run's noise floor",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Parameters


def make_parameters(layers: int, max_width: int, seed: int) -> list[tuple[int, ...]]:
    """Shapes of a stack of ``layers`` Linear layers of varied widths (weight and bias), plus LayerNorm vectors."""
    gen = torch.Generator().manual_seed(seed)
    widths = [w for w in (16, 32, 48, 64, 96, 128, 192, 256, 384, 512) if w <= max_width] or [max_width]

    def width() -> int:
        return widths[int(torch.randint(len(widths), (1,), generator=gen))]

    shapes: list[tuple[int, ...]] = []
    fan_in = width()
    for i in range(layers):
        fan_out = width()
        shapes += [(fan_out, fan_in), (fan_out,)]
        if i % 4 == 3:
            shapes += [(fan_out,), (fan_out,)]  # a LayerNorm's weight and bias
        fan_in = fan_out
    return shapes


def _fill(shapes: Sequence[tuple[int, ...]], seed: int, device: torch.device) -> tuple[list[torch.Tensor], ...]:
    gen = torch.Generator().manual_seed(seed)
    values = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    return [v.to(device) for v in values], [g.to(device) for g in grads]


def _copy(values: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return _copies(values, grads, 1)[0]


def _copies(values: list[torch.Tensor], grads: list[torch.Tensor], n: int) -> list[list[torch.Tensor]]:
    """``n`` copies of the parameters with their gradients, allocated in turn so that no copy gets the better memory."""
    copies: list[list[torch.Tensor]] = [[] for _ in range(n)]
    for v, g in zip(values, grads):
        for params in copies:
            p = v.clone().requires_grad_(True)
            p.grad = g.clone()
            params.append(p)
    return copies


# ---------------------------------------------------------------------------------------------
# Timing


def _time_block(step: Callable[[], None], k: int, sync: Callable[[], None]) -> float:
    """Seconds per step over a block of ``k`` steps."""
    sync()
    start = time.perf_counter()
    for _ in range(k):
        step()
    sync()
    return (time.perf_counter() - start) / k


def _supported(factory: Factory, values: list[torch.Tensor], grads: list[torch.Tensor], kwargs: dict[str, Any]) -> bool:
    try:
        factory(_copy(values[:1], grads[:1]), dict(kwargs)).step()
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def _arms(
    case: Case, values: list[torch.Tensor], grads: list[torch.Tensor]
) -> dict[str, tuple[Factory, dict[str, Any]]]:
    """Arm name -> (factory, keyword arguments), for the arms this device supports."""
    arms: dict[str, tuple[Factory, dict[str, Any]]] = {
        "lightopt default": (case.lightopt, {}),
        "lightopt checks off": (case.lightopt, {"check_finite_every": 0}),
        "torch default": (case.torch, {}),
    }
    if case.name.startswith("control"):
        arms.pop("lightopt checks off")
    for path, kwargs in _PATH_KWARGS.items():
        if _supported(case.torch, values, grads, kwargs):
            arms[f"torch {path}"] = (case.torch, kwargs)
    return arms


def lightopt_path(opt: torch.optim.Optimizer) -> str:
    """The kernel path lightopt's default takes for the first param group (RMSProp: foreach; no fused kernel)."""
    chooser = getattr(opt, "_paths", None)
    if chooser is None:
        return "fused" if opt.param_groups[0].get("fused") else "foreach"
    return chooser.path(opt.param_groups[0])


def run_case(
    case: Case,
    values: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    rounds: int,
    warmup: int,
    block_s: float,
    sync: Callable[[], None],
    rng: np.random.Generator,
) -> dict[str, Any]:
    arms = _arms(case, values, grads)
    names = list(arms)
    copies = _copies(values, grads, len(names))
    optimizers = {name: arms[name][0](params, dict(arms[name][1])) for name, params in zip(names, copies)}
    steps = {name: opt.step for name, opt in optimizers.items()}
    for _ in range(warmup):  # creates the state and warms caches and allocator
        for name in names:
            steps[name]()
    estimate = min(_time_block(step, 1, sync) for step in steps.values())
    k = max(1, round(block_s / max(estimate, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            times[names[i]].append(_time_block(steps[names[i]], k, sync))
    arrays = {name: np.array(t) for name, t in times.items()}
    medians = {name: float(np.median(a)) for name, a in arrays.items()}
    torch_arms = [n for n in names if n.startswith("torch ") and n != "torch default"]
    fastest = min(torch_arms, key=lambda n: medians[n])
    mine = arrays["lightopt default"]
    result: dict[str, Any] = {
        "case": case.name,
        "note": case.note,
        "steps_per_block": k,
        "rounds": rounds,
        "lightopt_path": lightopt_path(optimizers["lightopt default"]),
        "medians_s": medians,
        "torch_fastest": fastest.removeprefix("torch "),
        "vs_torch_default": _measure.paired_ratio(mine, arrays["torch default"], rng),
        "vs_torch_fastest": _measure.paired_ratio(mine, arrays[fastest], rng),
        "rounds_s": times,
    }
    if "lightopt checks off" in arrays:
        result["check_cost"] = _measure.paired_ratio(mine, arrays["lightopt checks off"], rng)
    return result


# ---------------------------------------------------------------------------------------------
# Report


def machine_info(device: torch.device) -> dict[str, Any]:
    info = _measure.machine_info(device=str(device))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def _ratio(r: dict[str, float]) -> str:
    return f"{r['ratio']:.3f} [{r['ratio_ci_low']:.3f}, {r['ratio_ci_high']:.3f}]"


def _verdict(r: dict[str, float], target: float) -> str:
    if r["ratio_ci_high"] <= target:
        return "yes"
    if r["ratio_ci_low"] > target:
        return "**no**"
    return "within noise"


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| optimizer | lightopt default µs/step (path) | torch default µs/step | torch fastest µs/step (path) "
        "| default / torch default [95% CI] | default / torch fastest [95% CI] | ≤ 1.0× fastest "
        "| checks: default / checks off [95% CI] |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for r in results:
        m = r["medians_s"]
        cost = _ratio(r["check_cost"]) if "check_cost" in r else "—"
        lines.append(
            f"| {r['case']} | {_us(m['lightopt default'])} ({r['lightopt_path']}) | {_us(m['torch default'])} "
            f"| {_us(m['torch ' + r['torch_fastest']])} ({r['torch_fastest']}) | {_ratio(r['vs_torch_default'])} "
            f"| {_ratio(r['vs_torch_fastest'])} | {_verdict(r['vs_torch_fastest'], TARGET_FASTEST)} | {cost} |"
        )
    return "\n".join(lines)


def format_arms(results: list[dict[str, Any]]) -> str:
    arms = ["lightopt default", "lightopt checks off", "torch default", "torch loop", "torch foreach", "torch fused"]
    lines = ["| optimizer | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    for r in results:
        cells = [_us(r["medians_s"][a]) if a in r["medians_s"] else "—" for a in arms]
        lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_machine(info: dict[str, Any], n_tensors: int, n_params: int) -> str:
    parts = [
        f"- machine: {info['cpu']}, {info['cores']} cores; device {info['device']}"
        + (f" ({info['gpu']})" if "gpu" in info else ""),
        f"- torch {info['torch']}, {info['threads']} intra-op thread(s), Python {info['python']}",
        f"- parameters: {n_params:,} in {n_tensors} tensors",
        f"- load average at start / end: {info['loadavg_start']} / {info.get('loadavg_end')}",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/optim_step.py",
        description="Time optimizer.step() of lightopt's optimizers (default arguments) against torch.optim's paths.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of blocks per optimizer (default 40; 6 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run: fewer rounds, shorter blocks")
    parser.add_argument("--json", metavar="PATH", help="also write all results, per-round times included, as JSON")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 keeps torch's default)"
    )
    parser.add_argument("--layers", type=int, default=100, help="Linear layers in the synthetic model (default 100)")
    parser.add_argument("--max-width", type=int, default=256, help="largest layer width (default 256)")
    parser.add_argument(
        "--block-ms", type=float, default=None, help="target length of one timed block (default 40; 10 with --quick)"
    )
    parser.add_argument("--only", metavar="REGEX", help="run only the optimizers whose name matches REGEX")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (6 if args.quick else 40)
    block_s = (args.block_ms if args.block_ms is not None else (10.0 if args.quick else 40.0)) / 1e3
    _measure.check_at_least(
        parser,
        [
            ("rounds", rounds, 2),
            ("layers", args.layers, 1),
            ("max-width", args.max_width, 1),
            ("threads", args.threads, 0),
        ],
    )
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: `--device cuda` needs a CUDA build of torch and a GPU; use --device cpu.", file=sys.stderr)
        return 2
    pattern = re.compile(args.only) if args.only else None

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shapes = make_parameters(args.layers, args.max_width, args.seed)
    values, grads = _fill(shapes, args.seed + 1, device)
    n_params = sum(v.numel() for v in values)
    info = machine_info(device)
    rng = np.random.default_rng(args.seed)

    results: list[dict[str, Any]] = []
    # No collector pauses inside timed blocks; between optimizers, collect only what one allocated.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    try:
        for case in _cases():
            if pattern and not pattern.search(case.name):
                continue
            results.append(
                run_case(
                    case,
                    values,
                    grads,
                    rounds=rounds,
                    warmup=3 if args.quick else 10,
                    block_s=block_s,
                    sync=sync,
                    rng=rng,
                )
            )
            gc.collect()
    finally:
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()
    info["loadavg_end"] = _measure.loadavg()

    print(format_machine(info, len(shapes), n_params))
    print(f"- {rounds} rounds per optimizer, blocks of ~{block_s * 1e3:.0f} ms, arms in a random order each round\n")
    print(format_table(results))
    print("\nMedian µs per step of every arm:\n")
    print(format_arms(results))
    notes = [f"- {r['case']}: {r['note']}" for r in results if r["note"]]
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "n_tensors": len(shapes),
                    "n_params": n_params,
                    "rounds": rounds,
                    "block_s": block_s,
                    "targets": {"fastest": TARGET_FASTEST, "default_speedup": TARGET_DEFAULT_SPEEDUP},
                    "results": results,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
