"""Sends random observations of one robot to a policy server and prints latency statistics."""

from __future__ import annotations

import dataclasses
import enum
import logging
import time

import numpy as np
import tyro

from openpi.policies import robots
from openpi_client import websocket_client_policy

# The robot whose observations are sent (the server's `--env`): one per robot record of `openpi.policies.robots`.
EnvMode = enum.Enum("EnvMode", {name.upper(): name for name in robots.ROBOTS})


@dataclasses.dataclass
class Args:
    """Command line of the simple client."""

    # Server to query.
    host: str = "0.0.0.0"
    port: int = 8000
    # Sent in the handshake when the server requires one.
    api_key: str | None = None
    # Robot whose observations are sent.
    env: EnvMode = EnvMode.ALOHA_SIM
    # Timed requests, after one untimed warm-up request (the first one compiles the model).
    num_steps: int = 20
    # Seed of the random observations.
    seed: int = 0


def make_observation(env: EnvMode) -> dict:
    """A random observation of `env`, shaped like what its robot client sends (its robot record's example)."""
    return robots.ROBOTS[env.value].make_example()


def latency_table(timings_ms: dict[str, list[float]]) -> str:
    """One row per timing: count, mean, std, min, p50, p90, p99 and max in milliseconds."""
    columns = ("count", "mean", "std", "min", "p50", "p90", "p99", "max")
    lines = [f"{'latency (ms)':<20}" + "".join(f"{name:>9}" for name in columns)]
    for name, values in timings_ms.items():
        if not values:
            continue
        array = np.asarray(values, dtype=np.float64)
        stats = [array.mean(), array.std(), array.min(), *np.percentile(array, [50, 90, 99]), array.max()]
        lines.append(f"{name:<20}{len(array):>9d}" + "".join(f"{value:>9.1f}" for value in stats))
    return "\n".join(lines)


def run(args: Args) -> dict[str, list[float]]:
    """Queries the server `args.num_steps` times and returns the timings (ms) of every request."""
    if args.num_steps < 1:
        raise ValueError(f"num_steps: expected a positive int, got {args.num_steps}")
    np.random.seed(args.seed)
    policy = websocket_client_policy.WebsocketClientPolicy(args.host, args.port, args.api_key)
    try:
        logging.info("Server metadata: %s", policy.get_server_metadata())
        policy.infer(make_observation(args.env))  # warm-up
        timings: dict[str, list[float]] = {"client round trip": [], "server infer": [], "policy infer": []}
        for _ in range(args.num_steps):
            observation = make_observation(args.env)
            start = time.monotonic()
            result = policy.infer(observation)
            timings["client round trip"].append((time.monotonic() - start) * 1000)
            if "server_timing" in result:
                timings["server infer"].append(float(result["server_timing"]["infer_ms"]))
            if "policy_timing" in result:
                timings["policy infer"].append(float(result["policy_timing"]["infer_ms"]))
    finally:
        policy.close()
    return timings


def main(args: Args) -> None:
    print(latency_table(run(args)))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(tyro.cli(Args))
