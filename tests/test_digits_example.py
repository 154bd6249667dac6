"""The digits example: a seeded stratified split, two small models that learn, and the command line."""

from __future__ import annotations

import re

import lightning as L
import numpy as np
import pytest
import torch

from examples.digits import DigitsConvNet, DigitsDataModule, DigitsMLP, main


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread (and other jobs share the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def split(**kwargs) -> DigitsDataModule:
    datamodule = DigitsDataModule(**kwargs)
    datamodule.setup()
    return datamodule


def test_the_split_is_seeded():
    a, b, c = split(seed=0), split(seed=0), split(seed=1)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split_indices[name], b.split_indices[name])
        assert not np.array_equal(np.sort(a.split_indices[name]), np.sort(c.split_indices[name]))
    torch.testing.assert_close(a.val_set.tensors[0], b.val_set.tensors[0])


@pytest.mark.parametrize(
    ("val_fraction", "test_fraction", "sizes"), [(0.2, 0.2, (1077, 360, 360)), (0.1, 0.3, (1077, 180, 540))]
)
def test_sizes_add_up_and_the_split_is_stratified_and_disjoint(val_fraction, test_fraction, sizes):
    datamodule = split(val_fraction=val_fraction, test_fraction=test_fraction)
    indices = datamodule.split_indices
    assert tuple(len(indices[name]) for name in ("train", "val", "test")) == sizes
    assert sorted(np.concatenate(list(indices.values())).tolist()) == list(range(1797))
    labels = torch.cat([datamodule.train_set.tensors[1], datamodule.val_set.tensors[1], datamodule.test_set.tensors[1]])
    overall = torch.bincount(labels, minlength=10) / len(labels)
    for dataset in (datamodule.train_set, datamodule.val_set, datamodule.test_set):
        y = dataset.tensors[1]
        counts = torch.bincount(y, minlength=10)
        assert (counts - overall * len(y)).abs().max() <= 1  # each class within one image of its share


def test_images_are_scaled_to_the_unit_interval_and_batched_as_images():
    datamodule = split(batch_size=16)
    images = torch.cat([d.tensors[0] for d in (datamodule.train_set, datamodule.val_set, datamodule.test_set)])
    assert (images.min(), images.max()) == (0.0, 1.0)
    x, y = next(iter(datamodule.train_dataloader()))
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((16, 1, 8, 8), torch.float32, (16,), torch.int64)
    assert len(datamodule.val_dataloader()) == 23  # ceil(360 / 16)


def test_train_plus_val_trains_on_both_and_keeps_the_test_set_out():
    datamodule = split(train_plus_val=True, batch_size=2000)
    ((_x, y),) = list(datamodule.train_dataloader())
    assert len(y) == 1077 + 360
    assert len(datamodule.test_set) == 360


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        ({"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1, but got batch_size=0."),
        ({"batch_size": 8.0}, TypeError, r"`batch_size` must be an integer, but got batch_size=8.0."),
        ({"num_workers": -1}, ValueError, r"`num_workers` must be an integer >= 0"),
        ({"val_fraction": 0.0}, ValueError, r"`val_fraction` must be in \(0, 1\), but got val_fraction=0.0."),
        ({"test_fraction": 1.0}, ValueError, r"`test_fraction` must be in \(0, 1\)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, ValueError, r"`val_fraction \+ test_fraction` must be < 1"),
    ],
)
def test_bad_datamodule_arguments(kwargs, exception, match):
    with pytest.raises(exception, match=match):
        DigitsDataModule(**kwargs)


def test_just_inside_the_bounds_is_accepted():
    datamodule = split(batch_size=1, num_workers=0, val_fraction=0.05, test_fraction=0.05)
    assert len(datamodule.train_set) > 1500


