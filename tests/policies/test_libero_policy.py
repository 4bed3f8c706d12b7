"""Tests for the LIBERO transforms."""

import numpy as np
import pytest

from openpi.policies import libero_policy


def test_inputs_map_cameras_and_mask_the_right_wrist():
    example = libero_policy.make_libero_example()
    example["actions"] = np.ones((50, 7))
    out = libero_policy.LiberoInputs(model_type="pi0")(example)
    np.testing.assert_array_equal(out["state"], example["observation/state"])
    assert out["image"]["base_0_rgb"] is example["observation/image"]
    assert out["image"]["left_wrist_0_rgb"] is example["observation/wrist_image"]
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    np.testing.assert_array_equal(out["actions"], np.ones((50, 7)))


def test_action_dim_pads_state_and_actions():
    example = libero_policy.make_libero_example()
    example["actions"] = np.ones((50, 7))
    out = libero_policy.LiberoInputs(32)(example)
    assert out["state"].shape == (32,)
    assert out["actions"].shape == (50, 32)
    assert (out["actions"][:, 7:] == 0).all()


def test_pi0_fast_inputs_put_the_wrist_camera_in_the_fast_wrist_slot_unmasked():
    example = libero_policy.make_libero_example()
    out = libero_policy.LiberoInputs(model_type="pi0_fast")(example)
    assert out["image"]["base_0_rgb"] is example["observation/image"]
    assert out["image"]["wrist_0_rgb"] is example["observation/wrist_image"]
    assert not out["image"]["base_1_rgb"].any()
    assert out["image_mask"] == {"base_0_rgb": True, "base_1_rgb": True, "wrist_0_rgb": True}
    np.testing.assert_array_equal(out["state"], example["observation/state"])


def test_outputs_keep_the_first_7_dims():
    actions = np.random.default_rng(0).normal(size=(50, 32))
    np.testing.assert_array_equal(libero_policy.LiberoOutputs()({"actions": actions})["actions"], actions[:, :7])


def test_wrong_state_size_is_rejected():
    example = libero_policy.make_libero_example()
    example["observation/state"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"observation/state: expected shape \[\.\.\., 8\], got \(7,\)"):
        libero_policy.LiberoInputs()(example)
