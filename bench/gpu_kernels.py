"""Kernel launches of pi0 / pi0.5 / pi0-FAST ``sample_actions`` as XLA compiles them for a GPU, counted without one.

XLA compiles for a GPU described by a target-config file (a ``GpuTargetConfigProto`` in text form; ``gpu_targets/``
holds an H200's) on a machine that has none: the ``cuda`` extra's plugin is all it needs. The parameters are never
materialised (abstract shapes, bfloat16 as served), so the full 3.3 B-parameter models compile on a laptop in
seconds. XLA writes the compiled program's thunk sequence (its run-time steps, after the passes that gather kernels
into command buffers) to a dump; this script counts from it what one call launches:

- every kernel, copy or library call is one launch, unless it sits in a command buffer (a CUDA graph), which is one
  launch however many kernels it holds;
- a while loop runs its body once per trip (its trip count from the compiled HLO); a loop whose trip count is
  decided at run time (pi0-FAST's decoding) is counted once, with a host round trip for its condition.

It prints, per config and batch size, the launches (and kernels, graphs, host syncs) of a whole call, of one
denoising or decoding step, and of one layer of the step's pass when that is a loop:

    uv run --extra cuda bench/gpu_kernels.py                          # all three, batch 1 and 8
    uv run --extra cuda bench/gpu_kernels.py --configs pi05 --batch-sizes 1 --unroll-layers False
    uv run --extra cuda bench/gpu_kernels.py --xla xla_gpu_enable_triton_gemm=false   # XLA compiler options

Counts are not latencies: they say what each step costs in launches and kernels, which at batch 1 is what the
denoising steps' time goes to (bench/RESULTS.md). Without the device XLA cannot autotune its GEMMs and picks default
tilings (Triton), so a real compile may pick other GEMM kernels; some shapes then find no tiling (batch 8's SigLIP),
which cuBLAS GEMMs avoid (``--xla xla_gpu_enable_triton_gemm=false``).
"""

import dataclasses
import os
import pathlib
import re
import tempfile
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import tyro

import bench_model
from openpi.models import model as _model

TARGET_CONFIGS = pathlib.Path(__file__).parent / "gpu_targets"

_THUNK = re.compile(r"^(\s*)(\d+): (k\w+)\s*\[[^\]]*\]\s*(.*)$")
_TRIPS = re.compile(r'^\s+(?:ROOT )?%([\w.\-]+) = .* while\(.*"known_trip_count":\{"n":"(\d+)"', re.MULTILINE)


@dataclasses.dataclass
class Thunk:
    """One step of a compiled GPU program (XLA's thunk): a kernel, a copy, a command buffer (CUDA graph) holding a
    sequence of them, or a while loop with a condition and a body."""

    id: int
    kind: str
    name: str
    indent: int
    children: list["Thunk"] = dataclasses.field(default_factory=list)
    condition: list["Thunk"] = dataclasses.field(default_factory=list)
    trips: int | None = None
    _section: str = "children"


@dataclasses.dataclass
class Launches:
    """What a thunk sequence launches on one run: ``launches`` counts a command buffer once, ``kernels`` counts each
    kernel or copy, inside command buffers too; ``graphs`` counts command-buffer launches, ``syncs`` the host
    round trips of loops whose trip count is decided at run time (their condition is read back every trip)."""

    launches: int = 0
    kernels: int = 0
    graphs: int = 0
    syncs: int = 0

    def __add__(self, other: "Launches") -> "Launches":
        return Launches(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))

    def __mul__(self, times: int) -> "Launches":
        return Launches(*(a * times for a in dataclasses.astuple(self)))


def parse_thunks(sequence_text: str, trips: dict[int, int] | None = None) -> list[Thunk]:
    """The top-level thunks of XLA's thunk-sequence dump (``*.thunk_sequence*.txt``); ``trips`` gives while thunks
    their trip counts by thunk id."""
    trips = trips or {}
    root = Thunk(-1, "root", "", -1)
    stack = [root]
    for line in sequence_text.splitlines():
        label = line.strip()
        if label in ("condition:", "body:"):
            loop = next(thunk for thunk in reversed(stack) if thunk.kind == "kWhile")
            loop._section = label[:-1] if label == "condition:" else "children"
            continue
        match = _THUNK.match(line)
        if match is None:
            continue
        indent, thunk_id, kind, name = len(match.group(1)), int(match.group(2)), match.group(3), match.group(4)
        while stack[-1].indent >= indent:
            stack.pop()
        thunk = Thunk(thunk_id, kind, name.split(" grid:")[0].strip(), indent, trips=trips.get(thunk_id))
        parent = stack[-1]
        (parent.condition if parent._section == "condition" else parent.children).append(thunk)
        stack.append(thunk)
    return root.children


