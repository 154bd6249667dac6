import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from lightning.pytorch.cli import LightningCLI

from tests.foreign.fixed_project.project import BlobClassifier, Blobs

if __name__ == "__main__":
    LightningCLI(BlobClassifier, Blobs, save_config_kwargs={"overwrite": True})
