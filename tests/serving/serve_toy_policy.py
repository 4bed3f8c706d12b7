"""Runs a WebsocketPolicyServer for ToyPolicy in its own process (for signal tests).

Prints the port once listening, then `busy` when the first policy call starts. Argument: the call's delay in s.
"""

import sys
import threading

import toy_policies

from openpi.serving import websocket_policy_server


def _report(server: websocket_policy_server.WebsocketPolicyServer, policy: toy_policies.ToyPolicy) -> None:
    print(server.wait_started(), flush=True)
    policy.calls_started.wait()
    print("busy", flush=True)


if __name__ == "__main__":
    policy = toy_policies.ToyPolicy(delay_s=float(sys.argv[1]))
    server = websocket_policy_server.WebsocketPolicyServer(policy, host="127.0.0.1", port=0)
    threading.Thread(target=_report, args=(server, policy), daemon=True).start()
    server.serve_forever()
