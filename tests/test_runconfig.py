"""lightopt.runconfig: YAML as users write it, bounded YAML, the trust guard, LightningCLI's errors as one line."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

from lightopt.cli import main
from lightopt.runconfig import MAX_FILE_BYTES, CliSpec, ConfigError, build, parse_yaml, read_yaml
from lightopt.sweep import load
from tests.sweep.helpers import sweep_dict, write

PROJECT_CONFIG = Path(__file__).parent / "foreign/cli_project/config.yaml"


def test_yaml_12_numbers_are_floats_everywhere(tmp_path):
    data, _ = parse_yaml("a: 1.0e3\nb: 1e-4\nc: -2E+2\nd: 10\ne: '1e3'\nf: 0.5\n")
    assert data == {"a": 1000.0, "b": 1e-4, "c": -200.0, "d": 10, "e": "1e3", "f": 0.5}
    text = (
        yaml.safe_dump(sweep_dict(tmp_path), sort_keys=False)
        .replace("low: 0.01", "low: 1e-2")
        .replace("high: 0.5", "high: 5.0e-1")
    )
    (tmp_path / "s.yaml").write_text(text)
    param = load(tmp_path / "s.yaml").search.params[0]
    assert (param.kind, param.low, param.high) == ("float", 0.01, 0.5)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    "text, match",
    [
        (BOMB, r"f\.yaml:\d+: its aliases expand to more than 100000 values"),
        ("a: &a [*a]\n", r"f\.yaml:1: the anchor &a refers to itself"),
        ("a: &a {b: *a}\n", r"f\.yaml:1: the anchor &a refers to itself"),
        ("[" * 3000 + "]" * 3000, r"f\.yaml: the YAML nests deeper than lightopt reads"),
        ("model: {a: 1\n", r"f\.yaml:2: malformed YAML"),
    ],
)
def test_hostile_or_broken_yaml_is_one_line(tmp_path, text, match):
    (tmp_path / "f.yaml").write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=match) as info:
        read_yaml(tmp_path / "f.yaml")
    assert "\n" not in str(info.value) and time.perf_counter() - started < 30  # not minutes, not a MemoryError


def test_a_huge_file_is_refused_in_a_short_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text("model: {class_path: examples.digits.DigitsMLP}\nnotes: '" + "x" * (10 * 1024 * 1024) + "'\n")
    assert main(["fit", str(big)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 300 and f"up to {MAX_FILE_BYTES / 1e6:.1f} MB" in err
    # Below the limit, a long value quoted in a message is cut too.
    (tmp_path / "long.yaml").write_text("modle: '" + "y" * 100_000 + "'\n")
    assert main(["fit", "long.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 600 and "`modle` is not a known key" in err


def _sweep_with(tmp_path, edit):
    data = copy.deepcopy(sweep_dict(tmp_path))
    edit(data)
    return write(tmp_path / "bad.yaml", data)


BAD = [
    # a search key past the end of a list, or into a list the file does not have
    (
        lambda d: (
            d["trainer"].update(
                callbacks=[
                    {"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"monitor": "val_loss"}}
                ]
            )
            or d["search"].update({"trainer.callbacks.5.init_args.patience": {"low": 1, "high": 3}})
        ),
        "`trainer.callbacks` is a list of 1, so `5` must be an index below that",
    ),
    (
        lambda d: d["search"].update({"trainer.callbacks.5.init_args.patience": {"low": 1, "high": 3}}),
        "`trainer.callbacks` is not in the config, so it has no item 5",
    ),
    # the trust guard: process, shell and file-system modules are refused, in the run config and in choices
    (
        lambda d: d["trainer"].update(logger={"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}}),
        "`trainer.logger.class_path` 'subprocess.Popen' is in the standard library's 'subprocess' module",
    ),
    (
        lambda d: d["search"].update(
            {"trainer.logger": {"choices": {"tb": False, "sh": {"class_path": "os.system", "init_args": {}}}}}
        ),
        "'os.system' is in the standard library's 'os' module",
    ),
    (
        lambda d: d["search"].update({"model.class_path": {"choices": ["shutil.rmtree", "examples.digits.DigitsMLP"]}}),
        "'shutil.rmtree' is in the standard library's 'shutil' module",
    ),
    # LightningCLI's parser has the last word, its message on one line with the key and line
    (lambda d: d["trainer"].update(max_epochs="many"), "`trainer.max_epochs`: Expected a <class 'int'>"),
    (lambda d: d["model"]["init_args"].update(hidden="wide"), "`model.init_args.hidden`: Expected a <class 'int'>"),
    (lambda d: d.update(seed_everything="x"), "`seed_everything`"),
    (
        lambda d: d.update(lightning_cli={"model_clas": "x.Y"}),
        "`lightning_cli.model_clas` is not a known key. Did you mean",
    ),
    (
        lambda d: d.update(optimizer={**d["optimizer"], "no_decay_bias_and_norm": True}),
        "`optimizer.no_decay_bias_and_norm` is not a known key",
    ),
]


@pytest.mark.parametrize("edit, match", BAD)
def test_bad_run_configs_are_one_line_with_file_and_line(tmp_path, edit, match):
    path = _sweep_with(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert match in message and "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{path}:")


def test_a_jsonargparse_error_names_the_line_in_the_right_file(tmp_path):
    base = PROJECT_CONFIG.read_text().replace("hidden: 16", "hidden: sixteen")
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "search.yaml").write_text(
        "study: {metric: valid_loss}\nsearch: {optimizer.init_args.lr: {low: 1e-3, high: 0.1}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "search.yaml", [tmp_path / "base.yaml"])
    line = base.splitlines().index("        hidden: sixteen") + 1
    assert str(info.value).startswith(f"{tmp_path / 'base.yaml'}:{line}: `model.init_args.net.init_args.hidden`")


def test_print_config_keys_and_explicit_nulls_mean_lightnings_defaults(tmp_path):
    config = {k: v for k, v in sweep_dict(tmp_path).items() if k not in ("study", "search")}
    config.update(seed_everything=True, ckpt_path=None, weights_only=None)
    config["trainer"].update(
        enable_progress_bar=None,
        logger={"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}},
    )
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    extra = TensorBoardLogger(tmp_path, name="", version="trial")
    run = build(config, trainer_defaults={"enable_progress_bar": False}, logger=extra)
    assert run.trainer.progress_bar_callback is not None  # null: Lightning's default, not the sweep's quiet one
    assert [type(logger) for logger in run.trainer.loggers] == [TensorBoardLogger, CSVLogger]  # the config's kept
    assert run.fit_kwargs == {}


def test_lightning_cli_reduce_on_plateau_monitors_its_own_metric():
    config, _ = read_yaml(PROJECT_CONFIG)
    config["trainer"].update(logger=False, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    run = build(config)
    run.fit()
    (scheduler,) = run.trainer.lr_scheduler_configs
    assert scheduler.monitor == "valid_loss" and type(scheduler.scheduler).__module__ == "lightning.pytorch.cli"


def test_short_schedule_names_and_tau_from_the_run_length(tmp_path):
    config = {k: v for k, v in sweep_dict(tmp_path).items() if k not in ("study", "search")}
    config["lr_scheduler"] = {"class_path": "LinearDecay", "init_args": {"final_ratio": 0.1}}
    config["trainer"].update(logger=False, max_epochs=2, limit_val_batches=1)
    run = build(config, seed=0)
    run.fit()
    (scheduler,) = run.trainer.lr_scheduler_configs
    assert scheduler.interval == "step" and scheduler.scheduler.tau == 8  # 2 epochs of 4 batches


def test_fixed_class_spec_is_refused_for_a_non_class():
    with pytest.raises(ValueError, match="must name a class"):
        build({"model": {}}, spec=CliSpec(model_class="lightopt.schedules.tau_from_passes"))
