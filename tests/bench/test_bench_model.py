"""bench/bench_model.py side by side: both sides run bench/model_api_timing.py, written against the original openpi's
public model API; here our own environment stands in for the original's, so the run also proves that API works on
ours."""

import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_side_by_side_runs_both_sides_through_the_original_api_and_prints_the_ratio(tmp_path):
    command = [sys.executable, str(REPO / "bench" / "bench_model.py"), "--reference-python", sys.executable]
    command += ["--configs", "dummy", "--dtypes", "float32", "--sample-batch-sizes", "1", "--grad-batch-sizes"]
    command += ["--repeats", "1", "--rounds", "1"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(
        r"round 0 (ours|original) +dummy +float32 +sample_actions batch 1 .* warm +([0-9.]+) ms", result.stdout
    )
    assert sorted(side for side, _ in rows) == ["original", "ours"], result.stdout
    assert all(float(warm_ms) > 0 for _, warm_ms in rows)
    ratio = re.search(r"dummy +float32 +sample_actions batch 1 +ours .* ratio ([0-9.]+)x", result.stdout)
    assert ratio is not None, result.stdout
    assert float(ratio.group(1)) > 0


def test_side_by_side_refuses_configs_without_a_counterpart_in_the_original_api(tmp_path):
    command = [sys.executable, str(REPO / "bench" / "bench_model.py"), "--reference-python", sys.executable]
    command += ["--configs", "gemma_300m"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert "configs: side by side supports ['dummy', 'pi05_dummy'], got ['gemma_300m']" in result.stderr
