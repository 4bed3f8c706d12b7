"""Robot records (policies/robot.py) and their registry (policies/robots.py): what training and serving build from
them."""

import subprocess
import sys

import numpy as np
import pytest

from openpi import transforms
from openpi.models import model as _model
from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
from openpi.policies import libero_policy
from openpi.policies import robot as _robot
from openpi.policies import robots
from openpi.policies import ur5_policy

ModelType = _model.ModelType
MODEL_ACTION_DIM = 32
# The action dim of each registered robot.
ROBOT_ACTION_DIMS = {"aloha": 14, "aloha_sim": 14, "droid": 8, "calvin": 7, "libero": 7, "ur5": 7}


def test_registry_lists_each_robot_under_its_record_name():
    assert list(robots.ROBOTS) == ["aloha", "aloha_sim", "droid", "calvin", "libero", "ur5"]
    assert all(robot.name == name for name, robot in robots.ROBOTS.items())


@pytest.mark.parametrize("name", list(ROBOT_ACTION_DIMS))
def test_each_robots_example_goes_through_its_transforms_to_its_action_dim(name):
    robot = robots.ROBOTS[name]
    group = robot.data_transforms(MODEL_ACTION_DIM, ModelType.PI0)
    inputs = transforms.compose(group.inputs)(robot.make_example())
    assert inputs["state"].shape == (MODEL_ACTION_DIM,)
    assert set(inputs["image"]) == set(_model.IMAGE_KEYS)
    assert inputs["prompt"] == "do something"
    model_actions = np.zeros((10, MODEL_ACTION_DIM))
    outputs = transforms.compose(group.outputs)({"state": inputs["state"], "actions": model_actions})
    assert outputs["actions"].shape == (10, ROBOT_ACTION_DIMS[name])


def test_aloha_sim_example_has_only_the_top_camera():
    assert set(aloha_policy.ALOHA_SIM.make_example()["images"]) == {"cam_high"}
    assert set(aloha_policy.ALOHA.make_example()["images"]) == set(aloha_policy.AlohaInputs.EXPECTED_CAMERAS)


def test_inputs_with_a_model_type_field_fill_that_models_camera_slots_the_others_pis():
    (droid_inputs,) = droid_policy.DROID.data_transforms(8, ModelType.PI0_FAST).inputs
    assert droid_inputs == droid_policy.DroidInputs(action_dim=8, model_type=ModelType.PI0_FAST)
    (aloha_inputs,) = aloha_policy.ALOHA.data_transforms(8, ModelType.PI0_FAST).inputs
    assert aloha_inputs == aloha_policy.AlohaInputs(action_dim=8)
    (calvin_inputs,) = calvin_policy.CALVIN.data_transforms(None, ModelType.PI05).inputs
    assert calvin_inputs == calvin_policy.CalvinInputs(action_dim=None)


def test_options_set_the_fields_of_both_transforms():
    group = aloha_policy.ALOHA.data_transforms(None, ModelType.PI0, adapt_to_pi=False)
    assert group.inputs == [aloha_policy.AlohaInputs(adapt_to_pi=False)]
    assert group.outputs == [aloha_policy.AlohaOutputs(adapt_to_pi=False)]


def test_delta_actions_wrap_the_transforms_in_the_records_mask():
    group = ur5_policy.UR5.data_transforms(None, ModelType.PI0, delta_actions=True)
    mask = transforms.make_bool_mask(6, -1)
    assert list(group.inputs) == [ur5_policy.UR5Inputs(), transforms.DeltaActions(mask)]
    assert list(group.outputs) == [transforms.AbsoluteActions(mask), ur5_policy.UR5Outputs()]
    state = np.arange(7.0)
    sample = {**ur5_policy.make_ur5_example(), "joints": state[:6], "gripper": state[6:], "actions": np.ones((2, 7))}
    model_actions = transforms.compose(group.inputs)(sample)["actions"]
    np.testing.assert_allclose(model_actions[:, :6], [1.0 - state[:6]] * 2)  # joints relative to the state
    np.testing.assert_allclose(model_actions[:, 6], 1.0)  # the gripper stays absolute
    robot_actions = transforms.compose(group.outputs)({"state": state, "actions": model_actions})["actions"]
    np.testing.assert_allclose(robot_actions, np.ones((2, 7)))


def test_delta_actions_on_a_robot_without_a_mask_are_refused_naming_the_robot():
    with pytest.raises(ValueError, match="delta_actions: robot 'droid' has no delta_action_mask"):
        droid_policy.DROID.data_transforms(None, ModelType.PI0, delta_actions=True)


def test_repack_maps_lerobot_keys_to_the_robots_keys():
    sample = {
        "rgb_static": np.zeros((200, 200, 3), np.uint8),
        "rgb_gripper": np.zeros((84, 84, 3), np.uint8),
        "robot_obs": np.zeros(15),
        "rel_actions": np.zeros((4, 7)),
        "prompt": "open the drawer",
        "index": 3,
    }
    repacked = transforms.compose(calvin_policy.CALVIN.repack_transforms().inputs)(sample)
    assert set(repacked) == {
        "observation/rgb_static",
        "observation/rgb_gripper",
        "observation/state",
        "actions",
        "prompt",
    }
    assert calvin_policy.CalvinInputs()(repacked)["actions"].shape == (4, 7)
    # A robot whose datasets use its own keys has no repack.
    assert ur5_policy.UR5.repack_transforms() == transforms.Group()


def test_first_action_dims_keeps_the_robots_dims_and_names_a_model_with_fewer():
    actions = np.arange(20.0).reshape(2, 10)
    np.testing.assert_array_equal(_robot.FirstActionDims(3)({"actions": actions})["actions"], actions[:, :3])
    np.testing.assert_array_equal(libero_policy.LiberoOutputs()({"actions": actions})["actions"], actions[:, :7])
    with pytest.raises(ValueError, match=r"actions: expected shape \[\.\.\., 8\], got \(2, 7\)"):
        droid_policy.DroidOutputs()({"actions": actions[:, :7]})


def test_importing_the_policies_loads_no_training_module():
    """Policies sit below training: the policy assembly (policy_config) takes a train config without importing it."""
    code = (
        "import sys\n"
        "from openpi.policies import exported, policy, policy_config, robots\n"
        "loaded = sorted(name for name in sys.modules if name.startswith('openpi.training'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
