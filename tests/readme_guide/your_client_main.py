"""The guide's "Write your robot client": its `main` as the README writes it, the environment being this
package's `env.UR5Environment` (the README's example names the ALOHA one)."""

import dataclasses

from openpi_client import action_chunk_broker
from openpi_client import websocket_client_policy as _websocket_client_policy
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime.agents import policy_agent as _policy_agent
from readme_guide import env as _env


@dataclasses.dataclass
class Args:
    host: str = "0.0.0.0"
    port: int = 8000
    action_horizon: int = 2


def main(args: Args) -> None:
    runtime = _runtime.Runtime(
        # This specifies the environment (which you will implement to interface with your robot).
        environment=_env.UR5Environment(),
        agent=_policy_agent.PolicyAgent(
            policy=action_chunk_broker.ActionChunkBroker(
                policy=_websocket_client_policy.WebsocketClientPolicy(
                    host=args.host,
                    port=args.port,
                ),
                # This is the number of steps before getting a new action chunk.
                # Here it is taken from the CLI arguments, but you can also hard-code it.
                action_horizon=args.action_horizon,
            )
        ),
        subscribers=[],
        # The expected real-time frequency of the robot.
        max_hz=50,
    )

    runtime.run()
