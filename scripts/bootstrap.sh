#!/usr/bin/env bash
# Prepares a fresh machine (Python 3.11 + pip): installs uv and, where missing and possible, the system libraries
# headless MuJoCo rendering needs (EGL + Mesa). Safe to run again.
set -euo pipefail

if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
  else
    echo "warning: libEGL is missing and cannot be installed here; MuJoCo rendering (ALOHA sim) will fail" >&2
  fi
fi
python3 -m pip install -q uv
