"""Time ``optimizer.step()`` of lightopt's first-order optimizers against their ``torch.optim`` equivalents.

Each pair (a lightopt optimizer and the ``torch.optim`` optimizer it is compared with) gets two
copies of the same synthetic parameters with the same random gradients, filled once: only
``step()`` is timed, never a forward or backward pass. For every kernel path torch offers for
that optimizer (``loop``: ``foreach=False``; ``foreach=True``; ``fused=True``) both optimizers are
built on that path, warmed up, then timed in alternating blocks of K steps for R rounds (the
order within a round alternates, A B then B A, so drift and cache order cancel). Reported per
pair: the median time per step of each, the ratio of medians lightopt/torch with a paired
bootstrap 95% interval over rounds, and the median and interquartile range of the per-round
ratios.

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
import _measure  # noqa: E402  (beside this script)

TARGET = 1.05
PATHS = ("loop", "foreach", "fused")
_PATH_KWARGS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
# The two learning rates the "lr changed every step" pairs alternate between.
_SCHEDULE_LRS = (1e-3, 0.9e-3)

Factory = Callable[[list[torch.Tensor], dict[str, Any]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Pair:
    """A lightopt optimizer, the torch.optim optimizer it is compared with, and the kernel paths to time."""

    name: str
    lightopt: Factory
    torch: Factory
    paths: tuple[str, ...]
    lr_every_step: bool = False
    note: str = ""


def _pairs() -> list[Pair]:
    t = torch.optim
    sgd_paths = ("loop", "foreach", "fused")
    rms_paths = ("loop", "foreach")  # torch has no fused RMSprop
    return [
        Pair("SGD", lambda p, k: SGD(p, lr=1e-3, **k), lambda p, k: t.SGD(p, lr=1e-3, **k), sgd_paths),
        Pair(
            "SGD momentum=0.9",
            lambda p, k: SGD(p, lr=1e-3, momentum=0.9, **k),
            lambda p, k: t.SGD(p, lr=1e-3, momentum=0.9, **k),
            sgd_paths,
        ),
        Pair(
            "SGD momentum=0.9 nesterov (lookahead)",
            lambda p, k: SGD(p, lr=1e-3, momentum=0.9, nesterov=True, **k),
            lambda p, k: t.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, **k),
            sgd_paths,
        ),
        Pair(
            "SGD momentum=0.9, lr changed every step",
            lambda p, k: SGD(p, lr=1e-3, momentum=0.9, **k),
            lambda p, k: t.SGD(p, lr=1e-3, momentum=0.9, **k),
            sgd_paths,
            lr_every_step=True,
            note="lightopt folds the rescale into the kernel's momentum factor α·ε_b/ε_k: no extra pass",
        ),
        Pair(
            "AdaGrad",
            lambda p, k: AdaGrad(p, lr=1e-2, eps=1e-7, **k),
            lambda p, k: t.Adagrad(p, lr=1e-2, eps=1e-7, **k),
            ("loop", "foreach", "fused"),
        ),
        Pair(
            "Adam",
            lambda p, k: Adam(p, lr=1e-3, **k),
            lambda p, k: t.Adam(p, lr=1e-3, **k),
            ("loop", "foreach", "fused"),
        ),
        Pair(
            "RMSProp",
            lambda p, k: RMSProp(p, lr=1e-3, rho=0.9, eps=1e-6, **k),
            lambda p, k: t.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6, **k),
            rms_paths,
            note="δ inside the root vs torch's outside: same op count",
        ),
        Pair(
            "RMSProp momentum=0.9",
            lambda p, k: RMSProp(p, lr=1e-3, rho=0.9, eps=1e-6, momentum=0.9, **k),
            lambda p, k: t.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6, momentum=0.9, **k),
            rms_paths,
        ),
        Pair(
            "RMSProp momentum=0.9 nesterov (lookahead)",
            lambda p, k: RMSProp(p, lr=1e-3, rho=0.9, eps=1e-6, momentum=0.9, nesterov=True, **k),
            lambda p, k: t.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6, momentum=0.9, **k),
            rms_paths,
            note="nearest torch equivalent is heavy-ball momentum; lightopt does one more op (`addcdiv_` on θ)",
        ),
        Pair(
            "control: torch Adam vs torch Adam",
            lambda p, k: t.Adam(p, lr=1e-3, **k),
            lambda p, k: t.Adam(p, lr=1e-3, **k),
            ("loop", "foreach", "fused"),
            note="the same optimizer on both sides: its distance from 1.00 is this run's bias and noise floor",
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


def _stepper(opt: torch.optim.Optimizer, lr_every_step: bool) -> Callable[[], None]:
    if not lr_every_step:
        return opt.step
    group = opt.param_groups[0]
    tick = [0]

    def step() -> None:
        tick[0] ^= 1
        group["lr"] = _SCHEDULE_LRS[tick[0]]
        opt.step()

    return step


def _time_block(step: Callable[[], None], k: int, sync: Callable[[], None]) -> float:
    """Seconds per step over a block of ``k`` steps."""
    sync()
    start = time.perf_counter()
    for _ in range(k):
        step()
    sync()
    return (time.perf_counter() - start) / k


def _supported(factory: Factory, values: list[torch.Tensor], grads: list[torch.Tensor], path: str) -> bool:
    try:
        factory(_copy(values[:1], grads[:1]), dict(_PATH_KWARGS[path])).step()
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def run_pair(
    pair: Pair,
    path: str,
    values: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    rounds: int,
    warmup: int,
    block_s: float,
    sync: Callable[[], None],
    rng: np.random.Generator,
) -> dict[str, Any]:
    kwargs = _PATH_KWARGS[path]
    params_a, params_b = _copies(values, grads, 2)
    a = pair.lightopt(params_a, dict(kwargs))
    b = pair.torch(params_b, dict(kwargs))
    step_a, step_b = _stepper(a, pair.lr_every_step), _stepper(b, pair.lr_every_step)
    for _ in range(warmup):  # creates the state and warms caches and allocator
        step_a()
        step_b()
    estimate = min(_time_block(step_a, 1, sync), _time_block(step_b, 1, sync))
    k = max(1, round(block_s / max(estimate, 1e-7)))
    times_a, times_b = [], []
    for r in range(rounds):
        first, second = ((step_a, times_a), (step_b, times_b)) if r % 2 == 0 else ((step_b, times_b), (step_a, times_a))
        first[1].append(_time_block(first[0], k, sync))
        second[1].append(_time_block(second[0], k, sync))
    result = {"pair": pair.name, "path": path, "steps_per_block": k, "rounds": rounds, "note": pair.note}
    a, b = np.array(times_a), np.array(times_b)
    result.update(lightopt_s=float(np.median(a)), torch_s=float(np.median(b)), **_measure.paired_ratio(a, b, rng))
    result["lightopt_rounds_s"] = times_a
    result["torch_rounds_s"] = times_b
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


def _verdict(r: dict[str, Any]) -> str:
    if r["ratio_ci_high"] <= TARGET:
        return "yes"
    if r["ratio_ci_low"] > TARGET:
        return "**no**"
    return "unclear"


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | path | lightopt µs/step | torch µs/step | ratio of medians [95% CI] "
        "| per-round ratio median [IQR] | ≤ 1.05 |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['pair']} | {r['path']} | {_us(r['lightopt_s'])} | {_us(r['torch_s'])} "
            f"| {r['ratio']:.3f} [{r['ratio_ci_low']:.3f}, {r['ratio_ci_high']:.3f}] "
            f"| {r['round_ratio_median']:.3f} [{r['round_ratio_q1']:.3f}, {r['round_ratio_q3']:.3f}] "
            f"| {_verdict(r)} |"
        )
    return "\n".join(lines)


def fastest_paths(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pair: lightopt's fastest path against torch's fastest path (medians from separate interleavings)."""
    rows = []
    for name in dict.fromkeys(r["pair"] for r in results):
        mine = [r for r in results if r["pair"] == name]
        a = min(mine, key=lambda r: r["lightopt_s"])
        b = min(mine, key=lambda r: r["torch_s"])
        rows.append(
            {"pair": name, "lightopt_path": a["path"], "lightopt_s": a["lightopt_s"], "torch_path": b["path"],
             "torch_s": b["torch_s"], "ratio": a["lightopt_s"] / b["torch_s"]}
        )
    return rows


