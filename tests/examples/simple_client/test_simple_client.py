"""examples/simple_client against a real server whose policy runs each robot's real input transforms."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .. import example_modules
from .. import robot_test_policy

(main,) = example_modules.load("simple_client", "main")
SCRIPT = example_modules.EXAMPLES_DIR / "simple_client" / "main.py"


@pytest.mark.parametrize("env", list(main.EnvMode))
def test_every_env_sends_observations_its_policy_transforms_accept(serve, env):
    policy = robot_test_policy.RobotTestPolicy(env.name)
    port = serve(policy)
    timings = main.run(main.Args(host="127.0.0.1", port=port, env=env, num_steps=3))
    assert len(policy.observations) == 4  # warm-up + 3 timed
    assert [len(values) for values in timings.values()] == [3, 3, 0]  # this policy reports no policy_timing
    assert all(value > 0 for value in timings["client round trip"])


def test_aloha_sim_sends_only_the_top_camera(serve):
    policy = robot_test_policy.RobotTestPolicy("ALOHA_SIM")
    main.run(main.Args(host="127.0.0.1", port=serve(policy), env=main.EnvMode.ALOHA_SIM, num_steps=1))
    assert set(policy.observations[0]["images"]) == {"cam_high"}


def test_script_prints_a_latency_table(serve):
    port = serve(robot_test_policy.RobotTestPolicy("DROID"))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--host", "127.0.0.1", "--port", str(port), "--env", "DROID", "--num-steps", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    header, round_trip, server_infer = result.stdout.strip().splitlines()
    assert header.split()[2:] == ["count", "mean", "std", "min", "p50", "p90", "p99", "max"]
    assert round_trip.startswith("client round trip")
    assert round_trip.split()[3] == "5"
    assert server_infer.startswith("server infer")
    assert server_infer.split()[2] == "5"


def test_latency_table_reports_percentiles():
    table = main.latency_table({"round trip": [float(v) for v in range(1, 101)], "empty": []})
    header, row = table.splitlines()
    values = dict(zip(header.split()[2:], row.split()[2:], strict=True))
    assert values == {
        "count": "100",
        "mean": "50.5",
        "std": "28.9",
        "min": "1.0",
        "p50": "50.5",
        "p90": "90.1",
        "p99": "99.0",
        "max": "100.0",
    }


def test_server_errors_reach_the_client(serve):
    # A LIBERO policy cannot transform DROID observations: the client raises with the server's message.
    port = serve(robot_test_policy.RobotTestPolicy("LIBERO"))
    with pytest.raises(RuntimeError, match="observation/image"):
        main.run(main.Args(host="127.0.0.1", port=port, env=main.EnvMode.DROID, num_steps=1))
