"""The commands that read no model start without importing torch or Lightning (seconds on a busy machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHECK = """
import json, sys
from lightopt.cli import main
try:
    code = main({argv!r})
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({{"code": code, "heavy": sorted(m for m in ("torch", "lightning", "pytorch_lightning") if m in sys.modules)}}))
"""


def _modules_after(argv: list[str], cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHECK.format(argv=argv)], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["sweep", "--help"], ["sweep", "show", "--help"],
                                  ["fit", "--help"], ["tensorboard", "--help"]])
def test_help_and_version_import_no_torch(argv, tmp_path):
    result = _modules_after(argv, tmp_path)
    assert result == {"code": 0, "heavy": []}


def test_import_lightopt_is_lazy_and_complete():
    code = ("import sys, lightopt; assert 'torch' not in sys.modules; "
            "assert lightopt.optim.SGD and lightopt.ConfigureOptimizersMixin and lightopt.retrain_on_all_data; "
            "from lightopt import callbacks, schedules; assert 'torch' in sys.modules; "
            "assert set(lightopt.__all__) <= set(dir(lightopt)); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.stdout == "ok\n", done.stderr


def test_unknown_attribute_is_an_attribute_error():
    import lightopt

    with pytest.raises(AttributeError, match="has no attribute 'SDG'"):
        lightopt.SDG  # noqa: B018
