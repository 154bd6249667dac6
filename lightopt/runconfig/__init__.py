"""The run config: what ``python main.py fit --config FILE`` reads, read the way LightningCLI reads it.

One home for everything lightopt does with a run config, used by ``lightopt fit``, the sweeps and
:class:`lightopt.ConfigureOptimizersMixin`:

* :func:`read_yaml` / :func:`parse_yaml` read YAML safely (YAML 1.2 numbers, bounded size and aliases,
  line numbers); ``--config`` files and dotted overrides merge in
  LightningCLI's order (:func:`read_configs`, :func:`parse_overrides`, :func:`apply_overrides`);
  :func:`check_run_config` checks a config, first with lightopt's one-line
  messages ("did you mean"), then with the LightningCLI parser itself;
* :func:`build` instantiates it through LightningCLI (``run=False``) and returns a :class:`Run`;
* :func:`optimizers_from_config` builds an optimizer and its schedules from LightningCLI-style dicts;
* :func:`get_key` / :func:`set_key` / :func:`check_key` address nested values by dotted keys;
* errors are :class:`ConfigError`: ``FILE:LINE: message`` on one line.
"""

from lightopt._lazy import lazy_attributes
from lightopt.runconfig._classes import (
    REFUSED_MODULES,
    did_you_mean,
    import_class,
    import_object,
    init_parameters,
    resolve_class,
)
from lightopt.runconfig._errors import ConfigError, first_key, line_of
from lightopt.runconfig._files import (
    COMMAND_LINE,
    Origins,
    apply_overrides,
    merge_configs,
    parse_overrides,
    read_configs,
)
from lightopt.runconfig._keys import MISSING, check_key, class_nodes, get_key, set_key
from lightopt.runconfig._yaml import MAX_ALIAS_NODES, MAX_FILE_BYTES, dump_yaml, parse_yaml, read_yaml

__all__ = [
    "FIT_KEYS",
    "MAX_ALIAS_NODES",
    "MAX_FILE_BYTES",
    "MISSING",
    "OPTIMIZER_KEYS",
    "REFUSED_MODULES",
    "RUN_KEYS",
    "COMMAND_LINE",
    "Origins",
    "apply_overrides",
    "check_run_config",
    "class_nodes",
    "merge_configs",
    "parse_overrides",
    "read_configs",
    "SCHEDULER_KEYS",
    "CliSpec",
    "ConfigError",
    "Run",
    "build",
    "check_key",
    "check_with_lightning_cli",
    "cli_class_for",
    "did_you_mean",
    "dump_yaml",
    "first_key",
    "get_key",
    "import_class",
    "import_object",
    "init_parameters",
    "line_of",
    "optimizers_from_config",
    "parse_yaml",
    "read_yaml",
    "resolve_class",
    "set_key",
    "split_class_config",
]

# These import torch and Lightning: loaded on first use, so that reading a study back (`lightopt sweep show`)
# and the errors of this package cost no torch import.
_LAZY = {
    **dict.fromkeys(("RUN_KEYS", "check_run_config"), "lightopt.runconfig._check"),
    **dict.fromkeys(
        ("FIT_KEYS", "CliSpec", "Run", "build", "check_with_lightning_cli", "cli_class_for"),
        "lightopt.runconfig._lightning_cli",
    ),
    **dict.fromkeys(
        ("OPTIMIZER_KEYS", "SCHEDULER_KEYS", "optimizers_from_config", "split_class_config"),
        "lightopt.runconfig._optimizers",
    ),
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
