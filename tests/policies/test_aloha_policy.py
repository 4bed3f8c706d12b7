"""Tests for the ALOHA transforms: pi-space conversions with hand-computed values, round trips, cameras."""

import numpy as np
import pytest

from openpi import transforms
from openpi.policies import aloha_policy
from openpi.shared import normalize

FLIPPED_JOINTS = [1, 2, 8, 9]


def test_gripper_state_conversion_matches_hand_computed_linkage_angles():
    # Fully open: x = 0.058 m gives (r² + x² - L²) / (2 r x) = 1, an angle of π/2 rad.
    # Fully closed: x = 0.01844 m gives -0.58165, an angle of -0.62081 rad.
    # Both then map from [0.5476, 1.6296] rad to [0, 1]: (π/2 - 0.5476) / 1.082 and (-0.62081 - 0.5476) / 1.082.
    angle = aloha_policy._gripper_to_angular(np.array([1.0, 0.0]))
    np.testing.assert_allclose(angle, [0.9456528, -1.0798655], atol=1e-7)


def test_gripper_action_conversion_matches_formula():
    # (a + 0.5476) normalized to [-0.6213, 1.4910].
    out = aloha_policy._gripper_from_angular(np.array([0.0, 1.0]))
    np.testing.assert_allclose(out, [(0.5476 + 0.6213) / 2.1123, (1.5476 + 0.6213) / 2.1123])


def test_decode_state_flips_joints_and_converts_grippers():
    state = np.arange(1.0, 15.0) / 20
    decoded = aloha_policy._decode_state(state.copy(), adapt_to_pi=True)
    expected = state.copy()
    expected[FLIPPED_JOINTS] *= -1
    expected[[6, 13]] = aloha_policy._gripper_to_angular(state[[6, 13]])
    np.testing.assert_allclose(decoded, expected)
    np.testing.assert_array_equal(aloha_policy._decode_state(state, adapt_to_pi=False), state)


def test_encode_actions_inverse_round_trips():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(50, 14))
    encoded = aloha_policy._encode_actions(actions.copy(), adapt_to_pi=True)
    assert not np.allclose(encoded, actions)
    np.testing.assert_allclose(aloha_policy._encode_actions_inv(encoded, adapt_to_pi=True), actions, atol=1e-12)
    np.testing.assert_allclose(
        aloha_policy._encode_actions(aloha_policy._encode_actions_inv(actions, adapt_to_pi=True), adapt_to_pi=True),
        actions,
        atol=1e-12,
    )


def test_inputs_convert_chw_images_and_map_cameras():
    example = aloha_policy.make_aloha_example()
    out = aloha_policy.AlohaInputs()(example)
    assert set(out) == {"image", "image_mask", "state", "prompt"}
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], example["images"]["cam_high"].transpose(1, 2, 0))
    np.testing.assert_array_equal(
        out["image"]["left_wrist_0_rgb"], example["images"]["cam_left_wrist"].transpose(1, 2, 0)
    )
    np.testing.assert_array_equal(
        out["image"]["right_wrist_0_rgb"], example["images"]["cam_right_wrist"].transpose(1, 2, 0)
    )
    assert all(out["image_mask"].values())
    np.testing.assert_allclose(out["state"], aloha_policy._decode_state(np.ones(14), adapt_to_pi=True))
    assert out["prompt"] == "do something"


def test_missing_wrist_cameras_become_masked_black_images():
    images = {"cam_high": np.full((3, 8, 8), 0.5, np.float32), "cam_low": np.zeros((3, 8, 8), np.float32)}
    out = aloha_policy.AlohaInputs(adapt_to_pi=False)({"images": images, "state": np.zeros(14)})
    assert out["image"]["base_0_rgb"].shape == (8, 8, 3)
    assert (out["image"]["base_0_rgb"] == 127).all()
    for slot in ("left_wrist_0_rgb", "right_wrist_0_rgb"):
        assert out["image"][slot].dtype == np.uint8
        assert (out["image"][slot] == 0).all()
        assert not out["image_mask"][slot]
    assert out["image_mask"]["base_0_rgb"]


def test_training_actions_are_brought_into_pi_space_and_padded():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(10, 14))
    data = {"images": {"cam_high": np.zeros((3, 4, 4), np.uint8)}, "state": np.zeros(14), "actions": actions}
    out = aloha_policy.AlohaInputs(action_dim=32)(data)
    assert out["state"].shape == (32,)
    assert out["actions"].shape == (10, 32)
    np.testing.assert_allclose(out["actions"][:, :14], aloha_policy._encode_actions_inv(actions, adapt_to_pi=True))
    assert (out["actions"][:, 14:] == 0).all()


def test_outputs_keep_14_dims_and_invert_the_training_conversion():
    actions = np.random.default_rng(2).uniform(-1, 1, size=(10, 14))
    data = {"images": {"cam_high": np.zeros((3, 4, 4), np.uint8)}, "state": np.zeros(14), "actions": actions}
    model_actions = aloha_policy.AlohaInputs(action_dim=32)(data)["actions"]
    out = aloha_policy.AlohaOutputs()({"actions": model_actions, "state": np.zeros(32)})
    assert set(out) == {"actions"}
    np.testing.assert_allclose(out["actions"], actions, atol=1e-12)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"images": {"cam_top": np.zeros((3, 4, 4), np.uint8)}, "state": np.zeros(14)}, "unknown cameras"),
        ({"images": {"cam_low": np.zeros((3, 4, 4), np.uint8)}, "state": np.zeros(14)}, "images/cam_high: required"),
        (
            {"images": {"cam_high": np.zeros((3, 4, 4), np.uint8)}, "state": np.zeros(7)},
            r"state: expected shape \[\.\.\., 14\]",
        ),
    ],
)
def test_bad_inputs_are_rejected_naming_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        aloha_policy.AlohaInputs()(data)


def test_training_pipeline_round_trips_actions_through_inputs_and_outputs():
    rng = np.random.default_rng(3)
    stats = {
        "state": normalize.NormStats(mean=rng.normal(size=14), std=rng.uniform(0.5, 2, 14)),
        "actions": normalize.NormStats(mean=rng.normal(size=14), std=rng.uniform(0.5, 2, 14)),
    }
    group = transforms.Group(inputs=[aloha_policy.AlohaInputs()], outputs=[aloha_policy.AlohaOutputs()])
    group = group.push(inputs=[transforms.Normalize(stats)], outputs=[transforms.Unnormalize(stats)])
    group = group.push(inputs=[transforms.PadStatesAndActions(32), transforms.ResizeImages(224, 224)])
    sample = aloha_policy.make_aloha_example()
    sample["images"] = {name: image[:, :120, :160] for name, image in sample["images"].items()}
    sample["actions"] = rng.uniform(-1, 1, size=(50, 14))

    model_inputs = transforms.compose(group.inputs)(sample)
    assert model_inputs["image"]["base_0_rgb"].shape == (224, 224, 3)
    assert model_inputs["state"].shape == (32,)
    # Pretend the model predicted exactly its training target.
    robot_outputs = transforms.compose(group.outputs)(
        {"actions": model_inputs["actions"], "state": model_inputs["state"]}
    )
    np.testing.assert_allclose(robot_outputs["actions"], sample["actions"], atol=1e-9)