@pytest.mark.parametrize("model_cls", [DigitsMLP, DigitsConvNet])
def test_each_model_learns_the_digits_in_two_epochs(tmp_path, one_thread, model_cls):
    L.seed_everything(0, workers=True)
    model = model_cls()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule = DigitsDataModule()
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.callback_metrics
    assert {"train_loss_epoch", "val_loss", "val_acc"} <= set(metrics)
    assert metrics["val_acc"] > 0.85
    assert metrics["val_loss"] < 0.6
    (test,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert test["test_acc"] > 0.85 and set(test) == {"test_loss", "test_acc"}
    assert model.hparams.optimizer["class_path"] == "lightopt.optim.SGD"


SUMMARY = re.compile(
    r"^digits (mlp|convnet) (sgd|adam) lr=[\d.]+ momentum=0.9 epochs=2 seed=3: "
    r"val_loss=(\d\.\d{4}) val_acc=(\d\.\d{4}) test_acc=(\d\.\d{4}) \([\d.]+ s\)$"
)


@pytest.mark.parametrize(("model", "optimizer"), [("mlp", "sgd"), ("convnet", "adam")])
def test_main_trains_and_prints_one_summary_line(capsys, model, optimizer):
    threads = torch.get_num_threads()
    argv = ["--model", model, "--optimizer", optimizer, "--epochs", "2", "--batch-size", "128", "--seed", "3"]
    assert main(argv) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    match = SUMMARY.match(out[0])
    assert match, out[0]
    assert match.group(1, 2) == (model, optimizer)
    assert float(match.group(4)) > 0.7 and float(match.group(5)) > 0.7


def test_main_is_reproducible_with_a_seed(capsys):
    argv = ["--epochs", "1", "--batch-size", "256", "--seed", "3"]
    main(argv)
    main(argv)
    first, second = (re.sub(r"\([\d.]+ s\)", "", line) for line in capsys.readouterr().out.splitlines())
    assert first == second


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--optimizer", "adagrad", "--momentum", "0.9"], "adagrad has no momentum"),
        (["--optimizer", "adam", "--nesterov"], "--nesterov is for sgd and rmsprop"),
        (["--epochs", "0"], "must be >= 1"),
        (["--model", "resnet"], "invalid choice: 'resnet'"),
    ],
)
def test_main_rejects_bad_arguments_with_exit_code_2(capsys, argv, match):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("train_plus_val", [False, True])
def test_loaders_give_the_batches_of_a_plain_dataloader_over_the_same_tensors(train_plus_val):
    datamodule = split(batch_size=100, seed=2, train_plus_val=train_plus_val)
    train = (
        torch.utils.data.ConcatDataset([datamodule.train_set, datamodule.val_set])
        if train_plus_val
        else torch.utils.data.TensorDataset(*datamodule.train_set.tensors)
    )
    plain = torch.utils.data.DataLoader(train, 100, shuffle=True, generator=torch.Generator().manual_seed(2))
    ours = list(datamodule.train_dataloader())
    assert len(ours) == len(plain) == (15 if train_plus_val else 11)
    for (x, y), (px, py) in zip(ours, plain):
        assert torch.equal(x, px) and torch.equal(y, py)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*datamodule.val_set.tensors), 100)
    for (x, y), (px, py) in zip(datamodule.val_dataloader(), val):
        assert torch.equal(x, px) and torch.equal(y, py)


def test_logged_epoch_values_are_means_over_the_examples_and_reach_tensorboard(tmp_path, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    L.seed_everything(0, workers=True)
    model, datamodule = DigitsMLP(hidden=16), DigitsDataModule(batch_size=50)
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="", version="run")
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    x, y = datamodule.val_set.tensors
    with torch.no_grad():
        logits = model(x)
    metrics = trainer.callback_metrics
    torch.testing.assert_close(metrics["val_loss"], torch.nn.functional.cross_entropy(logits, y), rtol=1e-5, atol=0)
    torch.testing.assert_close(metrics["val_acc"], (logits.argmax(1) == y).float().mean(), rtol=1e-5, atol=0)
    events = EventAccumulator(str(tmp_path / "run")).Reload()
    assert {"train_loss_step", "train_loss_epoch", "val_loss", "val_acc"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train_loss_step")] == [4, 9, 14, 19, 24, 29, 34, 39]  # 22 steps/epoch
    assert len(events.Scalars("train_loss_epoch")) == len(events.Scalars("val_loss")) == 2
