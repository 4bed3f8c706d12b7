"""The ALOHA sim scenes and their runtime Environment: observation format, actions, seeding, episode end."""

from __future__ import annotations

import numpy as np
import pytest

from openpi.policies import aloha_policy

from .. import example_modules

sim, env = example_modules.load("aloha_sim", "sim", "env")


def test_observation_is_what_the_aloha_policy_takes():
    environment = env.AlohaSimEnvironment(seed=0, resolution=(48, 64))
    environment.reset()
    observation = environment.get_observation()
    assert observation["state"].shape == (14,)
    assert observation["state"].dtype == np.float32
    assert observation["prompt"] == "Transfer cube"
    assert set(observation["images"]) == {"cam_high"}
    image = observation["images"]["cam_high"]
    assert image.shape == (3, 48, 64)
    assert image.dtype == np.uint8
    assert image.std() > 10  # a rendered scene, not a blank frame
    inputs = aloha_policy.AlohaInputs(action_dim=32)(observation)
    assert inputs["state"].shape == (32,)
    assert inputs["image_mask"]["base_0_rgb"]


def test_wrist_cameras_arrive_under_their_aloha_names():
    environment = env.AlohaSimEnvironment(cameras=("top", "left_wrist", "right_wrist"), resolution=(32, 32))
    environment.reset()
    images = environment.get_observation()["images"]
    assert set(images) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    assert not np.array_equal(images["cam_left_wrist"], images["cam_high"])


def test_arms_follow_joint_position_actions():
    environment = env.AlohaSimEnvironment(resolution=(16, 16))
    environment.reset()
    start = environment.get_observation()["state"]
    target = start.copy()
    target[0] += 0.3  # left waist
    target[7] -= 0.3  # right waist
    for _ in range(50):
        environment.apply_action({"actions": target})
    state = environment.get_observation()["state"]
    assert state[0] == pytest.approx(start[0] + 0.3, abs=0.05)
    assert state[7] == pytest.approx(start[7] - 0.3, abs=0.05)


def test_episode_ends_after_max_steps_without_success():
    environment = env.AlohaSimEnvironment(max_steps=3, resolution=(16, 16))
    environment.reset()
    hold = {"actions": environment.get_observation()["state"]}
    for _ in range(2):
        environment.apply_action(hold)
        assert not environment.is_episode_complete()
    environment.apply_action(hold)
    assert environment.is_episode_complete()
    assert not environment.episode_succeeded


def test_episodes_start_from_consecutive_seeds():
    environment = env.AlohaSimEnvironment(seed=5, resolution=(16, 16))
    simulation = environment._sim
    cube_positions = []
    for _ in range(2):
        environment.reset()
        cube_positions.append(simulation.physics.data.qpos[16:19].copy())
    np.testing.assert_allclose(cube_positions[0], sim.sample_object_pose("gym_aloha/AlohaTransferCube-v0", 5)[:3])
    np.testing.assert_allclose(cube_positions[1], sim.sample_object_pose("gym_aloha/AlohaTransferCube-v0", 6)[:3])


def test_insertion_scene_loads_with_peg_and_socket():
    simulation = sim.AlohaSim("gym_aloha/AlohaInsertion-v0")
    simulation.reset(0)
    assert simulation.state().shape == (14,)
    assert simulation.step(simulation.state()) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "gym_aloha/Nope-v0"}, "task: expected one of"),
        ({"cameras": ("left_wrist",)}, "cameras: 'top'"),
        ({"cameras": ("top", "ceiling")}, "cameras: \\['ceiling'\\]"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_bad_settings_raise_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        env.AlohaSimEnvironment(**kwargs)


def test_bad_actions_raise_naming_the_field():
    environment = env.AlohaSimEnvironment(resolution=(16, 16))
    environment.reset()
    with pytest.raises(ValueError, match=r"action: expected shape \(14,\)"):
        environment.apply_action({"actions": np.zeros(7)})
    with pytest.raises(ValueError, match="action: expected finite"):
        environment.apply_action({"actions": np.full(14, np.nan)})
    with pytest.raises(ValueError, match="'actions'"):
        environment.apply_action({"action": np.zeros(14)})


def test_episodes_start_from_the_seeds_given_and_the_view_is_rendered_apart_from_the_observation():
    environment = env.AlohaSimEnvironment(resolution=(16, 16), seeds=[7, 3])
    reference = env.AlohaSimEnvironment(resolution=(16, 16), seed=3)
    environment.reset()
    assert environment.episode_seed == 7
    environment.reset()
    reference.reset()
    assert environment.episode_seed == reference.episode_seed == 3
    view = environment.render_view(240, 320)
    assert view.shape == (240, 320, 3)
    assert environment.get_observation()["images"]["cam_high"].shape == (3, 16, 16)
    np.testing.assert_array_equal(view, reference.render_view(240, 320))  # same seed, same cube
    environment.reset()  # past the list (a runtime resets once more after its last episode): the next seed
    assert environment.episode_seed == 4


def test_an_empty_seed_list_is_refused():
    with pytest.raises(ValueError, match="seeds"):
        env.AlohaSimEnvironment(seeds=[])


def test_rendering_every_nth_step_repeats_the_images_in_between_and_keeps_the_state_current():
    every_step = env.AlohaSimEnvironment(resolution=(16, 16), seed=5)
    every_third = env.AlohaSimEnvironment(resolution=(16, 16), seed=5, render_every=3)
    for environment in (every_step, every_third):
        environment.reset()
    start = every_step.get_observation()["state"]
    for step in range(8):
        full, partial = every_step.get_observation(), every_third.get_observation()
        np.testing.assert_array_equal(partial["state"], full["state"])
        assert partial["prompt"] == full["prompt"]
        rendered_at = step - step % 3
        if step == rendered_at:
            np.testing.assert_array_equal(partial["images"]["cam_high"], full["images"]["cam_high"])
            last_render = full["images"]["cam_high"]
        else:
            np.testing.assert_array_equal(partial["images"]["cam_high"], last_render)
        action = {"actions": start + 0.05 * (step + 1)}  # the arms move: the views differ from step to step
        every_step.apply_action(action)
        every_third.apply_action(action)
    assert not np.array_equal(every_step.get_observation()["images"]["cam_high"], last_render)
    # A new episode renders its first step afresh.
    every_third.reset()
    every_step.reset()
    np.testing.assert_array_equal(
        every_third.get_observation()["images"]["cam_high"], every_step.get_observation()["images"]["cam_high"]
    )
    with pytest.raises(ValueError, match="render_every"):
        env.AlohaSimEnvironment(render_every=0)
