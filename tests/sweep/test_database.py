"""Sweeps on many machines: workers in separate processes join one study in a real PostgreSQL database.

The server is real (tests/sweep/postgres.py starts one on 127.0.0.1); each "machine" is a
``python -m lightopt sweep run`` process with a working directory (and so trial logs) of its own.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lightopt.cli import main
from lightopt.sweep import trial_seed
from lightopt.sweep.store import database_error, grpc_proxy, open_database, redact
from tests.sweep.helpers import sweep_dict, write
from tests.sweep.postgres import PASSWORD, free_port, postgres_db, postgres_server, start_postgres  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}


def _machine(tmp_path: Path, index: int, n_trials: int) -> Path:
    """A working directory with the sweep file, as a machine of its own would have it."""
    directory = tmp_path / f"machine{index}"
    directory.mkdir()
    # seed: null: each worker's sampler draws its own numbers (with one seed, all would draw the same
    # parameters); trial seeds still derive from study.seed.
    data = sweep_dict(Path("runs"), n_trials=n_trials, name="shared", sampler={"name": "random", "seed": None})
    data["trainer"]["max_epochs"] = 1
    write(directory / "digits.yaml", data)
    return directory


def _load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="shared", storage=url)


def test_three_workers_join_one_study_and_record_every_trial_once(postgres_db, tmp_path, capsys):
    server, database = postgres_db
    url = server.url(database)
    n_trials, workers = 7, 3
    machines = [_machine(tmp_path, i, n_trials) for i in range(workers)]
    # Started at the same instant on an empty database: tables and study are created race-free.
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "lightopt", "sweep", "run", "digits.yaml", "--storage", url],
            cwd=m,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in machines
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
        assert PASSWORD not in out + err
        assert f"storage: {redact(url)}" in out  # the summary names the database, password hidden

    trials = _load(url).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # each trial recorded once, numbered without gaps
    assert all(t.state == TrialState.COMPLETE for t in trials)  # none left RUNNING, none failed
    assert all(t.user_attrs["seed"] == trial_seed(0, t.number) for t in trials)
    assert len({t.params["optimizer.init_args.lr"] for t in trials}) == len(trials)  # no draw repeated
    # Independent processes stop at the study's total; each may finish the trial it had started.
    assert n_trials <= len(trials) <= n_trials + workers - 1
    reported = [int(n) for out, _ in outputs for n in re.findall(r"\] trial (\d+) complete", out)]
    assert sorted(reported) == numbers  # every finished trial reported by exactly one worker: none lost
    for machine, (out, _) in zip(machines, outputs):
        for number in re.findall(r"\] trial (\d+) complete", out):  # its logs are on the machine that ran it
            assert (machine / "runs" / "shared" / f"trial_{int(number):04d}").is_dir()

    assert main(["sweep", "show", "shared", "--storage", url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["number"] for t in shown["trials"]] == numbers and shown["metric"] == "val_loss"
    assert main(["sweep", "best", "shared", "--storage", url]) == 0
    best = capsys.readouterr().out
    assert f"seed_everything: {shown['best']['seed']}" in best and PASSWORD not in best


def test_workers_opening_a_new_database_at_the_same_instant(postgres_db):
    """Without the schema lock, most of these fail with pg_type_typname_nsp_index (CREATE TABLE races)."""
    server, database = postgres_db
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(6), context.Queue()
    processes = [
        context.Process(target=_open_and_create, args=(server.url(database), barrier, results)) for _ in range(6)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert sorted(results.get(timeout=5) for _ in processes) == ["ok"] * 6
    assert [s.study_name for s in optuna.get_all_study_summaries(server.url(database))] == ["shared"]


def _open_and_create(url, barrier, results):
    barrier.wait()
    try:
        optuna.create_study(storage=open_database(url), study_name="shared", load_if_exists=True)
        results.put("ok")
    except Exception as error:
        results.put(f"{type(error).__name__}: {error}"[:300])


def _run(argv, cwd):
    return subprocess.run(
        [sys.executable, "-m", "lightopt", *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("case", ["wrong password", "unreachable port"])
def test_bad_database_is_one_line_exit_2_and_writes_nothing(postgres_db, tmp_path, monkeypatch, capsys, case):
    server, database = postgres_db
    wrong = "not-" + PASSWORD
    url = server.url(database, password=wrong) if case == "wrong password" else server.url(database, port=free_port())
    machine = _machine(tmp_path, 0, 2)
    monkeypatch.chdir(machine)
    argv = ["sweep", "run", "digits.yaml", "--storage", url]
    if case == "wrong password":  # the real command once: its exit code and its whole stderr
        done = _run(argv, machine)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code = main(argv)
        out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: `--storage` '{redact(url)}' cannot be opened: ")
    reason = "password authentication failed" if case == "wrong password" else "Connection refused"
    assert reason in err and wrong not in err and PASSWORD not in err
    assert not (machine / "runs").exists()
    assert optuna.get_all_study_summaries(server.url(database)) == []  # no study was created
    for command in ("show", "best"):
        assert main(["sweep", command, "shared", "--storage", url]) == 2
        shown = capsys.readouterr()
        assert shown.out == "" and reason in shown.err and shown.err.count("\n") == 1 and wrong not in shown.err


def test_storage_url_from_the_environment(postgres_db, tmp_path, monkeypatch, capsys):
    server, database = postgres_db
    url = server.url(database, password=None)
    machine = _machine(tmp_path, 0, 1)
    monkeypatch.chdir(machine)
    monkeypatch.setenv("LIGHTOPT_STORAGE", url)  # no password in the URL or on the command line ...
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # ... but in libpq's variable (or ~/.pgpass)
    assert main(["sweep", "run", "digits.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"storage: {redact(url)}" in out and PASSWORD not in out
    assert not (machine / "runs" / "shared" / "study.journal").exists()  # the study is in the database
    assert [t.state for t in _load(url).trials] == [TrialState.COMPLETE]
    assert main(["sweep", "show", "shared"]) == 0  # found by name in the database, no --storage
    assert capsys.readouterr().out.startswith(f"study 'shared' in {redact(url)}\n")
    monkeypatch.setenv("LIGHTOPT_STORAGE", server.url(database, password="wr0ng-pw"))  # the URL's wins
    assert main(["sweep", "show", "shared"]) == 2
    err = capsys.readouterr().err
    assert "password authentication failed" in err and "wr0ng-pw" not in err


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://me:pw@host:5432/db", "postgresql://me:***@host:5432/db"),
        ("postgresql+psycopg://me:p%40ss:word@host/db", "postgresql+psycopg://me:***@host/db"),
        ("postgresql://me@host/db", "postgresql://me@host/db"),
        (
            "postgresql://host/db?user=me&password=pw&sslmode=require",
            "postgresql://host/db?user=me&password=***&sslmode=require",
        ),
        ("mysql+pymysql://me:pw@host/db?charset=utf8mb4", "mysql+pymysql://me:***@host/db?charset=utf8mb4"),
        ("sqlite:///runs/s/study.db", "sqlite:///runs/s/study.db"),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown


def test_database_error_hides_the_password_and_says_how_to_install_a_driver():
    url = "postgresql://me:hunter2@db/x"  # drivers do not echo it, but a message that did is cleaned
    assert database_error(RuntimeError("login hunter2 refused\ndetails"), url) == "RuntimeError: login *** refused"
    missing = ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
    assert "pip install 'lightopt[postgres]'" in database_error(missing, url)


def test_workers_through_optuna_grpc_storage_proxy(postgres_db, tmp_path, monkeypatch, capsys):
    server, database = postgres_db
    port = free_port()
    code = (
        "import optuna; "  # as the README runs it
        f"storage = optuna.storages.get_storage({server.url(database)!r}); "
        f"optuna.storages.run_grpc_proxy_server(storage, host='127.0.0.1', port={port})"
    )
    proxy = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"grpc://127.0.0.1:{port}"
    try:
        try:
            grpc_proxy(url, timeout=120).close()  # the proxy's process is up
        except ConnectionError:
            proxy.kill()
            pytest.fail(f"the gRPC storage proxy did not start: {proxy.communicate()[1].decode()[-2000:]}")
        machine = _machine(tmp_path, 0, 2)
        monkeypatch.chdir(machine)
        assert main(["sweep", "run", "digits.yaml", "--storage", url]) == 0
        assert f"storage: {url}" in capsys.readouterr().out
        assert main(["sweep", "run", "digits.yaml", "--storage", url, "--n-trials", "3"]) == 0  # resumes
        capsys.readouterr()
    finally:
        proxy.terminate()
        proxy.wait(30)
    trials = _load(server.url(database)).trials  # the proxy wrote to the database
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(3)]
    assert main(["sweep", "show", "shared", "--storage", url]) == 2  # the proxy is gone: one line
    assert (
        capsys.readouterr().err == f"error: `--storage` '{url}' cannot be opened: ConnectionError: no Optuna gRPC "
        f"storage proxy answered at 127.0.0.1:{port} within 10 s\n"
    )


def test_workers_get_the_database_url_with_its_password_and_show_it_nowhere(postgres_db, tmp_path):
    server, database = postgres_db
    url = server.url(database)
    stall = tmp_path / "stall"
    data = sweep_dict(Path("runs"), n_trials=2)
    data["model"] = {
        "class_path": "tests.sweep.helpers.StallingMLP",
        "init_args": {"hidden": 16, "stall_file": str(stall), "stall_epoch": 0},
    }
    write(tmp_path / "s.yaml", data)
    stall.touch()  # each worker's trial waits until both run one: the child must reach the database
    process = subprocess.Popen(
        [sys.executable, "-m", "lightopt", "sweep", "run", "s.yaml", "--workers", "2"],
        cwd=tmp_path,
        env={**ENV, "LIGHTOPT_STORAGE": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children: list[str] = []
    deadline = time.monotonic() + 240
    storage = optuna.storages.RDBStorage(url)  # one connection pool for all the looks below
    while stall.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                children.append(Path(f"/proc/{pid}/cmdline").read_text())
        try:
            running = [
                t for t in optuna.load_study(study_name="s", storage=storage).trials if t.state == TrialState.RUNNING
            ]
        except KeyError:  # the study is not created yet
            running = []
        if len({t.user_attrs.get("worker", {}).get("pid") for t in running}) == 2:
            stall.unlink()
        time.sleep(0.2)
    out, err = process.communicate(timeout=240)
    storage.engine.dispose()
    assert process.returncode == 0, err[-3000:]
    assert PASSWORD not in out + err and "Traceback" not in err
    assert children and not any(PASSWORD in cmdline for cmdline in children)
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # the child authenticated and ran a trial


def test_a_database_restart_mid_sweep_is_waited_out_with_a_line_each_way(tmp_path):
    server = start_postgres()  # a server of its own: this test stops it and starts it again
    try:
        url = server.url(server.new_database())
        data = sweep_dict(tmp_path / "runs", n_trials=3)
        stall = tmp_path / "stall"
        data["model"] = {
            "class_path": "tests.sweep.helpers.StallingMLP",
            "init_args": {"hidden": 16, "stall_file": str(stall)},
        }
        data["trainer"].update(max_epochs=2, enable_checkpointing=True)
        write(tmp_path / "s.yaml", data)
        stall.touch()
        process = subprocess.Popen(
            [sys.executable, "-m", "lightopt", "sweep", "run", str(tmp_path / "s.yaml")],
            cwd=tmp_path,
            env={**ENV, "LIGHTOPT_STORAGE": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        checkpoint = tmp_path / "runs" / "s" / "trial_0000" / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 180
        while not checkpoint.is_file():  # trial 0 is in epoch 1, waiting
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
        server.halt()  # connections cut, as a restart does
        stall.unlink()  # the trial reaches its next report while the server is down
        time.sleep(3)
        server.start()
        out, err = process.communicate(timeout=240)
    finally:
        server.stop()
    assert process.returncode == 0, err[-3000:]
    lines = err.splitlines()
    assert lines[0].startswith(f"database {redact(url)} unreachable (") and lines[0].endswith(
        "retrying for up to 120 s"
    )
    assert re.fullmatch(rf"database {re.escape(redact(url))} reachable again after \d+\.\d s", lines[1])
    assert "Traceback" not in err and PASSWORD not in out + err
    assert "3 trials: 3 complete" in out


def test_no_trial_exists_without_its_worker(postgres_db):
    """Optuna creates a trial, then the objective names its worker: one lost in between left a trial nobody owned."""
    from lightopt.sweep.store import open_storage

    server, database = postgres_db
    storage, _ = open_storage(server.url(database), Path("."))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    worker = optuna.load_study(study_name="s", storage=server.url(database)).trials[trial.number].user_attrs["worker"]
    assert worker["pid"] == os.getpid() and worker["host"] == socket.gethostname()


def test_several_user_attrs_are_one_upsert_on_postgresql(postgres_db):
    """GuardedStorage.set_trial_user_attrs: the trial read once, every attribute in one statement, one commit."""
    import sqlalchemy

    from lightopt.sweep.store import open_storage

    server, database = postgres_db
    storage, _ = open_storage(server.url(database), Path("."))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.set_user_attr("seed", 1)
    statements, commits = [], []
    engine = storage.inner._backend.engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    sqlalchemy.event.listen(engine, "commit", commits.append)
    attrs = {"seed": 7, "config": {"model": {"init_args": {"hidden": 16}}}, "log_dir": "runs/s/trial_0000"}
    storage.set_trial_user_attrs(trial._trial_id, attrs)
    assert len(commits) == 1 and len(statements) == 2  # the trial's state, then the upsert (6 and 3 commits before)
    stored = optuna.load_study(study_name="s", storage=server.url(database)).trials[0].user_attrs
    assert {key: stored[key] for key in attrs} == attrs  # seed overwritten, the others added
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError, match="finished"):  # a finished trial is refused, as by set_user_attr
        storage.set_trial_user_attrs(trial._trial_id, {"late": 1})
