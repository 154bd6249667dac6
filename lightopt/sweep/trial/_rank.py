"""A non-zero rank of a DDP sweep trial: ``python -m lightopt.sweep.trial._rank`` with the trial's job on stdin.

Started by :func:`lightopt.sweep.trial.trial_processes` with ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set. It fits the trial's config exactly as rank 0 does, with a
:class:`~lightopt.sweep.trial.PruningCallback` that has no trial (it follows rank 0's broadcast
decisions), and writes nothing to the study; Lightning's loggers write nothing on non-zero ranks.
The job is the first line on stdin; the sweep keeps stdin open, so end-of-file means the sweep's
process is gone and this rank exits at once instead of waiting for peers that will never come.
Ctrl-C in a terminal reaches every process: this rank ignores it, since rank 0 records the trial as
interrupted and ends the fit for all ranks (or its end closes stdin).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from lightopt.sweep.trial._rank_error import ERROR_MARK

__all__ = ["main"]


def main() -> int:
    """Read the job from stdin, fit it on this rank, return the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job = json.loads(sys.stdin.readline())
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    sys.path[:0] = [entry for entry in job["sys_path"] if entry not in sys.path]  # the sweep's imports work here too
    try:
        import torch

        from lightopt.sweep.trial._fit import fit_trial
        from lightopt.sweep.trial._pruning import PruningCallback
        from lightopt.sweep.trial._sanity import sanity_check_passed

        torch.set_num_threads(job["threads"])
        if job.get("skip_sanity_check"):  # as rank 0 does, so every rank runs the same collectives
            sanity_check_passed(str(Path(job["directory"]).resolve()))
        pruning = PruningCallback(None, job["monitor"], job["report_at"], job["mode"])
        fit_trial(
            job["config"],
            job["seed"],
            pruning,
            Path(job["directory"]),
            job["name"],
            ckpt_path=job.get("ckpt_path"),
            checkpoints=job.get("checkpoints", False),
        )
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    except BaseException as error:
        traceback.print_exc()
        print(ERROR_MARK + json.dumps(f"{type(error).__name__}: {error}"))
        return 1
    return 0


def _exit_with_parent() -> None:
    sys.stdin.read()
    os._exit(1)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the fit is over and nothing is left to write: skip the interpreter's slow teardown
