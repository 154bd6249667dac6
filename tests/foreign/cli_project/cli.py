"""The project's own LightningCLI: the backbone's input width follows the data's."""

from lightning.pytorch.cli import LightningCLI


class RegressionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.init_args.in_features", "model.init_args.net.init_args.in_features")
