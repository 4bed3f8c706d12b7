"""Trains a registered config: `uv run scripts/train.py <config-name> --exp-name=NAME [--overwrite | --resume]`.

`uv run scripts/train.py <config-name> --help` lists every TrainConfig field as a flag. The loop itself is
`openpi.training.trainer.train` (data parallel over all devices and processes, FSDP, checkpoints, metrics log and
loss curve under `<checkpoint_base_dir>/<config>/<exp_name>/`); on a machine with an NVIDIA GPU that JAX cannot use
(CPU-only install), it stops at start unless `--allow-cpu`.
"""

import logging

from openpi.training import config as _config
from openpi.training import trainer
from openpi.training import utils as _utils


def init_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname).1s [%(process)d] %(name)s: %(message)s", force=True
    )
    # orbax logs every handler it creates through absl at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)


def main(config: _config.TrainConfig) -> _utils.TrainState:
    """Runs training with logging set up for a terminal and returns the final train state."""
    init_logging()
    return trainer.train(config)


if __name__ == "__main__":
    main(_config.cli())
