"""The guide's "Define the policy inputs and outputs": `UR5Inputs` and `UR5Outputs` as the README writes them,
with two corrections: the comma missing after `"left_wrist_0_rgb": data["wrist_rgb"]`, and `np.atleast_1d` around
the gripper. LeRobot stores a shape-(1,) feature such as the gripper as a scalar column and gives it back as a 0-d
value (lerobot's `get_hf_features_from_features`; our reader does the same), which the README's
`np.concatenate([data["joints"], data["gripper"]])` cannot join to the joints; the robot client's 1-d gripper
passes through unchanged."""

import dataclasses

import numpy as np

from openpi import transforms


# fmt: off
@dataclasses.dataclass(frozen=True)
class UR5Inputs(transforms.DataTransformFn):
    # This is the action dimensionality of the model (not the robot!). The model has the same
    # state and action dimensionality, so this variable can be used to determine how to pad
    # state and action inputs loaded from the dataset.
    action_dim: int

    def __call__(self, data: dict) -> dict:
        # First, concatenate the joints and gripper into the state vector.
        # Pad to the expected input dimensionality of the model (same as action_dim).
        state = np.concatenate([data["joints"], np.atleast_1d(data["gripper"])])
        state = transforms.pad_to_dim(state, self.action_dim)

        inputs = {
            "state": state,
            # Dictionary containing image inputs, the keys must have these names.
            "image": {
                "base_0_rgb": data["base_rgb"],
                "left_wrist_0_rgb": data["wrist_rgb"],
                # Since there is no right wrist, replace with zeros
                "right_wrist_0_rgb": np.zeros_like(data["base_rgb"]),
            },
            # 1D bool indicating if the image exists.
            "image_mask": {
                "base_0_rgb": np.True_,
                "left_wrist_0_rgb": np.True_,
                # Since the "slot" for the right wrist is not used, this mask is set
                # to False
                "right_wrist_0_rgb": np.False_,
            },
        }

        # If this is called during training, actions will also be available.
        if "actions" in data:
            # The robot produces 7D actions (6 DoF + 1 gripper), and we pad these.
            inputs["actions"] = transforms.pad_to_dim(data["actions"], self.action_dim)

        # Pass the prompt along to the model.
        if "prompt" in data:
            inputs["prompt"] = data["prompt"]

        return inputs


@dataclasses.dataclass(frozen=True)
class UR5Outputs(transforms.DataTransformFn):
    def __call__(self, data: dict) -> dict:
        # Since the robot has 7 action dimensions (6 DoF + gripper), return the first 7 dims
        return {"actions": np.asarray(data["actions"][:, :7])}
# fmt: on
