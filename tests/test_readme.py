"""The README shows what the repository ships: the main job's sweep file, the install script's switch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_shows_the_shipped_main_job():
    readme = (ROOT / "README.md").read_text()
    marker = "`sweeps/digits_sgd.yaml`, as shipped (less the comment at its top):\n\n```yaml\n"
    assert readme.count(marker) == 1
    shown = readme[readme.index(marker) + len(marker) :]
    shown = shown[: shown.index("```\n")]
    shipped = (ROOT / "sweeps" / "digits_sgd.yaml").read_text()
    assert shown == shipped[shipped.index("study:\n") :]
    assert yaml.safe_load(shown) == yaml.safe_load(shipped)


def test_install_script_skips_postgres_when_asked(tmp_path):
    script = (ROOT / ".ci" / "install").read_text()
    assert "LIGHTOPT_SKIP_POSTGRES" in script and "LIGHTOPT_SKIP_POSTGRES=1" in (ROOT / "README.md").read_text()
    # run the PostgreSQL part alone, with apt-get and initdb made unfindable: skipping must not reach apt-get
    part = script[script.index("have_pg()") :]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho apt-get was called >&2\nexit 9\n")
    (bin_dir / "apt-get").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LIGHTOPT_SKIP_POSTGRES": "1"}
    probe = re.sub(r"/usr/lib/postgresql/\*/bin/", str(tmp_path / "none") + "/", part)
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + probe], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "apt-get was called" not in done.stderr
    assert "LIGHTOPT_SKIP_POSTGRES=1: no PostgreSQL server installed" in done.stderr
    env.pop("LIGHTOPT_SKIP_POSTGRES")
    on_path = shutil.which("initdb", path="/usr/bin:/bin") and shutil.which("postgres", path="/usr/bin:/bin")
    if os.getuid() == 0 and not on_path:  # without the switch, the missing server goes to apt-get
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + probe], env=env, capture_output=True, text=True)
        assert done.returncode == 9 and "apt-get was called" in done.stderr


def test_the_readme_test_command_is_ci_run_and_its_pytest_command_is_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "# 2. install everything and run the checks and the test suite (what CI runs)\nbash .ci/run\n" in readme
    script = (ROOT / ".ci" / "run").read_text()
    steps = re.findall(r"^check (.+?)(?:\s+#.*)?$", script, flags=re.M)
    assert steps == ["lint-imports --no-cache", "ruff check .", "ruff format --check .", 'python -m pytest -n 2 "$@"']
    assert "bash .ci/install || exit 1" in script
    described = "`.ci/run` runs `.ci/install`, then `lint-imports --no-cache`"
    assert readme.count(described) == 1
    for command in ["lint-imports --no-cache", "ruff check .", "ruff format --check .", "python -m pytest -n 2"]:
        assert f"`{command}`" in readme[readme.index(described) :]
    assert "`LIGHTOPT_SKIP_POSTGRES=1 bash .ci/run --ignore tests/sweep/test_database.py`" in readme


def _run_ci_with_stubs(tmp_path, failing=""):
    """.ci/run in a copy of the repository's .ci/ whose install and tools are stubs that log their arguments;
    the stub whose arguments start with ``failing`` exits 1."""
    (tmp_path / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / ".ci" / "install").write_text('echo install >> "$CI_LOG"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["lint-imports", "ruff", "python"]:
        stub = bin_dir / tool
        stub.write_text(
            f'#!/bin/sh\necho "{tool} $*" >> "$CI_LOG"\n'
            f'case "{tool} $*" in "$CI_FAILING"*) [ -n "$CI_FAILING" ] && exit 1;; esac\nexit 0\n'
        )
        stub.chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CI_LOG": str(log), "CI_FAILING": failing}
    done = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run"), "-x"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    return done, log.read_text().splitlines()


def test_ci_run_runs_every_check_and_fails_when_any_fails(tmp_path):
    everything = [
        "install",
        "lint-imports --no-cache",
        "ruff check .",
        "ruff format --check .",
        "python -m pytest -n 2 -x",
    ]
    done, ran = _run_ci_with_stubs(tmp_path / "passing")
    assert done.returncode == 0 and ran == everything
    done, ran = _run_ci_with_stubs(tmp_path / "failing", failing="ruff check")
    assert done.returncode == 1 and ran == everything  # the later checks still ran
    assert "FAILED: ruff check ." in done.stderr
