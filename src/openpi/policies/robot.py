"""A robot as one record: its transforms, the action dims that may act as deltas, its LeRobot keys, its default prompt
and an example observation. Training's data configs and the policy server both build a robot's transforms from it."""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any

import numpy as np

from openpi import transforms
from openpi.models import model as _model
from openpi.policies import robot_inputs


@dataclasses.dataclass(frozen=True)
class FirstActionDims(transforms.DataTransformFn):
    """Model actions → robot actions: the first `action_dim` dims (the model pads the robot's actions to its own
    action dim)."""

    action_dim: int

    def __call__(self, data: dict) -> dict:
        actions = np.asarray(data["actions"])[..., : self.action_dim]
        return {"actions": transforms.check_last_dim(actions, self.action_dim, name="actions")}


@dataclasses.dataclass(frozen=True)
class Robot:
    """Everything the code knows of one robot (`policies/<robot>_policy.py` defines it, `policies/robots.py` lists
    it)."""

    # Registry name; the policy server's `--env` is its upper case.
    name: str
    # Robot observation → model inputs, as a prototype: `data_transforms` sets its `action_dim` (and `model_type`
    # for a `robot_inputs.RobotInputs`, whose camera slots follow the model family; other inputs fill pi0's slots).
    inputs: transforms.DataTransformFn
    # Model actions → robot actions.
    outputs: transforms.DataTransformFn
    # A random observation as the robot (or its simulation) sends it.
    make_example: Callable[[], dict]
    # Action dims that models may see as deltas of the state (joints; grippers stay absolute); None: no such dims.
    delta_action_mask: Sequence[bool] | None = None
    # Robot observation keys → the LeRobot dataset keys they come from (a `RepackTransform` structure); None: the
    # dataset uses the robot's keys.
    lerobot_keys: Mapping[str, Any] | None = None
    # Dataset keys stacked into action chunks; None: the data config's (`actions`).
    action_sequence_keys: Sequence[str] | None = None
    # Prompt for observations without one, when neither the config nor the server names one.
    default_prompt: str | None = None

    def data_transforms(
        self,
        action_dim: int | None,
        model_type: _model.ModelType,
        *,
        delta_actions: bool = False,
        **options: Any,
    ) -> transforms.Group:
        """The robot transforms for a model: inputs padding state and actions to `action_dim` (None: no padding),
        camera slots of `model_type`; with `delta_actions`, the masked action dims as deltas of the state.
        `options` set further fields of both transforms (e.g. ALOHA's `adapt_to_pi`)."""
        model_fields = {"action_dim": action_dim}
        if isinstance(self.inputs, robot_inputs.RobotInputs):
            model_fields["model_type"] = model_type
        group = transforms.Group(
            inputs=[dataclasses.replace(self.inputs, **model_fields, **options)],
            outputs=[dataclasses.replace(self.outputs, **options)],
        )
        if not delta_actions:
            return group
        if self.delta_action_mask is None:
            raise ValueError(f"delta_actions: robot {self.name!r} has no delta_action_mask (no joint action dims)")
        mask = self.delta_action_mask
        return group.push(inputs=[transforms.DeltaActions(mask)], outputs=[transforms.AbsoluteActions(mask)])

    def repack_transforms(self) -> transforms.Group:
        """LeRobot dataset samples → the robot's observation keys (no transform when the keys are the same)."""
        if self.lerobot_keys is None:
            return transforms.Group()
        return transforms.Group(inputs=[transforms.RepackTransform(self.lerobot_keys)])
