"""Benchmark of the policy server: per-request overhead, responsiveness during inference, batching throughput.

uv run bench/bench_serving.py [--policy trivial|simulated|pi0-dummy|pi0|...] [--requests 200] [--clients 8]

- overhead: median round trip through client + server + websocket on localhost minus a direct `policy.infer`,
  for a state-only and a robot-sized observation (3 cameras 224x224 uint8, state 32) and a 50x32 action chunk,
  next to the floor: a bare websockets server answering frames of the same size; then the extra cost of TLS: the
  same round trip over wss:// (a self-signed certificate made with `openssl`, as in the README) minus over ws://.
- responsiveness: latency of `GET /healthz`, `GET /metrics` and a new connection's metadata while a 1 s
  inference is in flight.
- throughput: `--clients` concurrent clients, server batching (max batch = clients) vs one at a time
  (max batch 1). `trivial` answers at once; `simulated` costs 20 ms + 2 ms per observation per call (like an
  accelerator, where a batch costs little more than one); `pi0-dummy` is a real pi0 with the dummy Gemma variants
  (full SigLIP); `pi0` is the full model (gemma_2b + gemma_300m, 3.3 B params) with bfloat16 weights as
  serve_policy.py loads them, the one to run on a GPU; `pi05-dummy` / `pi05` and `pi0_fast-dummy` / `pi0_fast` are
  the same for pi0.5 and pi0-FAST (which decodes `FAST_DECODING_STEPS` tokens per call: an untrained model never
  stops early). Model policies get observations shaped for their model (cameras, prompt length). Every padded batch
  size (1, 2, 4, ... up to --clients) is compiled before the throughput is measured, as on a server that has been
  up for a while.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
import concurrent.futures
import functools
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

import numpy as np
import websockets.asyncio.server as ws_server
import websockets.sync.client as ws_client

from openpi.serving import websocket_policy_server
from openpi_client import base_policy
from openpi_client import msgpack_numpy
from openpi_client import websocket_client_policy

IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
# Tokens a pi0-FAST policy generates per call (the released configs allow 256; a trained model stops at its EOS).
FAST_DECODING_STEPS = 64
# --policy name → (model family, dummy Gemma variants?).
MODEL_POLICIES = {
    "pi0-dummy": ("pi0", True),
    "pi0": ("pi0", False),
    "pi05-dummy": ("pi05", True),
    "pi05": ("pi05", False),
    "pi0_fast-dummy": ("pi0_fast", True),
    "pi0_fast": ("pi0_fast", False),
}


def robot_observation(seed: int = 0, image_keys=IMAGE_KEYS, token_len: int = 48, fast: bool = False) -> dict:
    """A model-input observation: uint8 224x224 cameras, a 32-d state, an empty prompt of `token_len` tokens
    (pi0-FAST: with its attention blocks)."""
    rng = np.random.default_rng(seed)
    observation = {
        "image": {key: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for key in image_keys},
        "image_mask": dict.fromkeys(image_keys, np.True_),
        "state": rng.normal(size=32).astype(np.float32),
        "tokenized_prompt": np.zeros(token_len, np.int32),
        "tokenized_prompt_mask": np.zeros(token_len, bool),
    }
    if fast:
        observation["token_ar_mask"] = np.zeros(token_len, np.int32)
    return observation


class TrivialPolicy(base_policy.BasePolicy):
    """Answers a constant 50x32 chunk at once: what remains is the serving overhead."""

    def __init__(self, call_ms: float = 0.0, row_ms: float = 0.0) -> None:
        self._call_s, self._row_s = call_ms / 1000, row_ms / 1000
        self._actions = np.zeros((50, 32), np.float32)

    def infer(self, obs: dict) -> dict:
        return self.infer_batch([obs])[0]

    def infer_batch(self, observations: list[dict]) -> list[dict]:
        if self._call_s or self._row_s:
            time.sleep(self._call_s + self._row_s * len(observations))
        return [{"actions": self._actions, "state": obs["state"]} for obs in observations]


def make_policy(name: str) -> tuple[base_policy.BasePolicy, Callable[[int], dict]]:
    """The policy to benchmark and a maker of the robot-sized observations it takes (from a seed); add model-backed
    policies here."""
    if name == "trivial":
        return TrivialPolicy(), robot_observation
    if name == "simulated":
        return TrivialPolicy(call_ms=20.0, row_ms=2.0), robot_observation
    if name in MODEL_POLICIES:
        import flax.nnx as nnx
        import jax

        from openpi.models import pi0
        from openpi.models import pi0_fast
        from openpi.policies import policy as _policy

        family, dummy = MODEL_POLICIES[name]
        if family == "pi0_fast":
            config = pi0_fast.Pi0FASTConfig(**({"paligemma_variant": "dummy"} if dummy else {}))
            sample_kwargs = {"max_decoding_steps": FAST_DECODING_STEPS}
        else:
            variants = {"paligemma_variant": "dummy", "action_expert_variant": "dummy"} if dummy else {}
            config = pi0.Pi0Config(pi05=family == "pi05", **variants)
            sample_kwargs = {}
        params = nnx.to_pure_dict(nnx.state(config.create(jax.random.key(0))))
        if not dummy:
            params = jax.tree.map(lambda x: x.astype(config.dtype), params)  # served weights are bfloat16
        observation = functools.partial(
            robot_observation, image_keys=config.image_keys, token_len=config.max_token_len, fast=family == "pi0_fast"
        )
        return _policy.Policy(config.load(params), sample_kwargs=sample_kwargs), observation
    raise ValueError(f"--policy: expected trivial, simulated or one of {sorted(MODEL_POLICIES)}, got {name!r}")


def start_server(policy: base_policy.BasePolicy, **kwargs) -> tuple[websocket_policy_server.WebsocketPolicyServer, int]:
    server = websocket_policy_server.WebsocketPolicyServer(policy, host="127.0.0.1", port=0, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.wait_started()


def percentiles_ms(samples_s: list[float]) -> str:
    ms = np.asarray(samples_s) * 1000
    return f"median {np.median(ms):7.3f} ms   p90 {np.percentile(ms, 90):7.3f} ms"


def _median_round_trip_s(infer, obs: dict, requests: int) -> list[float]:
    for _ in range(3):
        infer(obs)  # warm up (compiles a model)
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        infer(obs)
        samples.append(time.perf_counter() - start)
    return samples


def bench_overhead(policy: base_policy.BasePolicy, observation: Callable[[int], dict], requests: int) -> None:
    server, port = start_server(policy)
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    with tempfile.TemporaryDirectory() as directory:
        cert_file = _self_signed_certificate(directory)
        context = websocket_policy_server.load_tls_context(cert_file, f"{directory}/server.key")
        tls_server, tls_port = start_server(policy, ssl_context=context)
        tls_client = websocket_client_policy.WebsocketClientPolicy(f"wss://localhost:{tls_port}", ca_file=cert_file)
    small = {"state": np.zeros(32, np.float32), "prompt": "pick up the cube"}
    for label, obs in (("state only (150 B)", small), ("3 cameras 224x224 + state (450 kB)", observation(0))):
        direct = _median_round_trip_s(policy.infer, obs, requests)
        served = _median_round_trip_s(client.infer, obs, requests)
        served_tls = _median_round_trip_s(tls_client.infer, obs, requests)
        overhead_ms = (statistics.median(served) - statistics.median(direct)) * 1000
        tls_ms = (statistics.median(served_tls) - statistics.median(served)) * 1000
        print(f"[{label}]")
        print(f"  direct policy.infer       {percentiles_ms(direct)}")
        print(f"  through the server        {percentiles_ms(served)}")
        print(f"  server overhead (median)  {overhead_ms:7.3f} ms per request  (target <= 2 ms on CPU, trivial policy)")
        echo = _raw_websocket_echo_s(len(msgpack_numpy.Packer().pack(obs)), requests)
        print(f"  floor: bare websockets round trip of the same frame size: {percentiles_ms(echo)}")
        print(f"  through the server, wss:// {percentiles_ms(served_tls)}")
        print(f"  TLS overhead (median)     {tls_ms:7.3f} ms per request  (aim <= 1 ms on CPU, 3 cameras)")
    for connection, running in ((client, server), (tls_client, tls_server)):
        connection.close()
        running.shutdown()


def _self_signed_certificate(directory: str) -> str:
    """The README's self-signed certificate for localhost, made with `openssl` in `directory`; returns its file."""
    command = (
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=policy-server"
    )
    extensions = [
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "keyUsage=critical,digitalSignature,keyCertSign",
        "extendedKeyUsage=serverAuth",
    ]
    files = ["-keyout", f"{directory}/server.key", "-out", f"{directory}/server.crt"]
    extension_flags = [flag for extension in extensions for flag in ("-addext", extension)]
    subprocess.run([*command.split(), *extension_flags, *files], check=True, capture_output=True)
    return f"{directory}/server.crt"


