"""Exports a training checkpoint of pi0, pi0.5 or pi0-FAST as a self-contained exported model (see
openpi.policies.exported): its sampler, weights, norm stats and tokenizers.

    uv run scripts/export_policy.py --config pi0_aloha_sim --checkpoint-dir checkpoints/pi0_aloha_sim/exp/10000 \\
        --out exported/pi0_aloha_sim/model [--processor huggingface_aloha_sim_transfer_cube]

Serve the result with `scripts/serve_policy.py --env ENV policy:exported --policy.dir=<out>`.
"""

import dataclasses
import logging

import tyro

from openpi.policies import policy_config as _policy_config
from openpi.training import config as _config


@dataclasses.dataclass
class Args:
    """Arguments of export_policy."""

    # Training config name (e.g. "pi0_aloha_sim", "pi05_droid", "pi0_fast_droid"): the model and its tokenizers.
    config: str
    # Checkpoint directory, local or s3:// / gs:// (e.g. "checkpoints/pi0_aloha_sim/exp/10000").
    checkpoint_dir: str
    # Output directory of the exported model.
    out: str
    # Name under which the checkpoint's norm stats are stored; default: the config's asset id.
    processor: str | None = None
    # Denoising steps of the exported action sampler (pi0, pi0.5).
    num_steps: int = 10
    # Most tokens the exported sampler generates per action chunk (pi0-FAST; the temperature stays free).
    max_decoding_steps: int = 256
    # Replace an existing output directory.
    overwrite: bool = False


def main(args: Args) -> None:
    out = _policy_config.export_trained_policy(
        _config.get_config(args.config),
        args.checkpoint_dir,
        args.out,
        processor=args.processor,
        num_steps=args.num_steps,
        max_decoding_steps=args.max_decoding_steps,
        overwrite=args.overwrite,
    )
    logging.info("Exported %s to %s", args.checkpoint_dir, out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
