"""A scripted expert for the ALOHA sim tasks: gripper waypoints turned into joint targets by inverse kinematics.

The plan is made once per episode from the objects' initial poses (privileged simulator state): a list of timed
gripper poses per arm, linearly interpolated (positions) and slerped (orientations) at 50 Hz, and solved for the
six arm joints with damped least squares on the arm's kinematic chain. The result is a `[T, 14]` array of
joint-position actions that is replayed open loop, like a human teleoperating the puppet arms.
"""

from __future__ import annotations

import dataclasses
import itertools

import mujoco
import numpy as np
import sim as _sim

from openpi_client import base_policy as _base_policy

_ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
# Midpoint between the finger pads in the gripper link's frame (fingers slide along y, point along x).
_PINCH_POINT = np.array([0.13, 0.0, 0.0])
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, 0.0
# Inverse kinematics: how strongly each arm joint is pulled towards 0 (forearm roll and wrist rotate only).
_IK_ROLL_PULL = np.array([0.0, 0.0, 0.0, 1e-3, 0.0, 1e-3])
_IK_POLISH_ITERATIONS = 10
_IK_POLISH_DAMPING = 1e-2


def _rotation(approach: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """Gripper-link orientation whose x axis points along `approach` and whose fingers close along `closing`."""
    x = approach / np.linalg.norm(approach)
    y = closing - x * (closing @ x)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _quat(rotation: np.ndarray) -> np.ndarray:
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, rotation.reshape(-1))
    return quat


@dataclasses.dataclass(frozen=True)
class Waypoint:
    """Where one gripper should be at step `step`: pinch point (m, world), orientation, gripper opening [0, 1]."""

    step: int
    position: np.ndarray
    rotation: np.ndarray
    gripper: float


