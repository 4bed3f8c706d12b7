"""Warm-up of a policy server: before it serves, the policy runs once at every batch size the server can form, with
and without the real-time chunking keys, so that every program is compiled (or loaded from the persistent
compilation cache) then and no robot waits for a compilation in the middle of an episode."""

from __future__ import annotations

import copy
import logging
import time

import numpy as np

from openpi.policies import robots as _robots
from openpi_client import action_chunk_runner
from openpi_client import base_policy as _base_policy

logger = logging.getLogger(__name__)


def warm_up(policy: _base_policy.BasePolicy, max_batch_size: int, *, robot: str | None = None) -> None:
    """Runs `policy` on an example observation in batches of 1 to `max_batch_size`, the way the server's batcher
    calls it (`infer` for one, `infer_batch` for more), then the same with the real-time chunking keys if the policy
    takes them.

    The example is the first of the robots' examples (`robot`'s first, then the others of `openpi.policies.robots`)
    that the policy accepts; when it accepts none, there is nothing to warm up with, which is logged as a warning.
    Errors of the policy on an accepted example are raised.

    The calls go to a shallow copy of `policy`: it shares the policy's compiled programs (its jitted functions) but
    draws from a random state of its own, so the warmed-up server answers exactly as a fresh policy would.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size: expected >= 1, got {max_batch_size}")
    policy = copy.copy(policy)
    found = _accepted_example(policy, robot)
    if found is None:
        return
    name, example, result = found
    kinds = {"plain": example}
    chunking_example = _with_chunking_keys(policy, example, result)
    if chunking_example is not None:
        kinds["real-time chunking"] = chunking_example
    for kind, observation in kinds.items():
        start = time.monotonic()
        for size in range(1, max_batch_size + 1):
            if size == 1:
                policy.infer(observation)
            else:
                policy.infer_batch([observation] * size)
        logger.info(
            "Warmed up %s requests (%s example) for batches of 1 to %d in %.1f s",
            kind,
            name,
            max_batch_size,
            time.monotonic() - start,
        )


def _accepted_example(policy: _base_policy.BasePolicy, robot: str | None) -> tuple[str, dict, dict] | None:
    """(robot name, example, the policy's result) for the first robot example the policy accepts, or None."""
    names = sorted(_robots.ROBOTS, key=lambda name: name != robot)  # `robot` first, the others in registry order
    refusals = []
    for name in names:
        example = _robots.ROBOTS[name].make_example()
        try:
            return name, example, policy.infer(example)
        except Exception as error:  # a refused example is the answer sought: try the next
            refusals.append(f"{name}: {type(error).__name__}: {error}")
    logger.warning(
        "No warm-up: the policy accepts none of the robots' example observations, so the first request of each "
        "batch size will wait for a compilation (%s)",
        "; ".join(refusals),
    )
    return None


def _with_chunking_keys(policy: _base_policy.BasePolicy, example: dict, result: dict) -> dict | None:
    """`example` as a real-time chunking request, or None when the policy does not do real-time chunking: it refuses
    the keys, or ignores them (its chunk does not start with the sent actions, which real-time chunking keeps for the
    first `inference_delay` steps). The sent actions are `result`'s chunk in reverse order: actions of the robot's
    range that a sample ignoring them would not repeat (unless the policy's chunks are constant in time, when this
    cannot tell and the warm-up runs the keys too)."""
    actions = result.get("actions")
    if not isinstance(actions, np.ndarray) or actions.ndim != 2 or len(actions) < 3:
        return None
    prev_actions = actions[:0:-1]
    delay = 2
    request = {
        **example,
        action_chunk_runner.PREV_ACTIONS_KEY: prev_actions,
        action_chunk_runner.INFERENCE_DELAY_KEY: delay,
    }
    try:
        continued = np.asarray(policy.infer(request)["actions"])
    except Exception as error:  # a policy without real-time chunking may refuse the keys
        logger.warning("The policy refuses the real-time chunking keys; warming up without them (%s)", error)
        return None
    if continued.shape != actions.shape or not np.allclose(
        continued[:delay], prev_actions[:delay], rtol=1e-3, atol=1e-3
    ):
        logger.info("The policy ignores the real-time chunking keys; warming up without them")
        return None
    return request
