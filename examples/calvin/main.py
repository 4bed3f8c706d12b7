"""Evaluates a served policy on CALVIN subtasks and prints the success rate of each."""

from __future__ import annotations

import collections
import dataclasses
import logging
import pathlib

import env as _env
import tyro

from openpi_client import action_chunk_broker
from openpi_client import websocket_client_policy
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime.agents import policy_agent


@dataclasses.dataclass
class Args:
    """Command line of the CALVIN client."""

    # A CALVIN split folder (e.g. task_D_D/validation): its .hydra config builds the matching environment.
    dataset_path: pathlib.Path
    # Checkout of https://github.com/mees/calvin (for the task and annotation configs).
    calvin_root: pathlib.Path
    # Subtasks to evaluate (names from new_playtable_tasks.yaml); empty: all annotated ones.
    subtasks: tuple[str, ...] = ()
    episodes_per_subtask: int = 10
    max_steps: int = 360
    # Steps of each action chunk executed before the policy is asked again.
    action_horizon: int = 10
    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None


def success_rates(results: list[tuple[str, bool]]) -> dict[str, float]:
    """Fraction of successful episodes per subtask."""
    outcomes: dict[str, list[bool]] = collections.defaultdict(list)
    for subtask, success in results:
        outcomes[subtask].append(success)
    return {subtask: sum(values) / len(values) for subtask, values in outcomes.items()}


def make_runtime(
    args: Args,
    environment: _env.CalvinEnvironment,
    policy: websocket_client_policy.WebsocketClientPolicy,
    num_episodes: int,
) -> _runtime.Runtime:
    """The evaluation loop: every episode of `environment`, chunked policy agent, as fast as the simulation runs."""
    return _runtime.Runtime(
        environment=environment,
        agent=policy_agent.PolicyAgent(action_chunk_broker.ActionChunkBroker(policy, args.action_horizon)),
        subscribers=[],
        num_episodes=num_episodes,
    )


def main(args: Args) -> None:
    # calvin_env and hydra are installed from the CALVIN repository (see README); they are not on PyPI.
    from calvin_env.envs.play_table_env import get_env
    import hydra
    from omegaconf import OmegaConf

    config_dir = args.calvin_root / "calvin_models" / "conf"
    oracle = hydra.utils.instantiate(OmegaConf.load(config_dir / "callbacks/rollout/tasks/new_playtable_tasks.yaml"))
    annotations = OmegaConf.load(config_dir / "annotations/new_playtable_validation.yaml")
    subtasks = args.subtasks or tuple(annotations)
    episodes = [
        _env.Episode(subtask, annotations[subtask][0]) for subtask in subtasks for _ in range(args.episodes_per_subtask)
    ]
    environment = _env.CalvinEnvironment(
        get_env(args.dataset_path, show_gui=False), oracle, episodes, max_steps=args.max_steps
    )
    policy = websocket_client_policy.WebsocketClientPolicy(args.host, args.port, args.api_key)
    try:
        make_runtime(args, environment, policy, len(episodes)).run()
    finally:
        policy.close()
    for subtask, rate in success_rates(environment.results).items():
        print(f"{subtask:<40} {rate:6.1%}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