class ArmKinematics:
    """Forward and inverse kinematics of one vx300s arm on a private copy of the scene's data."""

    def __init__(self, model: mujoco.MjModel, side: str) -> None:
        self._model = model
        self._data = mujoco.MjData(model)
        joints = [model.joint(f"vx300s_{side}/{name}") for name in _ARM_JOINTS]
        self._qpos_ids = np.array([model.jnt_qposadr[j.id] for j in joints])
        self._dof_ids = np.array([model.jnt_dofadr[j.id] for j in joints])
        self._lower = np.array([model.jnt_range[j.id][0] for j in joints])
        self._upper = np.array([model.jnt_range[j.id][1] for j in joints])
        self._body = model.body(f"vx300s_{side}/gripper_link").id

    def forward(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pinch-point position and gripper rotation matrix for the six arm joint angles."""
        self._data.qpos[self._qpos_ids] = joints
        mujoco.mj_kinematics(self._model, self._data)
        rotation = self._data.xmat[self._body].reshape(3, 3).copy()
        return self._data.xpos[self._body] + rotation @ _PINCH_POINT, rotation

    def inverse(
        self, position: np.ndarray, rotation: np.ndarray, start: np.ndarray, iterations: int = 30
    ) -> np.ndarray:
        """Joint angles that put the pinch point at `position` with orientation `rotation`, starting from `start`."""
        joints = start.copy()
        target_quat = _quat(rotation)
        jac_pos, jac_rot = np.zeros((3, self._model.nv)), np.zeros((3, self._model.nv))
        error = np.zeros(6)
        damping = 1e-4
        for iteration in range(iterations):
            current_pos, current_rot = self.forward(joints)
            error[:3] = position - current_pos
            mujoco.mju_subQuat(error[3:], target_quat, _quat(current_rot))
            if np.linalg.norm(error[:3]) < 1e-4 and np.linalg.norm(error[3:]) < 1e-3:
                break
            mujoco.mj_comPos(self._model, self._data)
            mujoco.mj_jac(self._model, self._data, jac_pos, jac_rot, current_pos, self._body)
            jacobian = np.concatenate([jac_pos[:, self._dof_ids], jac_rot[:, self._dof_ids]])
            # The rotation error is expressed in the current gripper frame; the Jacobian's rows in the world frame.
            error[3:] = current_rot @ error[3:]
            # Damped least squares with a weak pull of the forearm roll and wrist rotate towards 0: near the wrist
            # singularity (wrist angle ~0) only their sum is determined, and without the pull they wander off to
            # ±pi in opposite directions, so plans would end in one of three equivalent wrist postures at random.
            # The last iterations drop the pull, so that it leaves no error behind, with more damping, so that they
            # stay near the posture the pull chose.
            polish = iteration >= iterations - _IK_POLISH_ITERATIONS
            pull = 0.0 * _IK_ROLL_PULL if polish else _IK_ROLL_PULL
            normal = jacobian.T @ jacobian + np.diag(pull) + (_IK_POLISH_DAMPING if polish else damping) * np.eye(6)
            step = np.linalg.solve(normal, jacobian.T @ error - pull * joints)
            joints = np.clip(joints + step, self._lower, self._upper)
        return joints


def _slerp(start: np.ndarray, end: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions, along the shorter arc."""
    cosine = start @ end
    if cosine < 0:
        end, cosine = -end, -cosine
    if cosine > 0.9995:  # nearly equal: linear interpolation is exact enough and avoids dividing by ~0
        quat = start + fraction * (end - start)
        return quat / np.linalg.norm(quat)
    angle = np.arccos(cosine)
    return (np.sin((1 - fraction) * angle) * start + np.sin(fraction * angle) * end) / np.sin(angle)


def _interpolate(waypoints: list[Waypoint], step: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Pose and gripper opening at `step`: linear between the surrounding waypoints, slerp for the rotation."""
    if step <= waypoints[0].step:
        first = waypoints[0]
        return first.position, first.rotation, first.gripper
    for before, after in itertools.pairwise(waypoints):
        if step <= after.step:
            fraction = (step - before.step) / (after.step - before.step)
            rotation = np.empty(9)
            mujoco.mju_quat2Mat(rotation, _slerp(_quat(before.rotation), _quat(after.rotation), fraction))
            position = before.position + fraction * (after.position - before.position)
            gripper = before.gripper + fraction * (after.gripper - before.gripper)
            return position, rotation.reshape(3, 3), gripper
    last = waypoints[-1]
    return last.position, last.rotation, last.gripper


# Transfer cube: where the cube is handed over (m, world) and how steeply the right gripper comes down on it.
_MEET_POINT = np.array([0.0, 0.5, 0.25])
_RIGHT_TILT_DEG = 60.0
# The left fingertips stop at the cube's centre, leaving its right half to the right gripper's fingers.
_LEFT_PINCH_OFFSET = np.array([-0.02, 0.0, 0.0])
_CUBE_HALF_SIZE = 0.02
TRANSFER_CUBE_STEPS = 330


def _transfer_cube_waypoints(
    cube_position: np.ndarray, left_start: tuple[np.ndarray, np.ndarray], right_start: tuple[np.ndarray, np.ndarray]
) -> tuple[list[Waypoint], list[Waypoint]]:
    """Right arm picks the cube up at a slant from above and lifts it; the left arm takes it from the side."""
    tilt = np.deg2rad(_RIGHT_TILT_DEG)
    approach = np.array([-np.cos(tilt), 0.0, -np.sin(tilt)])
    right_grasp = _rotation(approach, closing=np.array([0.0, -1.0, 0.0]))
    # Fingers closing vertically, on the cube's top and bottom faces, clear of the right fingers on its sides.
    left_grasp = _rotation(np.array([1.0, 0.0, 0.0]), closing=np.array([0.0, 0.0, 1.0]))
    cube = np.array([cube_position[0], cube_position[1], _CUBE_HALF_SIZE])  # resting on the table
    meet, left_hold = _MEET_POINT, _MEET_POINT + _LEFT_PINCH_OFFSET
    right = [
        Waypoint(0, *right_start, GRIPPER_CLOSED),
        Waypoint(70, cube - 0.08 * approach, right_grasp, GRIPPER_OPEN),
        Waypoint(110, cube, right_grasp, GRIPPER_OPEN),
        Waypoint(130, cube, right_grasp, GRIPPER_CLOSED),
        Waypoint(190, meet, right_grasp, GRIPPER_CLOSED),
        Waypoint(260, meet, right_grasp, GRIPPER_CLOSED),
        Waypoint(275, meet, right_grasp, GRIPPER_OPEN),
        Waypoint(320, meet - 0.1 * approach, right_grasp, GRIPPER_OPEN),
    ]
    left = [
        Waypoint(0, *left_start, GRIPPER_CLOSED),
        Waypoint(150, left_hold + np.array([-0.1, 0.0, 0.0]), left_grasp, GRIPPER_OPEN),
        Waypoint(220, left_hold, left_grasp, GRIPPER_OPEN),
        Waypoint(240, left_hold, left_grasp, GRIPPER_CLOSED),
        Waypoint(320, left_hold + np.array([-0.05, 0.0, 0.0]), left_grasp, GRIPPER_CLOSED),
    ]
    return left, right


def plan(simulation: _sim.AlohaSim) -> np.ndarray:
    """`[T, 14]` joint-position actions that solve the task from the scene's current (just reset) state."""
    if simulation.task_name != "gym_aloha/AlohaTransferCube-v0":
        raise NotImplementedError(
            f"task: the scripted expert knows only the transfer cube task, got {simulation.task_name!r}"
        )
    model, qpos = simulation.physics.model.ptr, simulation.physics.data.qpos
    arms = {side: ArmKinematics(model, side) for side in ("left", "right")}
    joints = {"left": qpos[0:6].copy(), "right": qpos[8:14].copy()}
    left, right = _transfer_cube_waypoints(
        qpos[16:19], arms["left"].forward(joints["left"]), arms["right"].forward(joints["right"])
    )
    actions = np.zeros((TRANSFER_CUBE_STEPS, _sim.STATE_DIM))
    for step in range(TRANSFER_CUBE_STEPS):
        for side, waypoints, offset in (("left", left, 0), ("right", right, 7)):
            position, rotation, gripper = _interpolate(waypoints, step)
            joints[side] = arms[side].inverse(position, rotation, joints[side])
            actions[step, offset : offset + 6] = joints[side]
            actions[step, offset + 6] = gripper
    return actions


class ExpertReplayPolicy(_base_policy.BasePolicy):
    """Serves the expert's plan as action chunks for the episodes of an `AlohaSimEnvironment(seed=seed)`.

    It sees no simulator state, so it re-creates each episode from its seed: an episode (the next seed) begins
    whenever the observed state is the arms' start pose. Useful to check a client, server and environment end to end.
    """

    def __init__(self, task: str, seed: int, action_horizon: int) -> None:
        self._simulation = _sim.AlohaSim(task)
        self._next_seed = seed
        self._action_horizon = action_horizon
        self._simulation.reset(seed)
        self._start_state = self._simulation.state()
        self._actions: np.ndarray | None = None
        self._step = 0

    def infer(self, obs: dict) -> dict:
        if self._actions is None or np.allclose(obs["state"], self._start_state, atol=1e-6):
            self._simulation.reset(self._next_seed)
            self._next_seed += 1
            self._actions = plan(self._simulation)
            self._step = 0
        steps = np.minimum(np.arange(self._step, self._step + self._action_horizon), len(self._actions) - 1)
        self._step += self._action_horizon
        return {"actions": self._actions[steps].astype(np.float32)}
