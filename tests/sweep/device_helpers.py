"""A module that records where each of its fits ran: what a ``--devices`` sweep's trials see.

Written as a user would write a small Lightning module, with its own bookkeeping hooks: each fit
appends one JSON line to ``record_file`` with its ``CUDA_VISIBLE_DEVICES``, the ids lightopt says it
holds, its process, its DDP rank, and its start and end times. ``wait_for`` makes the first fits
wait (at most ``wait_s``) until that many worker processes have started a fit, so that the test
knows the workers really ran at once and not one after another. ``oom_on`` makes fits on that
device raise CUDA's out-of-memory error, as a model too big for its GPU does. On a GPU,
``fill_on`` (a trial's folder name, e.g. ``trial_0000``) makes that trial allocate its device's
memory in 1 GiB blocks until CUDA really runs out, and each record holds the device memory that
the process had reserved when its fit started (what an earlier trial left cached).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from examples.digits import DigitsMLP


class RecordingMLP(DigitsMLP):
    def __init__(
        self,
        record_file: str = "",
        wait_for: int = 0,
        wait_s: float = 120.0,
        oom_on: str = "",
        fill_on: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_file, self.wait_for, self.wait_s, self.oom_on = record_file, wait_for, wait_s, oom_on
        self.fill_on = fill_on
        self._began = 0.0
        self._reserved: int | None = None

    def _rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    def on_fit_start(self) -> None:
        self._began = time.time()
        if self.device.type == "cuda":
            self._reserved = torch.cuda.memory_reserved(self.device)
        if self._rank() != 0 or not self.wait_for:
            return
        started = Path(self.record_file + ".started")
        started.mkdir(exist_ok=True)
        (started / str(os.getpid())).touch()
        deadline = time.monotonic() + self.wait_s
        while len(list(started.iterdir())) < self.wait_for and time.monotonic() < deadline:
            time.sleep(0.05)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.oom_on and os.environ.get("CUDA_VISIBLE_DEVICES") == self.oom_on:
            self._write(error="OutOfMemoryError")
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total "
                "capacity; 78.50 GiB already allocated)"
            )
        if self.fill_on and self.device.type == "cuda" and Path(self.trainer.default_root_dir).name == self.fill_on:
            blocks = []
            try:
                while True:
                    blocks.append(torch.empty(2**30, dtype=torch.uint8, device=self.device))
            except torch.OutOfMemoryError:
                self._write(
                    error="OutOfMemoryError",
                    filled_gib=len(blocks),
                    reserved_when_full=torch.cuda.memory_reserved(self.device),
                )
                raise
        return super().training_step(batch, batch_idx)

    def on_fit_end(self) -> None:
        self._write()

    def _write(self, **extra: Any) -> None:
        record = {
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "held": os.environ.get("LIGHTOPT_DEVICES"),
            "pid": os.getpid(),
            "rank": self._rank(),
            "start": self._began,
            "end": time.time(),
            "log_dir": str(self.trainer.default_root_dir),
            "reserved_at_start": self._reserved,
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            **extra,
        }
        with open(self.record_file, "a", encoding="utf-8") as out:  # one short append per fit: never interleaved
            out.write(json.dumps(record) + "\n")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of the ``(start, end)`` intervals that overlap at one instant."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda event: (event[0], event[1]),
    )  # an end before a start at the same instant
    running = best = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best
