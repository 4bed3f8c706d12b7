"""Tests for the CALVIN transforms and their documented state/action mapping."""

import numpy as np
import pytest

from openpi.policies import calvin_policy


def test_state_replaces_euler_angles_by_sines_and_cosines():
    robot_obs = np.arange(15, dtype=np.float64)
    robot_obs[3:6] = [np.pi, -np.pi / 2, 0.0]
    state = calvin_policy.robot_obs_to_state(robot_obs)
    expected = [0, 1, 2, 0, -1, 0, -1, 0, 1, *range(6, 15)]
    np.testing.assert_allclose(state, expected, atol=1e-12)


def test_roll_on_either_side_of_pi_gives_nearly_the_same_state():
    near_plus, near_minus = np.zeros(15), np.zeros(15)
    near_plus[3], near_minus[3] = np.pi - 1e-3, -np.pi + 1e-3
    difference = calvin_policy.robot_obs_to_state(near_plus) - calvin_policy.robot_obs_to_state(near_minus)
    assert np.abs(difference).max() < 3e-3


def test_inputs_map_cameras_and_keep_their_sizes():
    example = calvin_policy.make_calvin_example()
    example["actions"] = np.zeros((10, 7))
    out = calvin_policy.CalvinInputs(action_dim=32)(example)
    assert out["image"]["base_0_rgb"] is example["observation/rgb_static"]
    assert out["image"]["left_wrist_0_rgb"] is example["observation/rgb_gripper"]
    assert out["image"]["right_wrist_0_rgb"].shape == (200, 200, 3)
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    np.testing.assert_allclose(out["state"][:18], calvin_policy.robot_obs_to_state(example["observation/state"]))
    assert out["state"].shape == (32,)
    assert out["actions"].shape == (10, 32)


def test_outputs_keep_7_dims_and_snap_the_gripper():
    actions = np.full((3, 32), 0.3)
    actions[:, 6] = [0.2, -0.1, 0.0]
    out = calvin_policy.CalvinOutputs()({"actions": actions})["actions"]
    assert out.shape == (3, 7)
    np.testing.assert_array_equal(out[:, 6], [1.0, -1.0, -1.0])
    np.testing.assert_array_equal(out[:, :6], actions[:, :6])
    assert actions[0, 6] == 0.2  # input untouched


def test_wrong_robot_obs_size_is_rejected():
    example = calvin_policy.make_calvin_example()
    example["observation/state"] = np.zeros(14)
    with pytest.raises(ValueError, match=r"observation/state: expected shape \[\.\.\., 15\]"):
        calvin_policy.CalvinInputs()(example)
