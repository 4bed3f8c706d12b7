#!/usr/bin/env bash
# Installs Docker Engine with the compose plugin on Ubuntu 22.04 from Docker's apt repository, and lets the
# invoking user run docker without sudo. Safe to run again: finished steps are skipped.
set -euo pipefail

if [[ "$(id -u)" -ne 0 ]]; then
  SUDO=(sudo)
else
  SUDO=()
fi

KEYRING=/etc/apt/keyrings/docker.asc
SOURCES=/etc/apt/sources.list.d/docker.list

if docker --version >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  echo "Docker and the compose plugin are already installed."
else
  # shellcheck source=/dev/null
  . /etc/os-release
  if [[ "${ID:-}" != "ubuntu" ]]; then
    echo "This script is for Ubuntu (22.04); found ${PRETTY_NAME:-an unknown system}." >&2
    exit 1
  fi
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y ca-certificates curl
  "${SUDO[@]}" install -m 0755 -d /etc/apt/keyrings
  if [[ ! -s "$KEYRING" ]]; then
    "${SUDO[@]}" curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o "$KEYRING"
    "${SUDO[@]}" chmod a+r "$KEYRING"
  fi
  if [[ ! -f "$SOURCES" ]]; then
    echo "deb [arch=$(dpkg --print-architecture) signed-by=$KEYRING] https://download.docker.com/linux/ubuntu ${VERSION_CODENAME} stable" |
      "${SUDO[@]}" tee "$SOURCES" >/dev/null
  fi
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
fi

# Run docker without sudo (takes effect at the next login, or after `newgrp docker`).
TARGET_USER="${SUDO_USER:-$(id -un)}"
if [[ "$TARGET_USER" != "root" ]] && ! id -nG "$TARGET_USER" | tr ' ' '\n' | grep -qx docker; then
  getent group docker >/dev/null || "${SUDO[@]}" groupadd docker
  "${SUDO[@]}" usermod -aG docker "$TARGET_USER"
  echo "Added $TARGET_USER to the docker group: log out and back in (or run 'newgrp docker')."
fi

# Start Docker at boot.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  "${SUDO[@]}" systemctl enable --now docker.service containerd.service
fi
echo "Docker is ready: $(docker --version)"