def format_fastest(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | lightopt fastest | torch fastest | ratio |",
        "|---|---|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pair']} | {r['lightopt_path']}: {_us(r['lightopt_s'])} µs | {r['torch_path']}: {_us(r['torch_s'])} µs "
            f"| {r['ratio']:.3f} |"
        )
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
        description="Time optimizer.step() of lightopt's optimizers against torch.optim, interleaved.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of A/B blocks per pair (default 60; 6 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run: fewer rounds, shorter blocks")
    parser.add_argument("--json", metavar="PATH", help="also write all results, per-round times included, as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 keeps torch's default)")
    parser.add_argument("--layers", type=int, default=100, help="Linear layers in the synthetic model (default 100)")
    parser.add_argument("--max-width", type=int, default=256, help="largest layer width (default 256)")
    parser.add_argument("--block-ms", type=float, default=None, help="target length of one timed block (default 50; 10 with --quick)")
    parser.add_argument("--only", metavar="REGEX", help="run only the pairs whose name matches REGEX")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (6 if args.quick else 60)
    block_s = (args.block_ms if args.block_ms is not None else (10.0 if args.quick else 50.0)) / 1e3
    _measure.check_at_least(parser, [("rounds", rounds, 2), ("layers", args.layers, 1), ("max-width", args.max_width, 1),
                                     ("threads", args.threads, 0)])
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
    skipped: list[str] = []
    # No collector pauses inside timed blocks; between pairs, collect only what the pair allocated.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    try:
        for pair in _pairs():
            if pattern and not pattern.search(pair.name):
                continue
            for path in pair.paths:
                if not all(_supported(f, values, grads, path) for f in (pair.lightopt, pair.torch)):
                    skipped.append(f"{pair.name} / {path}")
                    continue
                results.append(
                    run_pair(pair, path, values, grads, rounds=rounds, warmup=3 if args.quick else 10,
                             block_s=block_s, sync=sync, rng=rng)
                )
                gc.collect()
    finally:
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()
    info["loadavg_end"] = _measure.loadavg()

    print(format_machine(info, len(shapes), n_params))
    print(f"- {rounds} rounds per pair, blocks of ~{block_s * 1e3:.0f} ms, order alternating A B / B A\n")
    print(format_table(results))
    if skipped:
        print("\nnot supported on this device: " + "; ".join(skipped))
    fastest = fastest_paths(results)
    print("\nFastest path of each (medians from the runs above):\n")
    print(format_fastest(fastest))
    notes = list(dict.fromkeys(f"- {r['pair']}: {r['note']}" for r in results if r["note"]))
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": info, "n_tensors": len(shapes), "n_params": n_params, "rounds": rounds,
                 "block_s": block_s, "target": TARGET, "results": results, "fastest": fastest, "skipped": skipped},
                f, indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
