"""Which accelerator JAX computes on, and a start-up stop for an NVIDIA GPU left idle by a CPU-only JAX install."""

import logging
import os
import pathlib
import re
import shutil
import subprocess

import jax

logger = logging.getLogger(__name__)

# One directory per GPU the NVIDIA kernel driver has bound (named by PCI address), each with an `information` file.
NVIDIA_PROC_GPUS = pathlib.Path("/proc/driver/nvidia/gpus")
_NVIDIA_SMI_TIMEOUT_S = 10.0
_INSTALL_HINT = "install JAX for CUDA with `uv sync --extra cuda` (`uv sync --extra cuda13` for a CUDA 13 driver)"


def visible_nvidia_gpus(
    nvidia_smi: str | os.PathLike | None = None, proc_gpus: str | os.PathLike = NVIDIA_PROC_GPUS
) -> list[str]:
    """The NVIDIA GPUs this machine shows, one description each; empty on a machine without any.

    Asks `nvidia-smi -L` (`nvidia_smi`, default: the one on PATH), whose answer stands when it runs: a driver that
    cannot talk to its GPU leaves nothing JAX could use. Without nvidia-smi (e.g. a container that lacks it), the
    GPUs the kernel driver lists under `proc_gpus` count.
    """
    nvidia_smi = nvidia_smi or shutil.which("nvidia-smi")
    if nvidia_smi:
        try:
            listing = subprocess.run(
                [os.fspath(nvidia_smi), "-L"], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            logger.debug("nvidia-smi -L failed: %s", err)
            return []
        if listing.returncode != 0:
            return []
        # "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)": the UUID tells a user nothing here.
        return [
            re.sub(r"\s*\(UUID: [^)]*\)", "", line.strip())
            for line in listing.stdout.splitlines()
            if line.startswith("GPU ")
        ]
    proc_gpus = pathlib.Path(proc_gpus)
    if not proc_gpus.is_dir():
        return []
    return [f"{_proc_gpu_model(entry)} at PCI {entry.name}" for entry in sorted(proc_gpus.iterdir())]


def _proc_gpu_model(entry: pathlib.Path) -> str:
    try:
        information = (entry / "information").read_text()
    except OSError:
        return "NVIDIA GPU"
    model = re.search(r"^Model:\s*(.+)$", information, re.MULTILINE)
    return model.group(1).strip() if model else "NVIDIA GPU"


def _cpu_chosen_explicitly() -> bool:
    """`JAX_PLATFORMS` names the platforms JAX may use; one without a GPU platform asks for the CPU on purpose."""
    platforms = {name.strip().lower() for name in os.environ.get("JAX_PLATFORMS", "").split(",") if name.strip()}
    return bool(platforms) and not platforms & {"cuda", "gpu", "rocm"}


def ensure_gpu_used(*, allow_cpu: bool, allow_flag: str = "--allow-cpu") -> None:
    """Stops the program (`SystemExit` with one line) when JAX computes on the CPU while an NVIDIA GPU is visible,
    the state a plain `uv sync` leaves a GPU machine in; with `allow_cpu` it only warns. Silent when JAX uses an
    accelerator, on machines without an NVIDIA GPU, and when `JAX_PLATFORMS` asks for the CPU. Call it before any
    heavy work, from a program's entry point (`allow_flag` names the flag that lets the program run on anyway)."""
    if jax.default_backend() != "cpu" or _cpu_chosen_explicitly():
        return
    gpus = visible_nvidia_gpus()
    if not gpus:
        return
    shown = "; ".join(gpus[:2]) + (f"; and {len(gpus) - 2} more" if len(gpus) > 2 else "")
    problem = f"JAX computes on the CPU, but this machine has an NVIDIA GPU ({shown})"
    if allow_cpu:
        logger.warning("%s; running on the CPU as %s asks. To use the GPU, %s.", problem, allow_flag, _INSTALL_HINT)
        return
    raise SystemExit(f"error: {problem}: {_INSTALL_HINT}, or pass {allow_flag} to run on the CPU anyway.")
