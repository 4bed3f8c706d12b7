"""Private building blocks of openpi.training.lerobot_dataset (LeRobot format I/O)."""
