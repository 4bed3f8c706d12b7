"""A model in the original's exported layout served by scripts/serve_policy.py (`--env ALOHA_SIM policy:exported
--policy.dir=... [--policy.processor=...]`, the README's command) to the published openpi-client 0.1.2, offline."""

from __future__ import annotations

import json
import pathlib
import subprocess
import textwrap

import numpy as np
import pytest

from openpi.models import tokenizer as _tokenizer
from openpi.policies import exported as _exported
from openpi.shared import download
from openpi.training import debug_data
from policies import test_exported_original_format as original

from .conftest import free_port
from .conftest import load_script

NUM_REQUESTS = 2
# Float32 model; the served program and the one in this process agree up to XLA's fusion choices.
ATOL = 1e-5

# Runs inside the published client's venv, where openpi is not importable.
_CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from openpi_client import websocket_client_policy

    def observation(seed):
        rng = np.random.default_rng(seed)
        cameras = ("cam_high", "cam_left_wrist", "cam_right_wrist")
        return {
            "images": {name: rng.integers(0, 256, (3, 48, 64), dtype=np.uint8) for name in cameras},
            "state": rng.uniform(-1, 1, 14).astype(np.float32),
            "prompt": "transfer cube",
        }

    port, requests = int(sys.argv[1]), int(sys.argv[2])
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    report = {"metadata": client.get_server_metadata(), "actions": []}
    for seed in range(requests):
        report["actions"].append(client.infer(observation(seed))["actions"].tolist())
    print(json.dumps(report))
    """
)


def _observation(seed: int) -> dict:
    """What the client script sends as request `seed`."""
    rng = np.random.default_rng(seed)
    cameras = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    return {
        "images": {name: rng.integers(0, 256, (3, 48, 64), dtype=np.uint8) for name in cameras},
        "state": rng.uniform(-1, 1, 14).astype(np.float32),
        "prompt": "transfer cube",
    }


@pytest.fixture(scope="module")
def original_dir(tmp_path_factory) -> pathlib.Path:
    config = original.tiny_config()
    return original.write_original_export(
        tmp_path_factory.mktemp("original") / "model", config, original.tiny_params(config)
    )


@pytest.fixture
def offline_env(debug_env, tmp_path, monkeypatch) -> dict[str, str]:
    """Offline caches in which the debug tokenizer stands in for PaliGemma's (the original's exports ship none), for
    this process and the server's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPENPI_DATA_HOME", str(cache))
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    url = _tokenizer.PALIGEMMA_TOKENIZER_URL
    cached = download.get_cache_dir() / url.removeprefix("gs://")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(debug_data.tokenizer_path().read_bytes())
    cached.with_name(f".{cached.name}.complete").write_text(
        json.dumps({"url": url, "files": {"": cached.stat().st_size}})
    )
    return {**debug_env, "OPENPI_DATA_HOME": str(cache), "OPENPI_OFFLINE": "1"}


@pytest.mark.slow
def test_served_original_export_gives_the_published_client_the_actions_of_the_policy_in_process(
    serve_policy_process, published_client_python, offline_env, original_dir
):
    args = ["--env", "ALOHA_SIM", "policy:exported", f"--policy.dir={original_dir}"]
    port = free_port()
    serve_policy_process(*args, f"--policy.processor={original.PLAIN_PROCESSOR}", env=offline_env, port=port)
    run = subprocess.run(
        [str(published_client_python), "-c", _CLIENT_SCRIPT, str(port), str(NUM_REQUESTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["metadata"]["processor"] == original.PLAIN_PROCESSOR
    assert report["metadata"]["action_horizon"] == 4

    # The same command's policy in this process starts from the same rng, so it answers the same.
    serve_policy = load_script("serve_policy")
    policy = serve_policy.create_policy(
        serve_policy.Args(
            env=serve_policy.EnvMode.ALOHA_SIM,
            policy=serve_policy.Exported(dir=str(original_dir), processor=original.PLAIN_PROCESSOR),
        )
    )
    for seed, served in enumerate(report["actions"]):
        expected = policy.infer(_observation(seed))["actions"]
        assert np.asarray(served).shape == (4, original.ALOHA_DIM)
        np.testing.assert_allclose(np.asarray(served), expected, atol=ATOL)


def test_serve_policy_picks_the_env_default_processor_and_lists_them_when_it_is_absent(offline_env, original_dir):
    serve_policy = load_script("serve_policy")
    exported = serve_policy.Exported(dir=str(original_dir))
    policy = serve_policy.create_policy(serve_policy.Args(env=serve_policy.EnvMode.ALOHA_SIM, policy=exported))
    assert policy.metadata["processor"] == original.ENV_DEFAULT_PROCESSOR
    with pytest.raises(_exported.ExportedModelError, match=r"default 'libero' is not among them.*openx_droid"):
        serve_policy.create_policy(serve_policy.Args(env=serve_policy.EnvMode.LIBERO, policy=exported))
