#!/usr/bin/env bash
# Installs the NVIDIA Container Toolkit on Ubuntu (apt) and configures Docker to use it, so that containers
# can reserve GPUs (see scripts/compose.yml). Needs the NVIDIA driver and Docker. Safe to run again.
set -euo pipefail

if [[ "$(id -u)" -ne 0 ]]; then
  SUDO=(sudo)
else
  SUDO=()
fi

KEYRING=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
SOURCES=/etc/apt/sources.list.d/nvidia-container-toolkit.list
REPO=https://nvidia.github.io/libnvidia-container
DAEMON_CONFIG="${DOCKER_DAEMON_CONFIG:-/etc/docker/daemon.json}"

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "nvidia-smi not found: install the NVIDIA driver first." >&2
  exit 1
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "docker not found: run scripts/install_docker_ubuntu22.sh first." >&2
  exit 1
fi

if command -v nvidia-ctk >/dev/null 2>&1; then
  echo "The NVIDIA Container Toolkit is already installed."
else
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y ca-certificates curl gpg
  if [[ ! -s "$KEYRING" ]]; then
    curl -fsSL "$REPO/gpgkey" | "${SUDO[@]}" gpg --dearmor --yes -o "$KEYRING"
  fi
  if [[ ! -f "$SOURCES" ]]; then
    curl -fsSL "$REPO/stable/deb/nvidia-container-toolkit.list" |
      sed "s#deb https://#deb [signed-by=$KEYRING] https://#g" |
      "${SUDO[@]}" tee "$SOURCES" >/dev/null
  fi
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y nvidia-container-toolkit
fi

# Register the NVIDIA runtime with Docker (rewrites the daemon config; skipped when already there).
if ! grep -qs '"nvidia"' "$DAEMON_CONFIG"; then
  "${SUDO[@]}" nvidia-ctk runtime configure --runtime=docker --config="$DAEMON_CONFIG"
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl restart docker
  else
    echo "Restart the Docker daemon for the NVIDIA runtime to take effect."
  fi
fi
echo "Check with: docker run --rm --gpus all ubuntu nvidia-smi"
