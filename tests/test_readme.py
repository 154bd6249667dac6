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
