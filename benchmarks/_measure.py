"""What the benchmarks share: the paired ratio statistics, the machine description, argument checks."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def paired_ratio(num: np.ndarray, den: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> dict[str, float]:
    """Ratio of medians num/den over paired rounds, its bootstrap 95% interval, and per-round ratio quartiles."""
    idx = rng.integers(0, len(num), size=(n_boot, len(num)))
    boot = np.median(num[idx], axis=1) / np.median(den[idx], axis=1)
    per_round = num / den
    return {
        "ratio": float(np.median(num) / np.median(den)),
        "ratio_ci_low": float(np.percentile(boot, 2.5)),
        "ratio_ci_high": float(np.percentile(boot, 97.5)),
        "round_ratio_median": float(np.median(per_round)),
        "round_ratio_q1": float(np.percentile(per_round, 25)),
        "round_ratio_q3": float(np.percentile(per_round, 75)),
    }


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU model, cores, torch version and threads, Python, load average now; plus ``extra``."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **extra,
        "loadavg_start": loadavg(),
    }


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def check_at_least(parser: argparse.ArgumentParser, checks: Sequence[tuple[str, Any, int]]) -> None:
    """``parser.error`` (one line, exit code 2) for the first ``(flag, value, low)`` with ``value < low``."""
    for name, value, low in checks:
        if value is not None and value < low:
            parser.error(f"`--{name}` must be >= {low}, but got {name.replace('-', '_')}={value}.")
