import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # the package as `python main.py` runs it

from lightning.pytorch.cli import LightningCLI


def main():
    LightningCLI(save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