def count(thunks: list[Thunk], in_graph: bool = False) -> Launches:
    """What running ``thunks`` once launches."""
    total = Launches()
    for thunk in thunks:
        if thunk.kind == "kWhile":
            body = count(thunk.children, in_graph)
            if thunk.trips is None:  # the condition runs and is read back by the host every trip
                total += body + count(thunk.condition, in_graph) + Launches(syncs=1)
            else:
                total += body * thunk.trips
        elif thunk.kind == "kCommandBuffer":
            inner = count(thunk.children, True)
            total += Launches(launches=0 if in_graph else 1, kernels=inner.kernels, graphs=1 + inner.graphs)
        elif thunk.kind == "kSequential":
            total += count(thunk.children, in_graph)
        else:  # a kernel, a copy, a library call; a dynamic-slice fusion runs the one thunk it wraps
            total += Launches(launches=0 if in_graph else 1, kernels=1)
    return total


def loops(thunks: list[Thunk]) -> list[Thunk]:
    """Every while thunk, outermost first."""
    found, pending = [], list(thunks)
    while pending:
        thunk = pending.pop(0)
        if thunk.kind == "kWhile":
            found.append(thunk)
        pending.extend(thunk.children)
    return found


def read_dump(dump_dir: pathlib.Path, hlo_text: str) -> list[Thunk]:
    """The thunks of the one program dumped to ``dump_dir`` (after XLA's thunk passes, which form the command
    buffers), with the trip counts that ``hlo_text`` (the compiled HLO) gives its loops."""
    (metadata,) = dump_dir.glob("*.thunk_metadata.txt")
    after_passes = list(dump_dir.glob("*.thunk_sequence_after_thunk_passes.txt"))
    (sequence,) = after_passes or list(dump_dir.glob("*.thunk_sequence.txt"))
    loop_trips = {name: int(n) for name, n in _TRIPS.findall(hlo_text)}
    trips = {}
    for entry in re.findall(
        r'profile_annotation: "([^"]*)"\s*thunk_id: (\d+)\s*\}\s*thunk_kind: "kWhile"', metadata.read_text()
    ):
        annotation, thunk_id = entry
        if annotation in loop_trips:
            trips[int(thunk_id)] = loop_trips[annotation]
    return parse_thunks(sequence.read_text(), trips)


def gpu_device(target_config: pathlib.Path) -> jax.Device:
    """A compile-only device of the GPU that ``target_config`` describes."""
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            target_config.stem, "cuda", target_config=target_config.read_text(), topology="1x1x1"
        )
    except (RuntimeError, NotImplementedError) as error:
        raise SystemExit(f"no CUDA compiler in this environment ({error}); run with `uv run --extra cuda`") from error
    return topology.devices[0]


def compile_sample(
    config_name: str,
    batch_size: int,
    device: jax.Device,
    *,
    num_steps: int,
    param_dtype: str,
    compiler_options: dict[str, bool | int | str],
    unroll_layers: _model.UnrollLayers = "sampling",
) -> tuple[str, list[Thunk]]:
    """``sample_actions`` of config ``config_name`` (a ``bench_model.CONFIGS`` name) compiled for ``device``, with
    the parameters cast to ``param_dtype`` as ``serve_policy.py`` serves them: its HLO text and its thunks.
    ``num_steps`` is pi0's number of denoising steps, pi0-FAST's most decoding steps."""
    config_class, fields = bench_model.CONFIGS[config_name]
    config = config_class(dtype="bfloat16", unroll_layers=unroll_layers, **fields)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: config.create(jax.random.key(0))))
    sharding = jax.sharding.SingleDeviceSharding(device)

    def abstract(x, dtype=None):
        floating = jnp.issubdtype(x.dtype, jnp.floating)
        return jax.ShapeDtypeStruct(x.shape, dtype if dtype and floating else x.dtype, sharding=sharding)

    state = jax.tree.map(lambda x: abstract(x, param_dtype), state)
    observation = jax.tree.map(abstract, jax.eval_shape(lambda: config.fake_obs(batch_size)))

    fast = config.model_type == _model.ModelType.PI0_FAST
    steps = {"max_decoding_steps" if fast else "num_steps": num_steps}

    @jax.jit
    def sample(state, observation):
        return nnx.merge(graphdef, state).sample_actions(jax.random.key(1), observation, **steps)

    with tempfile.TemporaryDirectory() as dump_dir:
        compiled = sample.lower(state, observation).compile(
            compiler_options={**compiler_options, "xla_dump_to": dump_dir}
        )
        text = compiled.as_text()
        return text, read_dump(pathlib.Path(dump_dir), text)


