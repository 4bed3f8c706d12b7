"""The README guide's `UR5DataConfig`, pasted verbatim, builds its data config, gets its norm stats from
compute_norm_stats.py under the dataset's repo id, and a run trained with it carries them in its checkpoint under
`assets/<repo_id>/` (what serving normalizes with).

The guide's model transforms tokenize with PaliGemma's sentencepiece model; offline, the download cache holds a small
stand-in (the debug character model, copied there with its completion marker as the offline error message describes).
"""

# The pasted code is kept as the README writes it.
# ruff: noqa: SIM108

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.policies import ur5_policy
from openpi.shared import download
from openpi.shared import normalize as _normalize
from openpi.training import config as _config
from openpi.training import data_loader
from openpi.training import debug_data
from openpi.training import lerobot_dataset
from openpi.training import weight_loaders
from openpi.training.config import DataConfig
from openpi.training.config import DataConfigFactory
from openpi.training.config import TrainConfig

from . import train_helpers

train = train_helpers.load_train_module()


# The README's "Define the training config" block, verbatim but for its typo `.exist()`.
# fmt: off
@dataclasses.dataclass(frozen=True)
class UR5DataConfig(DataConfigFactory):
    # This is the repo id from LeRobot for this dataset repo.
    repo_id: str
    # If true, will convert joint dimensions to deltas with respect to the current state
    # before passing to the model. Most models expect this. Grippers do not use delta.
    use_delta_joint_actions: bool = False
    # By default, the prompt will be "be a good robot", but we can override it here.
    # We can also set the prompt in the command line, but it's good to specify a reasonable
    # default that matches a reasonable prompt in the training set.
    default_prompt: str | None = None
    # If true, will disable syncing the dataset from the huggingface hub.
    local_files_only: bool = False

    def create(self, metadata_dir: pathlib.Path, model: _model.Model) -> DataConfig:
        # This is standard boilerplate for loading norm stats for openpi checkpoints.
        norm_stats_path = metadata_dir / self.repo_id / "norm_stats.json"
        if norm_stats_path.exists():
            norm_stats = _normalize.deserialize_json(norm_stats_path.read_text())
        else:
            norm_stats = None

        # These transforms are the ones we wrote earlier.
        data_transforms=_transforms.Group(
            inputs=[ur5_policy.UR5Inputs(action_dim=model.action_dim)],
            outputs=[ur5_policy.UR5Outputs()],
        )

        if self.use_delta_joint_actions:
            # This mask defines which action/state dimensions correspond to grippers.
            # Positive arguments to make_bool_mask create that number of True values,
            # negative arguments create that number of False values, so this call will
            # create a bool array with 6xTrue followed by 1xFalse.
            delta_action_mask = _transforms.make_bool_mask(6, -1)
            data_transforms = data_transforms.push(
                inputs=[_transforms.DeltaActions(delta_action_mask)],
                outputs=[_transforms.AbsoluteActions(delta_action_mask)],
            )

        return DataConfig(
            repo_id=self.repo_id,
            norm_stats=norm_stats,
            data_transforms=data_transforms,
            # These transformations resize the images and tokenize the prompt.
            model_transforms=_transforms.Group(
                inputs=[
                    # This is only necessary if we expect the input images to require
                    # resizing. If your data is already 224x224 and your robot produces
                    # 224x224 images, then you can omit this, but it's also fine to leave
                    # this in as a precaution -- if the images are already 224x224, this
                    # adds no additional cost.
                    _transforms.ResizeImages(224, 224),
                    _transforms.TokenizePrompt(
                        _tokenizer.PaligemmaTokenizer(model.max_token_len),
                        default_prompt=self.default_prompt,
                    ),
                ]
            ),
            local_files_only=self.local_files_only,
        )


# The README's `TrainConfig` of the UR5 example, verbatim but for its name (`ur5` is registered already).
_CONFIGS = [
    TrainConfig(
        name="ur5_readme",
        data=UR5DataConfig(
            # This points to the repo ID for your dataset.
            repo_id="lerobot/my_ur5_dataset",
            # We set this to True because pi0_base expects delta actions.
            use_delta_joint_actions=True,
            # Set a reasonable default here.
            default_prompt="be a good robot",
            # Set this to True if you are using a dataset that is not on the HuggingFace hub.
            local_files_only=True,
        ),
        # This is the standard pi0 pretrained checkpoint.
        weight_loader=weight_loaders.CheckpointWeightLoader("s3://openpi-assets/checkpoints/pi0_base/params"),
    ),
]
# fmt: on

