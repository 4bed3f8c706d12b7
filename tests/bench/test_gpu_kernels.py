"""bench/gpu_kernels.py's counting, on a dump in the form XLA writes it (the compile itself needs the cuda extra's
plugin, which the default environment lacks; the figures in bench/RESULTS.md come from it)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
import gpu_kernels

# A command buffer, then a loop of 10 trips (known from the HLO) whose body holds a dynamic-slice copy, a command
# buffer and a loop whose trip count is decided at run time, then one kernel.
SEQUENCE = """\
000: kCommandBuffer [source       | next=003 (1)]
    001: kCopy         [source       | next=002 (1)] kCopy
    002: kCustomKernel [prev=001 (1) | sink        ] loop_convert_fusion grid: [8, 1, 1] threads: [128, 1, 1]
003: kWhile         [prev=000 (1) | next=010 (1)]
condition:
    004: kCustomKernel [source | sink] loop_compare_fusion grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
  body:
    005: kDynamicSliceFusion [source       | next=000 (1)] params=1, results=1
        006: kCopy [source | sink] kCopy
    000: kCommandBuffer      [prev=005 (1) | next=009 (1)]
        007: kCustomKernel [source       | next=008 (1)] gemm_fusion_dot grid: [64, 1, 1] threads: [64, 1, 1]
        008: kCustomKernel [prev=007 (1) | sink        ] loop_add_fusion grid: [8, 1, 1] threads: [128, 1, 1]
    009: kWhile         [prev=000 (1) | sink        ]
condition:
        011: kCustomKernel [source | sink] loop_compare_fusion_1 grid: [1, 1, 1] threads: [1, 1, 1]
      body:
        012: kCustomKernel [source | sink] fusion grid: [1, 1, 1] threads: [32, 1, 1]  shared_memory: 0 bytes
010: kCustomKernel  [prev=003 (1) | sink        ] loop_multiply_fusion grid: [13, 1, 1] threads: [128, 1, 1]
"""
METADATA = """\
thunk_metadata {
  thunk_info {
    profile_annotation: "while.5"
    thunk_id: 3
  }
  thunk_kind: "kWhile"
}
thunk_metadata {
  thunk_info {
    profile_annotation: "while.7"
    thunk_id: 9
  }
  thunk_kind: "kWhile"
}
"""
HLO = """\
ENTRY %main.1 (x.1: bf16[8,1024]) -> bf16[8,1024] {
  %while.5 = (s32[], bf16[8,1024]{1,0}) while(%tuple.3), condition=%cond.1, body=%body.1, backend_config={"known_trip_count":{"n":"10"}}
  %while.7 = (s32[], pred[]) while(%tuple.4), condition=%cond.2, body=%body.2
}
"""


@pytest.fixture
def thunks(tmp_path: pathlib.Path) -> list[gpu_kernels.Thunk]:
    (tmp_path / "module_0001.jit_sample.thunk_metadata.txt").write_text(METADATA)
    (tmp_path / "module_0001.jit_sample.thunk_sequence.txt").write_text("000: kCopy [source | sink] kCopy\n")
    (tmp_path / "module_0001.jit_sample.thunk_sequence_after_thunk_passes.txt").write_text(SEQUENCE)
    return gpu_kernels.read_dump(tmp_path, HLO)


def test_a_call_counts_graphs_once_loops_per_trip_and_host_syncs_of_unknown_trip_counts(thunks):
    # Loop body: the slice copy, one graph (2 kernels), and the inner loop's body and condition (read back once).
    body = gpu_kernels.Launches(launches=4, kernels=5, graphs=1, syncs=1)
    assert gpu_kernels.count(thunks) == gpu_kernels.Launches(
        launches=1 + 10 * body.launches + 1,
        kernels=2 + 10 * body.kernels + 1,
        graphs=1 + 10 * body.graphs,
        syncs=10,
    )
    outer, inner = gpu_kernels.loops(thunks)
    assert (outer.trips, inner.trips) == (10, None)
    assert gpu_kernels.count(outer.children) == body
    assert [thunk.name for thunk in inner.condition] == ["loop_compare_fusion_1"]


def test_a_sequence_without_thunk_passes_is_read_as_written(tmp_path):
    (tmp_path / "m.thunk_metadata.txt").write_text("")
    (tmp_path / "m.thunk_sequence.txt").write_text(
        "001: kCustomKernel [source | next=002 (1)] a grid: [1, 1, 1]\n002: kCopy [prev=001 (1) | sink] kCopy\n"
    )
    thunks = gpu_kernels.read_dump(tmp_path, "")
    assert gpu_kernels.count(thunks) == gpu_kernels.Launches(launches=2, kernels=2)


def test_compiler_options_take_booleans_and_integers_and_refuse_a_bare_name():
    assert gpu_kernels._compiler_option("xla_gpu_enable_triton_gemm=false") == ("xla_gpu_enable_triton_gemm", False)
    assert gpu_kernels._compiler_option("xla_gpu_graph_min_graph_size=2") == ("xla_gpu_graph_min_graph_size", 2)
    with pytest.raises(SystemExit, match="name=value"):
        gpu_kernels._compiler_option("xla_gpu_enable_triton_gemm")
