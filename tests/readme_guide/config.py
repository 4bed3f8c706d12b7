"""The guide's "Define the training config": `UR5DataConfig` and the UR5 `TrainConfig` as the README writes them
(only `.exist()` corrected to `.exists()`), with the imports of `src/openpi/training/config.py`; the config is
named `ur5_guide`, since `ur5` is registered already. Below them, the tiny variant the tests train and serve."""

# The pasted code is kept as the README writes it.
# ruff: noqa: SIM108

import dataclasses
import pathlib

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.shared import normalize as _normalize
from openpi.training import config as _config
from openpi.training import weight_loaders
from openpi.training.config import DataConfig
from openpi.training.config import DataConfigFactory
from openpi.training.config import TrainConfig
from readme_guide import ur5_policy


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


_CONFIGS = [
    TrainConfig(
        name="ur5_guide",
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

# Not from the README: what the tests train and serve instead of pi0 on the pi0 base weights.
NAME = "ur5_guide"
REPO_ID = "lerobot/my_ur5_dataset"


def tiny_config(**overrides) -> TrainConfig:
    """The guide's config with the tiny debug model and no base weights, plus `overrides`."""
    (guide,) = (config for config in _CONFIGS if config.name == NAME)
    return dataclasses.replace(
        guide, model=_config.DEBUG_MODEL, weight_loader=weight_loaders.NoOpWeightLoader(), **overrides
    )
