"""The pieces the robots' input transforms share (openpi.policies.robot_inputs)."""

import numpy as np
import pytest

from openpi.policies import robot_inputs

ModelType = robot_inputs.ModelType


def _images(height: int = 8) -> tuple[dict, dict]:
    data = {"top": np.zeros((3, height, height), np.float32), "wrist": np.full((height, height, 3), 7, np.uint8)}
    return robot_inputs.camera_images(data, base="top", wrist="wrist")


def test_camera_images_fill_base_and_left_wrist_as_hwc_uint8_and_mask_the_right_wrist():
    images, masks = _images()
    assert {name: image.shape for name, image in images.items()} == {
        "base_0_rgb": (8, 8, 3),
        "left_wrist_0_rgb": (8, 8, 3),
        "right_wrist_0_rgb": (8, 8, 3),
    }
    assert all(image.dtype == np.uint8 for image in images.values())
    assert not images["right_wrist_0_rgb"].any()
    assert masks == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}


def test_camera_image_errors_name_the_key():
    with pytest.raises(ValueError, match=r"wrist: expected an RGB image"):
        robot_inputs.camera_images({"top": np.zeros((8, 8, 3)), "wrist": np.zeros((8, 8))}, base="top", wrist="wrist")


def test_joints_and_gripper_concatenate_into_the_state_and_name_a_wrong_key():
    data = {"q": np.arange(3.0), "grip": 0.5}
    state = robot_inputs.joints_and_gripper(data, joints="q", num_joints=3, gripper="grip")
    np.testing.assert_array_equal(state, [0.0, 1.0, 2.0, 0.5])
    with pytest.raises(ValueError, match=r"q: expected shape \[\.\.\., 4\], got \(3,\)"):
        robot_inputs.joints_and_gripper(data, joints="q", num_joints=4, gripper="grip")


def test_model_inputs_check_convert_and_pad_actions_and_keep_the_prompt():
    data = {"actions": np.ones((2, 3)), "prompt": "stack the cups"}
    inputs = robot_inputs.model_inputs(
        data, _images(), np.arange(3.0), robot_action_dim=3, model_action_dim=5, convert_actions=lambda a: -a
    )
    assert inputs["prompt"] == "stack the cups"
    np.testing.assert_array_equal(inputs["state"], [0.0, 1.0, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(inputs["actions"], [[-1.0, -1.0, -1.0, 0.0, 0.0]] * 2)
    assert inputs["image_mask"]["right_wrist_0_rgb"] == np.False_


def test_model_inputs_without_actions_or_padding_keep_the_state_as_given():
    inputs = robot_inputs.model_inputs({}, _images(), np.arange(3.0), robot_action_dim=3, model_action_dim=None)
    assert set(inputs) == {"image", "image_mask", "state"}
    np.testing.assert_array_equal(inputs["state"], [0.0, 1.0, 2.0])


def test_model_inputs_refuse_actions_of_the_wrong_dim():
    with pytest.raises(ValueError, match=r"actions: expected shape \[\.\.\., 3\], got \(2, 4\)"):
        robot_inputs.model_inputs(
            {"actions": np.ones((2, 4))}, _images(), np.zeros(3), robot_action_dim=3, model_action_dim=None
        )


@pytest.mark.parametrize("model_type", ["pi0", "pi05", ModelType.PI0, ModelType.PI05])
def test_pi0_and_pi05_fill_base_and_wrist_slots_and_mask_missing_wrists(model_type):
    base, wrist = np.ones((4, 4, 3), np.uint8), np.full((2, 2, 3), 9, np.uint8)
    images, masks = robot_inputs.model_images(model_type, base, left_wrist=wrist)
    assert list(images) == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    assert images["base_0_rgb"] is base
    assert images["left_wrist_0_rgb"] is wrist
    np.testing.assert_array_equal(images["right_wrist_0_rgb"], np.zeros_like(base))
    assert masks == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    _, no_wrist_masks = robot_inputs.model_images(model_type, base)
    assert no_wrist_masks == {"base_0_rgb": True, "left_wrist_0_rgb": False, "right_wrist_0_rgb": False}


@pytest.mark.parametrize("model_type", ["pi0_fast", ModelType.PI0_FAST])
def test_pi0_fast_fills_two_base_slots_and_one_wrist_slot_and_masks_nothing(model_type):
    base, wrist = np.ones((4, 4, 3), np.uint8), np.full((2, 2, 3), 9, np.uint8)
    images, masks = robot_inputs.model_images(model_type, base, left_wrist=wrist)
    assert list(images) == ["base_0_rgb", "base_1_rgb", "wrist_0_rgb"]
    assert images["base_0_rgb"] is base
    assert images["wrist_0_rgb"] is wrist
    np.testing.assert_array_equal(images["base_1_rgb"], np.zeros_like(base))
    assert masks == {"base_0_rgb": True, "base_1_rgb": True, "wrist_0_rgb": True}
    # A missing wrist is black but still not masked, as the original trained pi0-FAST.
    images, masks = robot_inputs.model_images(model_type, base)
    np.testing.assert_array_equal(images["wrist_0_rgb"], np.zeros_like(base))
    assert all(masks.values())
    with pytest.raises(ValueError, match="right_wrist: pi0-FAST has a single wrist camera slot"):
        robot_inputs.model_images(model_type, base, left_wrist=wrist, right_wrist=wrist)


def test_robot_inputs_take_a_model_type_or_its_value_and_refuse_others():
    assert robot_inputs.RobotInputs().model_type is ModelType.PI0
    assert robot_inputs.RobotInputs(model_type="pi0_fast").model_type is ModelType.PI0_FAST
    assert robot_inputs.RobotInputs(model_type=ModelType.PI05).model_type is ModelType.PI05
    with pytest.raises(ValueError, match=r"model_type: expected a ModelType or one of 'pi0', .*got 'pi1'"):
        robot_inputs.RobotInputs(model_type="pi1")