def _raw_websocket_echo_s(frame_bytes: int, requests: int) -> list[float]:
    """A websockets server answering each frame with 2 bytes: the transport cost any server on this stack pays."""

    async def handler(connection: ws_server.ServerConnection) -> None:
        async for _ in connection:
            await connection.send(b"ok")

    ready: concurrent.futures.Future[int] = concurrent.futures.Future()
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        async with ws_server.serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            ready.set_result(server.sockets[0].getsockname()[1])
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    payload = bytes(frame_bytes)
    with ws_client.connect(f"ws://127.0.0.1:{ready.result(10)}", compression=None, max_size=None) as connection:
        samples = _median_round_trip_s(lambda frame: (connection.send(frame), connection.recv()), payload, requests)
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(10)
    return samples


def bench_responsiveness() -> None:
    server, port = start_server(TrivialPolicy(call_ms=1000.0))
    busy = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(busy.infer, robot_observation())
        time.sleep(0.2)  # the 1 s inference is now running
        timings = {}
        for path in ("/healthz", "/metrics"):
            start = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()
            timings[path] = time.perf_counter() - start
        start = time.perf_counter()
        newcomer = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
        timings["metadata of a new connection"] = time.perf_counter() - start
        still_running = not pending.done()
        pending.result()
    newcomer.close()
    busy.close()
    server.shutdown()
    for name, seconds in timings.items():
        print(f"during a 1 s inference: {name:<30} {seconds * 1000:7.2f} ms (target <= 50 ms)")
    print(f"inference still running while measured: {still_running}")


