"""Computes the norm stats of a train config's dataset into `<assets_base_dir>/<config>/<asset_id>/norm_stats.json`.

    uv run scripts/compute_norm_stats.py --config-name pi0_aloha_sim

Only the numeric columns are read (no video is decoded); state and action chunks pass through the config's
repack and robot transforms, so the stats describe exactly what the model is normalized with.
"""

import dataclasses
import logging

import tyro

from openpi.training import config as _config
from openpi.training import data_loader


@dataclasses.dataclass
class Args:
    # Name of the registered train config.
    config_name: str
    # Use at most this many frames (default: all).
    max_frames: int | None = None
    # Frames per running-stats update.
    batch_size: int = 1024


def main(args: Args) -> None:
    config = _config.get_config(args.config_name)
    path = data_loader.compute_norm_stats(config, max_frames=args.max_frames, batch_size=args.batch_size)
    print(f"Wrote {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(tyro.cli(Args))
