# Policy server image: the openpi project with the CUDA JAX build, installed by uv from uv.lock.
#
#   docker compose -f scripts/compose.yml up --build     (reads SERVER_ARGS, see scripts/compose.yml)
#   docker build -f scripts/serve_policy.Dockerfile -t openpi_server .   (from the repository root)
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

# uv manages the Python interpreter too: the image needs no system Python.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/uv-python \
    UV_PROJECT_ENVIRONMENT=/opt/openpi-venv \
    OPENPI_DATA_HOME=/openpi_assets \
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.9

WORKDIR /app

# Dependencies first (cached across source edits): only the lockfile and the project manifests are needed.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=packages/openpi-client/pyproject.toml,target=packages/openpi-client/pyproject.toml \
    uv sync --frozen --no-dev --extra cuda --no-install-workspace

# Then the project itself.
COPY pyproject.toml uv.lock README.md ./
COPY packages/openpi-client/ packages/openpi-client/
COPY src/ src/
COPY scripts/ scripts/
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --extra cuda

# SERVER_ARGS is parsed like a shell command line, so quoted values keep their spaces:
#   SERVER_ARGS="--env ALOHA_SIM --default_prompt 'my task'"
CMD ["/bin/bash", "-c", "eval \"set -- ${SERVER_ARGS:-}\" && exec uv run --frozen --no-sync scripts/serve_policy.py \"$@\""]
