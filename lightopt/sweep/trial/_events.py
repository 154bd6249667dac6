"""TensorBoard event files as lightopt writes them: whole files put in place at once, by global rank 0 only."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

__all__ = ["is_global_zero", "write_events"]


def is_global_zero() -> bool:
    """Whether this process is global rank 0 (always, outside distributed runs): only it writes."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def write_events(directory: Path, name: str, events: list[event_pb2.Event]) -> Path:
    """Write ``events`` as one event file ``directory / name``, put in place whole (``os.replace``)."""
    directory.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=directory, prefix=".writing-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            writer = RecordWriter(file)
            writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            for event in events:
                writer.write(event.SerializeToString())
            writer.flush()
        os.replace(scratch, directory / name)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return directory / name
