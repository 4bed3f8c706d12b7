"""Learning-rate schedules and optimizers as small frozen configs that build optax transformations."""

import abc
import dataclasses

import optax

from openpi.shared import array_typing as at


@dataclasses.dataclass(frozen=True)
class LRScheduleConfig(abc.ABC):
    """Builds the learning rate as a function of the train step."""

    @abc.abstractmethod
    def create(self) -> optax.Schedule: ...


@dataclasses.dataclass(frozen=True)
class CosineDecaySchedule(LRScheduleConfig):
    """Linear warmup to `peak_lr` over `warmup_steps`, then cosine decay to `decay_lr` at `decay_steps`."""

    warmup_steps: int = 1_000
    peak_lr: float = 2.5e-5
    decay_steps: int = 30_000
    decay_lr: float = 2.5e-6

    def create(self) -> optax.Schedule:
        return optax.warmup_cosine_decay_schedule(
            init_value=self.peak_lr / (self.warmup_steps + 1),
            peak_value=self.peak_lr,
            warmup_steps=self.warmup_steps,
            decay_steps=self.decay_steps,
            end_value=self.decay_lr,
        )


@dataclasses.dataclass(frozen=True)
class RsqrtDecaySchedule(LRScheduleConfig):
    """Linear warmup to `peak_lr`, then decay proportional to `1 / sqrt(step / timescale)`."""

    warmup_steps: int = 1_000
    peak_lr: float = 5e-5
    timescale: float = 10_000

    def create(self) -> optax.Schedule:
        return optax.join_schedules(
            [
                optax.linear_schedule(self.peak_lr / (self.warmup_steps + 1), self.peak_lr, self.warmup_steps),
                lambda step: self.peak_lr / (1.0 + step / self.timescale) ** 0.5,
            ],
            [self.warmup_steps],
        )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(abc.ABC):
    """Builds the parameter update rule for a given learning-rate schedule; `weight_decay_mask` (a pytree of bools
    shaped like the params) limits weight decay to the params it marks."""

    @abc.abstractmethod
    def create(
        self, lr: optax.ScalarOrSchedule, weight_decay_mask: at.PyTree | None = None
    ) -> optax.GradientTransformation: ...


@dataclasses.dataclass(frozen=True)
class AdamW(OptimizerConfig):
    """AdamW after clipping the global gradient norm to `clip_gradient_norm`."""

    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 1e-10
    clip_gradient_norm: float = 1.0

    def create(
        self, lr: optax.ScalarOrSchedule, weight_decay_mask: at.PyTree | None = None
    ) -> optax.GradientTransformation:
        return optax.chain(
            optax.clip_by_global_norm(self.clip_gradient_norm),
            optax.adamw(
                lr, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay, mask=weight_decay_mask
            ),
        )


@dataclasses.dataclass(frozen=True)
class SGD(OptimizerConfig):
    """Plain SGD with optional momentum (no weight decay)."""

    momentum: float = 0.9
    nesterov: bool = False
    # Unused, as in the original: the learning rate comes from the train config's schedule.
    lr: float = 5e-5

    def create(
        self, lr: optax.ScalarOrSchedule, weight_decay_mask: at.PyTree | None = None
    ) -> optax.GradientTransformation:
        if weight_decay_mask is not None:
            raise ValueError("weight_decay_mask: SGD has no weight decay; expected None")
        return optax.sgd(lr, momentum=self.momentum, nesterov=self.nesterov)


def create_optimizer(
    optimizer: OptimizerConfig, lr_schedule: LRScheduleConfig, weight_decay_mask: at.PyTree | None = None
) -> optax.GradientTransformation:
    """The optimizer of a train config, driven by its learning-rate schedule (weight decay limited to
    `weight_decay_mask` when given)."""
    if weight_decay_mask is None:
        return optimizer.create(lr_schedule.create())
    return optimizer.create(lr_schedule.create(), weight_decay_mask=weight_decay_mask)