def bench_throughput(
    policy: base_policy.BasePolicy, observation: Callable[[int], dict], clients: int, requests: int
) -> None:
    observations = [observation(seed) for seed in range(clients)]
    batch_size = 1
    while batch_size < 2 * clients:  # compile every padded batch size the server may meet
        policy.infer_batch(observations[:1] * min(batch_size, clients))
        batch_size *= 2
    rates = {}
    for label, max_batch_size in (("batching", clients), ("one at a time", 1)):
        server, port = start_server(policy, max_batch_size=max_batch_size, max_wait_ms=5.0)
        connections = [websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) for _ in range(clients)]
        # Warm up with every client at once, so that the batch sizes the measurement meets are compiled.
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(_run_requests, connections, observations, [1] * clients))
        warm_up = (server.metrics.batch_size.count, server.metrics.batch_size.total)

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(_run_requests, connections, observations, [requests] * clients))
        elapsed = time.perf_counter() - start
        for connection in connections:
            connection.close()
        server.shutdown()
        batches = server.metrics.batch_size.count - warm_up[0]
        mean_batch = (server.metrics.batch_size.total - warm_up[1]) / max(1, batches)
        rates[label] = clients * requests / elapsed
        print(
            f"{clients} clients x {requests} requests, {label:<13}: {rates[label]:9.4g} requests/s"
            f"   ({elapsed:.1f} s, mean batch {mean_batch:4.2f})"
        )
    print(f"batching / one at a time: {rates['batching'] / rates['one at a time']:.2f}x")


def _run_requests(client: websocket_client_policy.WebsocketClientPolicy, obs: dict, requests: int) -> None:
    for _ in range(requests):
        client.infer(obs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--policy", default="trivial", help="trivial or simulated (the overhead also sends a state-only observation)"
    )
    parser.add_argument("--throughput-policy", default="simulated", help="policy for the throughput comparison")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--throughput-requests", type=int, default=None, help="requests per client (default: max(10, requests / 4))"
    )
    args = parser.parse_args()

    print(f"== per-request overhead ({args.policy} policy) ==")
    bench_overhead(*make_policy(args.policy), args.requests)
    print("== responsiveness ==")
    bench_responsiveness()
    print(f"== throughput ({args.throughput_policy} policy) ==")
    per_client = args.throughput_requests or max(10, args.requests // 4)
    bench_throughput(*make_policy(args.throughput_policy), args.clients, per_client)


if __name__ == "__main__":
    main()
