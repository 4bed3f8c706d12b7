"""LeRobot datasets (codebase v2.0, v2.1, v3.0) read and written with pyarrow and PyAV: no torch, no lerobot package.

The entry point is `openpi.lerobot.lerobot_dataset.LeRobotDataset`; the other modules are its building blocks.
"""
