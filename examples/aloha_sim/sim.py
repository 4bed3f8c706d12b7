"""The gym-aloha MuJoCo scenes (transfer cube, insertion) driven directly, with cheap headless rendering.

gym-aloha's gym env renders three 640×480 views with 4096² shadow maps on every step (~0.5 s a step with
software OpenGL). This wrapper reuses its scene files, task rewards and object-pose sampling, but renders only
the cameras asked for, at the size asked for, without shadows or multisampling (~20 ms a view on a CPU).
"""

from __future__ import annotations

import dataclasses
import os

# Headless OpenGL: EGL (Mesa's software rasterizer where there is no GPU). Must be chosen before MuJoCo loads.
os.environ.setdefault("MUJOCO_GL", "egl")

from dm_control import mujoco
from dm_control.rl import control
from gym_aloha import constants as aloha_constants
from gym_aloha import utils as aloha_utils
from gym_aloha.tasks import sim as aloha_tasks
import numpy as np

FPS = 50  # control rate of the scenes (gym-aloha's DT = 0.02 s)
SUCCESS_REWARD = 4  # gym-aloha's reward once the task is done (cube handed over / peg inserted)
STATE_DIM = 14

# Scene camera name → ALOHA camera name the policies expect.
CAMERAS = {"top": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"}


@dataclasses.dataclass(frozen=True)
class Task:
    """One gym-aloha task: its scene, reward, object-pose sampler and language prompt."""

    scene_file: str
    task_class: type
    prompt: str


TASKS = {
    "gym_aloha/AlohaTransferCube-v0": Task(
        "bimanual_viperx_transfer_cube.xml", aloha_tasks.TransferCubeTask, "Transfer cube"
    ),
    "gym_aloha/AlohaInsertion-v0": Task("bimanual_viperx_insertion.xml", aloha_tasks.InsertionTask, "Insert peg"),
}


def get_task(name: str) -> Task:
    """The task called `name` (a gym-aloha environment id)."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def sample_object_pose(task_name: str, seed: int) -> np.ndarray:
    """Initial pose(s) of the task's object(s) for `seed`, as gym-aloha samples them: `[x, y, z, qw, qx, qy, qz]*n`."""
    if task_name == "gym_aloha/AlohaTransferCube-v0":
        return aloha_utils.sample_box_pose(seed)
    return np.concatenate(aloha_utils.sample_insertion_pose(seed))


def _observe_state_only(task, physics) -> dict:
    """The task observation without the three full-size renders gym-aloha makes every step."""
    return {"qpos": task.get_qpos(physics)}


class AlohaSim:
    """A gym-aloha scene: `reset(seed)`, `step(action)`, `state()`, `render(camera, height, width)`."""

    def __init__(self, task_name: str = "gym_aloha/AlohaTransferCube-v0", shadows: bool = False) -> None:
        self.task_name = task_name
        self.task = get_task(task_name)
        physics = mujoco.Physics.from_xml_path(str(aloha_constants.ASSETS_DIR / self.task.scene_file))
        if not shadows:  # shadows and multisampling are ~90 % of software rendering time (4096² shadow maps)
            physics.model.vis.quality.shadowsize = 0
            physics.model.vis.quality.offsamples = 0
        task = self.task.task_class()
        task.get_observation = lambda physics: _observe_state_only(task, physics)
        self._env = control.Environment(
            physics, task, time_limit=float("inf"), control_timestep=1 / FPS, flat_observation=False
        )
        self.physics = physics
        self.reward = 0

    def reset(self, seed: int) -> None:
        """Puts the arms at their start pose and the objects at the pose sampled for `seed`."""
        # gym-aloha's tasks read the object pose from this module-level slot when they initialize an episode.
        aloha_tasks.BOX_POSE[0] = sample_object_pose(self.task_name, seed)
        self._env.reset()
        self.reward = 0

    def step(self, action: np.ndarray) -> int:
        """Applies one 14-d joint-position action for 1/FPS s; returns the task reward (0..4)."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (STATE_DIM,):
            raise ValueError(f"action: expected shape ({STATE_DIM},), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action: expected finite values, got {action}")
        self.reward = int(self._env.step(action).reward)
        return self.reward

    @property
    def is_success(self) -> bool:
        """Whether the last step reached the task's success reward."""
        return self.reward == SUCCESS_REWARD

    def state(self) -> np.ndarray:
        """14-d state: per arm 6 joint angles (rad) then the gripper opening normalized to [0 closed, 1 open]."""
        return self._env.task.get_qpos(self.physics).astype(np.float32)

    def render(self, camera: str, height: int, width: int) -> np.ndarray:
        """The view of scene camera `camera` (see CAMERAS) as HWC uint8."""
        if camera not in CAMERAS:
            raise ValueError(f"camera: expected one of {sorted(CAMERAS)}, got {camera!r}")
        return self.physics.render(height=height, width=width, camera_id=camera)