@dataclasses.dataclass
class Args:
    configs: tuple[str, ...] = ("pi0", "pi05", "pi0_fast")
    batch_sizes: tuple[int, ...] = (1, 8)
    target: str = "h200"
    """A target config in bench/gpu_targets (its stem), or the path of one."""
    num_steps: int = 10
    """pi0's denoising steps; pi0-FAST's most decoding steps (its loop's trip count is decided at run time, so a
    "step" there is one trip of its decoding loop)."""
    param_dtype: str = "bfloat16"
    unroll_layers: _model.UnrollLayers = "sampling"
    """Compile the layer stacks unrolled (``Pi0Config.unroll_layers``): True, False or "sampling"."""
    xla: tuple[str, ...] = ()
    """XLA compiler options for these programs, ``name=value`` (``xla_gpu_enable_triton_gemm=false``)."""
    dump_dir: str | None = None
    """Write each compiled program's HLO text here."""


def _compiler_option(option: str) -> tuple[str, bool | int | str]:
    """``name=value`` as XLA's compiler options take it: true/false as booleans, digits as integers."""
    name, sep, value = option.partition("=")
    if not sep:
        raise SystemExit(f"--xla: expected name=value, got {option!r}")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    return name, int(value) if value.lstrip("-").isdigit() else value


def main(args: Args) -> None:
    target = pathlib.Path(args.target)
    if not target.exists():
        target = TARGET_CONFIGS / f"{args.target}.txtpb"
    device = gpu_device(target)
    options = dict(_compiler_option(option) for option in args.xla)
    print(
        f"target {target.name} ({device.device_kind}); compiler options {options}; XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}"
    )
    print(
        f"{'config':<8} {'batch':>5} {'compile':>8} | {'per call: launches':>18} {'kernels':>8} {'graphs':>7} "
        f"{'syncs':>6} | {'per denoising step':>18} {'kernels':>8} | {'per expert layer':>16} {'kernels':>8}"
    )
    for name in args.configs:
        for batch_size in args.batch_sizes:
            start = time.perf_counter()
            try:
                text, thunks = compile_sample(
                    name,
                    batch_size,
                    device,
                    num_steps=args.num_steps,
                    param_dtype=args.param_dtype,
                    compiler_options=options,
                    unroll_layers=args.unroll_layers,
                )
            except jax.errors.JaxRuntimeError as error:
                print(f"{name:<8} {batch_size:>5} compile failed: {str(error).splitlines()[0][:160]}", flush=True)
                continue
            seconds = time.perf_counter() - start
            if args.dump_dir is not None:
                os.makedirs(args.dump_dir, exist_ok=True)
                pathlib.Path(args.dump_dir, f"{name}_b{batch_size}.hlo").write_text(text)
            call = count(thunks)
            steps = [loop for loop in loops(thunks) if loop.trips in (args.num_steps, None)]
            step = count(steps[0].children) if steps else None
            layers = loops(steps[0].children) if steps else []
            layer = count(layers[0].children) if layers else None
            print(
                f"{name:<8} {batch_size:>5} {seconds:7.1f}s | {call.launches:>18} {call.kernels:>8} {call.graphs:>7} "
                f"{call.syncs:>6} | {step.launches if step else '-':>18} {step.kernels if step else '-':>8} | "
                f"{layer.launches if layer else '-':>16} {layer.kernels if layer else '-':>8}",
                flush=True,
            )


if __name__ == "__main__":
    main(tyro.cli(Args))
