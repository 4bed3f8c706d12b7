"""Tests for the DROID transforms."""

import numpy as np
import pytest

from openpi.policies import droid_policy


def test_inputs_build_8d_state_and_mask_the_right_wrist():
    example = droid_policy.make_droid_example()
    out = droid_policy.DroidInputs()(example)
    np.testing.assert_array_equal(
        out["state"], np.concatenate([example["observation/joint_position"], example["observation/gripper_position"]])
    )
    assert out["image"]["base_0_rgb"] is example["observation/exterior_image_1_left"]
    assert out["image"]["left_wrist_0_rgb"] is example["observation/wrist_image_left"]
    assert (out["image"]["right_wrist_0_rgb"] == 0).all()
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    assert out["prompt"] == "do something"


def test_scalar_gripper_and_chw_float_images_are_accepted():
    example = droid_policy.make_droid_example()
    example["observation/gripper_position"] = 0.25
    example["observation/exterior_image_1_left"] = np.ones((3, 10, 12), np.float32)
    out = droid_policy.DroidInputs(action_dim=32)(example)
    assert out["state"].shape == (32,)
    assert out["state"][7] == 0.25
    assert out["image"]["base_0_rgb"].shape == (10, 12, 3)
    assert (out["image"]["base_0_rgb"] == 255).all()


def test_outputs_keep_the_first_8_dims():
    actions = np.arange(10 * 32, dtype=np.float32).reshape(10, 32)
    out = droid_policy.DroidOutputs()({"actions": actions, "state": np.zeros(32)})
    np.testing.assert_array_equal(out["actions"], actions[:, :8])
    assert set(out) == {"actions"}


def test_pi05_uses_the_pi0_camera_slots():
    out = droid_policy.DroidInputs(model_type="pi05")(droid_policy.make_droid_example())
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    assert out["state"].shape == (8,)


def test_pi0_fast_inputs_use_fast_camera_slots_unmasked_and_pad_to_action_dim():
    example = droid_policy.make_droid_example()
    example["actions"] = np.ones((10, 8))
    out = droid_policy.DroidInputs(action_dim=10, model_type="pi0_fast")(example)
    assert out["image"]["base_0_rgb"] is example["observation/exterior_image_1_left"]
    assert out["image"]["wrist_0_rgb"] is example["observation/wrist_image_left"]
    assert not out["image"]["base_1_rgb"].any()
    assert out["image_mask"] == {"base_0_rgb": True, "base_1_rgb": True, "wrist_0_rgb": True}
    assert out["state"].shape == (10,)
    assert out["actions"].shape == (10, 10)


def test_bad_joint_vector_and_model_type_are_rejected():
    example = droid_policy.make_droid_example()
    example["observation/joint_position"] = np.zeros(6)
    with pytest.raises(ValueError, match="observation/joint_position"):
        droid_policy.DroidInputs()(example)
    with pytest.raises(ValueError, match="model_type"):
        droid_policy.DroidInputs(model_type="pi1")
