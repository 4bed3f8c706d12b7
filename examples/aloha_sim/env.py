"""The ALOHA sim as an `openpi_client` runtime Environment, observed the way the ALOHA policy expects."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sim as _sim

from openpi_client.runtime import environment as _environment

# Camera size (height, width) of the demo's data and evaluation: small enough to train on a CPU.
DEFAULT_RESOLUTION = (96, 96)


def observe(simulation: _sim.AlohaSim, cameras: tuple[str, ...], resolution: tuple[int, int]) -> dict:
    """ALOHA policy input: `state` (14,) float32 and `images` {ALOHA camera name: CHW uint8} at `resolution` (h, w)."""
    images = {
        _sim.CAMERAS[camera]: np.ascontiguousarray(simulation.render(camera, *resolution).transpose(2, 0, 1))
        for camera in cameras
    }
    return {"state": simulation.state(), "images": images}


class AlohaSimEnvironment(_environment.Environment):
    """Episode `i` (counting resets from 0) starts from seed `seed + i`, or from `seeds[i]` when `seeds` is given
    (then the seeds after the last one); it ends on success or after `max_steps`.

    With `render_every` n > 1 the cameras are rendered only at steps 0, n, 2n, ... of an episode; the observations
    in between carry the current state and those images again. A client that asks the policy once every n steps
    (`ActionChunkBroker` with `action_horizon` n) sends exactly what it would otherwise, and the renders it would
    throw away (most of an evaluation's rendering) are skipped.
    """

    def __init__(
        self,
        task: str = "gym_aloha/AlohaTransferCube-v0",
        seed: int = 0,
        max_steps: int = 400,
        cameras: tuple[str, ...] = ("top",),
        resolution: tuple[int, int] = DEFAULT_RESOLUTION,
        shadows: bool = False,
        seeds: Sequence[int] | None = None,
        render_every: int = 1,
    ) -> None:
        if unknown := [camera for camera in cameras if camera not in _sim.CAMERAS]:
            raise ValueError(f"cameras: {unknown} not in {sorted(_sim.CAMERAS)}")
        if "top" not in cameras:
            raise ValueError(f"cameras: 'top' (the policy's cam_high) is required, got {list(cameras)}")
        if len(resolution) != 2 or min(resolution) < 1:
            raise ValueError(f"resolution: expected (height, width) > 0, got {resolution}")
        if max_steps < 1:
            raise ValueError(f"max_steps: expected >= 1, got {max_steps}")
        if render_every < 1:
            raise ValueError(f"render_every: expected >= 1, got {render_every}")
        if seeds is not None and not seeds:
            raise ValueError("seeds: expected one or more episode seeds, got an empty sequence")
        self._sim = _sim.AlohaSim(task, shadows=shadows)
        self._seed = seed
        self._seeds = None if seeds is None else [int(s) for s in seeds]
        self._max_steps = max_steps
        self._cameras = tuple(cameras)
        self._resolution = (int(resolution[0]), int(resolution[1]))
        self._episode = -1
        self._steps = 0
        self._render_every = render_every
        self._observation: dict | None = None
        self._images: dict | None = None
        self._succeeded = False
        self._max_reward = 0

    @property
    def prompt(self) -> str:
        """The task's language instruction."""
        return self._sim.task.prompt

    @property
    def max_steps(self) -> int:
        """Steps after which an episode that has not succeeded ends."""
        return self._max_steps

    @property
    def episode_seed(self) -> int:
        """The seed the current (or just finished) episode started from."""
        if self._episode < 0:
            raise RuntimeError("episode_seed: call reset() first")
        if self._seeds is None:
            return self._seed + self._episode
        if self._episode < len(self._seeds):
            return self._seeds[self._episode]
        return self._seeds[-1] + self._episode - len(self._seeds) + 1  # past the list: the seeds after its last

    @property
    def episode_steps(self) -> int:
        """Actions applied in the current (or just finished) episode."""
        return self._steps

    @property
    def episode_succeeded(self) -> bool:
        """Whether the current (or just finished) episode reached the task's success reward."""
        return self._succeeded

    @property
    def episode_max_reward(self) -> int:
        """The highest task reward of the current (or just finished) episode: how far the policy got (4 = success;
        transfer cube: 1 touched by the right gripper, 2 lifted, 3 touched by the left gripper too)."""
        return self._max_reward

    def reset(self) -> None:
        self._episode += 1
        self._sim.reset(self.episode_seed)
        self._steps = 0
        self._observation = None
        self._images = None
        self._succeeded = False
        self._max_reward = 0

    def is_episode_complete(self) -> bool:
        return self._sim.is_success or self._steps >= self._max_steps

    def get_observation(self) -> dict:
        if self._episode < 0:
            raise RuntimeError("get_observation: call reset() first")
        if self._observation is None:
            if self._images is None or self._steps % self._render_every == 0:
                self._observation = {**observe(self._sim, self._cameras, self._resolution), "prompt": self.prompt}
                self._images = self._observation["images"]
            else:
                self._observation = {"state": self._sim.state(), "images": self._images, "prompt": self.prompt}
        return self._observation

    def render_view(self, height: int, width: int, camera: str = "top") -> np.ndarray:
        """The scene from `camera` at (height, width) as HWC uint8, for people to watch (not sent to the policy)."""
        return self._sim.render(camera, height, width)

    def apply_action(self, action: dict) -> None:
        if "actions" not in action:
            raise ValueError(f"action: expected a dict with 'actions', got keys {sorted(action)}")
        self._sim.step(np.asarray(action["actions"]))
        self._steps += 1
        self._observation = None
        self._succeeded = self._succeeded or self._sim.is_success
        self._max_reward = max(self._max_reward, self._sim.reward)
