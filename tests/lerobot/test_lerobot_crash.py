"""A writer killed at an arbitrary moment leaves every episode it saved readable (v2.1 and v3.0)."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from openpi.lerobot.lerobot_dataset import LeRobotDataset

FRAMES = 10

# Records episodes forever, reporting each save on stdout; the test kills it with SIGKILL.
WRITER_SCRIPT = """
import sys
import numpy as np
from openpi.lerobot.lerobot_dataset import LeRobotDataset

root, version, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
features = {
    "observation.state": {"dtype": "float32", "shape": (2,), "names": None},
    "observation.images.top": {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
}
dataset = LeRobotDataset.create("test/crash", fps=10, features=features, root=root, codebase_version=version)
index = 0
for episode in range(10_000):
    for _ in range(frames):
        image = np.full((48, 64, 3), (index * 9) % 200 + 20, np.uint8)
        dataset.add_frame({"observation.state": np.array([index, episode], np.float32), "observation.images.top": image, "task": "t"})
        index += 1
    dataset.save_episode()
    print("saved", episode + 1, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
@pytest.mark.parametrize("delay_s", [0.0, 0.013])
def test_killed_writer_leaves_saved_episodes_readable(tmp_path, version, delay_s):
    root = tmp_path / "ds"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(root), version, str(FRAMES)], stdout=subprocess.PIPE, text=True
    )
    try:
        for line in process.stdout:
            if line.strip() == "saved 3":
                break
        time.sleep(delay_s)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    dataset = LeRobotDataset("test/crash", root=root, local_files_only=True)
    assert dataset.meta.total_episodes >= 3
    assert len(dataset) == dataset.meta.total_episodes * FRAMES
    for index in range(len(dataset)):
        item = dataset[index]
        np.testing.assert_array_equal(item["observation.state"], [index, index // FRAMES])
        expected_level = ((index * 9) % 200 + 20) / 255
        assert abs(float(np.median(item["observation.images.top"])) - expected_level) < 4 / 255