REPO_ID = "lerobot/my_ur5_dataset"


def _write_ur5_dataset(num_episodes: int = 2, length: int = 12, image_size: int = 32) -> None:
    """A small LeRobot dataset with the guide's keys: 6 joints drifting to a target, a closing gripper, two cameras."""
    image = {"dtype": "image", "shape": (image_size, image_size, 3), "names": ["height", "width", "channel"]}
    features = {
        "joints": {"dtype": "float32", "shape": (6,), "names": None},
        "gripper": {"dtype": "float32", "shape": (1,), "names": None},
        "base_rgb": image,
        "wrist_rgb": image,
        "actions": {"dtype": "float32", "shape": (7,), "names": None},
    }
    dataset = lerobot_dataset.LeRobotDataset.create(REPO_ID, fps=10, features=features, robot_type="ur5")
    rng = np.random.default_rng(0)
    for _ in range(num_episodes):
        joints, target = rng.normal(0, 0.5, 6), rng.normal(0, 0.5, 6)
        for t in range(length):
            gripper = t / (length - 1)
            next_joints = joints + 0.2 * (target - joints)
            dataset.add_frame(
                {
                    "joints": joints.astype(np.float32),
                    "gripper": np.array([gripper], np.float32),
                    "base_rgb": np.full((image_size, image_size, 3), 20 * t, np.uint8),
                    "wrist_rgb": np.full((image_size, image_size, 3), 255 - 20 * t, np.uint8),
                    "actions": np.append(next_joints, gripper).astype(np.float32),
                    "task": "pick up the cube",
                }
            )
            joints = next_joints
        dataset.save_episode()
    dataset.finalize()


def _cache_as_paligemma_tokenizer(model_file: pathlib.Path) -> None:
    """Copies `model_file` into the download cache as PaliGemma's tokenizer, with the `.complete` marker that makes
    the download layer count it as a complete download."""
    url = _tokenizer.PALIGEMMA_TOKENIZER_URL
    cached = download.get_cache_dir() / url.removeprefix("gs://")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(model_file.read_bytes())
    marker = cached.with_name(f".{cached.name}.complete")
    marker.write_text(json.dumps({"url": url, "files": {"": cached.stat().st_size}}))


@pytest.fixture
def guide_config(tmp_path, monkeypatch) -> TrainConfig:
    """The guide's train config, offline, on the tiny debug model without base weights."""
    train_helpers.isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    _write_ur5_dataset()
    _cache_as_paligemma_tokenizer(debug_data.tokenizer_path())
    return dataclasses.replace(
        _CONFIGS[0],
        exp_name="my_experiment",
        model=_config.DEBUG_MODEL,
        weight_loader=weight_loaders.NoOpWeightLoader(),
        batch_size=2,
        num_train_steps=1,
        num_workers=0,
        wandb_enabled=False,
        checkpoint_base_dir=str(tmp_path / "checkpoints"),
        assets_base_dir=str(tmp_path / "assets"),
    )


def test_guide_data_config_keeps_its_norm_stats_under_the_repo_id_into_the_checkpoint(guide_config):
    data_config = guide_config.data.create(guide_config.assets_dirs, guide_config.model)
    assert (data_config.repo_id, data_config.asset_id, data_config.norm_stats) == (REPO_ID, REPO_ID, None)

    # uv run scripts/compute_norm_stats.py --config-name ur5
    stats_path = data_loader.compute_norm_stats(guide_config, progress=False)
    assert stats_path == guide_config.assets_dirs / REPO_ID / "norm_stats.json"
    # The guide's create() reads them back from `metadata_dir / repo_id`.
    data_config = guide_config.data.create(guide_config.assets_dirs, guide_config.model)
    assert data_config.norm_stats is not None

    # uv run scripts/train.py ur5 --exp-name=my_experiment
    train.main(guide_config)
    carried = _normalize.load(guide_config.checkpoint_dir / "0" / "assets" / REPO_ID)
    for key in ("state", "actions"):
        np.testing.assert_array_equal(carried[key].mean, data_config.norm_stats[key].mean)
