"""lightopt.pretraining: greedy supervised layer-wise pretraining (§8.7.4, Figure 8.7)."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

from lightopt.pretraining import greedy_layerwise_pretraining

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


class Data(LightningDataModule):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=g)
        self.y = (self.x[:, :1] * self.x[:, 1:2]).tanh()

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x[:48], self.y[:48]), batch_size=16)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x[48:], self.y[48:]), batch_size=16)


class Regression(LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)


def make_blocks():
    torch.manual_seed(0)
    return [
        torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh()),
        torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh()),
        torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh()),
    ]


def head_factory(k):
    return torch.nn.Linear(6, 1)


class Snapshots(Callback):
    """Each fit's network: its trainable parameter names, and every block's state (buffers too) at the end."""

    def __init__(self, blocks):
        self.blocks, self.trainable, self.states, self.networks = blocks, [], [], []

    def on_fit_start(self, trainer, pl_module):
        self.networks.append(pl_module.net)
        self.trainable.append({n for n, p in pl_module.named_parameters() if p.requires_grad})

    def on_fit_end(self, trainer, pl_module):
        self.states.append([{k: v.clone() for k, v in b.state_dict().items()} for b in self.blocks])


def pretrain(blocks, freeze=True, finetune_epochs=0, **kwargs):
    snapshots = Snapshots(blocks)
    result = greedy_layerwise_pretraining(
        blocks,
        head_factory,
        Regression,
        Data(),
        epochs_per_stage=2,
        finetune_epochs=finetune_epochs,
        freeze=freeze,
        trainer_kwargs=dict(QUIET, callbacks=[snapshots], **kwargs),
        seed=0,
    )
    return result, snapshots


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_earlier_blocks_are_bit_identical_after_later_stages(tmp_path):
    blocks = make_blocks()
    initial = [{k: v.clone() for k, v in b.state_dict().items()} for b in blocks]
    result, snapshots = pretrain(blocks, default_root_dir=tmp_path)
    states = snapshots.states  # after stages 0, 1, 2
    for k in range(3):
        assert not states_equal(states[k][k], initial[k])  # block k trained in stage k ...
        for later in range(k + 1, 3):
            assert states_equal(states[later][k], states[k][k])  # ... then frozen (BN statistics too)
        for earlier in range(k):
            assert states_equal(states[earlier][k], initial[k])  # and untouched before stage k
    # stage k trains block k and its own head only
    for k, trainable in enumerate(snapshots.trainable):
        block_k = {f"net.{k}.{name}" for name, _ in blocks[k].named_parameters()}
        assert trainable == block_k | {f"net.{k + 1}.weight", f"net.{k + 1}.bias"}
    assert all(p.requires_grad for b in blocks for p in b.parameters())  # restored
    assert all(m.training for b in blocks for m in b.modules())
    assert [set(stage.val_metrics) for stage in result.stages] == [{"val_loss"}] * 3
    assert result.finetune_metrics is None


def test_stage_k_network_is_head_after_blocks(tmp_path):
    blocks = make_blocks()
    result, snapshots = pretrain(blocks, default_root_dir=tmp_path)
    x = torch.randn(5, 4)
    for k, stage in enumerate(result.stages):
        assert snapshots.networks[k] is stage.network  # the network stage k trained
        assert list(stage.network) == [*blocks[: k + 1], stage.head]
        stage.network.eval()
        by_hand = x
        for block in blocks[: k + 1]:
            by_hand = block(by_hand)
        assert torch.equal(stage.network(x), stage.head(by_hand))
    heads = [stage.head for stage in result.stages]
    assert len({id(h) for h in heads}) == 3  # a fresh head per stage
    assert result.network is result.stages[-1].network and result.module.net is result.network


def test_stage_networks_keep_their_function_after_later_stages(tmp_path):
    """Block 0 frozen after stage 0 and head 0 discarded: the stage-0 network computes what it did then."""
    blocks = make_blocks()
    result, snapshots = pretrain(blocks, default_root_dir=tmp_path)
    at_stage_end = copy.deepcopy(blocks[0])
    at_stage_end.load_state_dict(snapshots.states[0][0])
    x = torch.randn(5, 4)
    result.stages[0].network.eval(), at_stage_end.eval()
    assert torch.equal(result.stages[0].network(x), result.stages[0].head(at_stage_end(x)))


def test_without_freezing_earlier_blocks_keep_training(tmp_path):
    blocks = make_blocks()
    _, snapshots = pretrain(blocks, freeze=False, default_root_dir=tmp_path)
    assert not states_equal(snapshots.states[1][0], snapshots.states[0][0])
    assert {n for n in snapshots.trainable[1] if n.startswith("net.0.")} == {
        "net.0.0.weight",
        "net.0.0.bias",
        "net.0.1.weight",
        "net.0.1.bias",
    }


def test_finetuning_trains_all_blocks_jointly(tmp_path):
    blocks = make_blocks()
    result, snapshots = pretrain(blocks, finetune_epochs=1, default_root_dir=tmp_path)
    assert len(snapshots.states) == 4  # 3 stages + fine-tuning
    assert snapshots.trainable[3] == {n for n, _ in result.module.named_parameters()}
    assert not states_equal(snapshots.states[3][0], snapshots.states[2][0])
    assert set(result.finetune_metrics) == {"val_loss"}
    assert result.module.net is result.network


def test_same_seed_same_result(tmp_path):
    a, _ = pretrain(make_blocks(), default_root_dir=tmp_path)
    b, _ = pretrain(make_blocks(), default_root_dir=tmp_path)
    assert states_equal(a.network.state_dict(), b.network.state_dict())


class NotWrapping(LightningModule):
    def __init__(self, net):
        super().__init__()
        self.other = torch.nn.Linear(1, 1)


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        (dict(blocks=[]), ValueError, r"`blocks` must hold at least one module"),
        (dict(blocks=torch.nn.Linear(4, 6)), TypeError, r"`blocks` must be a list of modules, an nn.ModuleList"),
        (dict(blocks=3), TypeError, r"`blocks` must be a list of modules"),
        (dict(blocks=[torch.nn.Linear(4, 6), "relu"]), TypeError, r"`blocks\[1\]` must be an nn.Module"),
        (dict(head_factory=None), TypeError, r"`head_factory` must be callable"),
        (dict(wrap="Regression"), TypeError, r"`wrap` must be callable"),
        (
            dict(epochs_per_stage=0),
            ValueError,
            r"`epochs_per_stage` must be an integer >= 1, but got epochs_per_stage=0\.",
        ),
        (
            dict(finetune_epochs=-1),
            ValueError,
            r"`finetune_epochs` must be an integer >= 0, but got finetune_epochs=-1\.",
        ),
        (dict(freeze="yes"), TypeError, r"`freeze` must be True or False"),
        (dict(trainer_kwargs=dict(max_epochs=3)), ValueError, r"`trainer_kwargs` must not set `max_epochs`"),
        (dict(trainer_kwargs=[("max_epochs", 3)]), TypeError, r"`trainer_kwargs` must be a mapping"),
        (dict(seed=-1), ValueError, r"`seed` must be an integer >= 0, but got seed=-1\."),
        (
            dict(head_factory=lambda k: "linear"),
            TypeError,
            r"`head_factory\(0\)` must return an nn.Module, but it returned str",
        ),
        (dict(wrap=lambda net: net), TypeError, r"`wrap` must return a LightningModule, but it returned Sequential"),
        (dict(wrap=NotWrapping), ValueError, r"must return a LightningModule that contains `network`"),
    ],
)
def test_bad_arguments(kwargs, exception, match):
    kwargs = (
        dict(
            blocks=make_blocks(),
            head_factory=head_factory,
            wrap=Regression,
            datamodule=Data(),
            epochs_per_stage=1,
            trainer_kwargs=QUIET,
        )
        | kwargs
    )
    blocks = kwargs["blocks"]
    with pytest.raises(exception, match=match):
        greedy_layerwise_pretraining(**kwargs)
    if isinstance(blocks, list) and blocks and isinstance(blocks[0], torch.nn.Module):
        assert all(p.requires_grad for p in blocks[0].parameters())  # nothing left frozen


def test_digits_example_runs(capsys):
    from examples.greedy_pretraining import main

    args = ["--hidden", "16", "--epochs-per-stage", "1", "--finetune-epochs", "1", "--limit-train-batches", "2"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "stage 1",
        "stage 2",
        "stage 3",
        "fine-tuned jointly, 1 epochs",
        "greedy pretraining (4 epochs in all)",
        "from scratch (4 epochs)",
    ]
    assert all("val_acc=" in line for line in lines)
