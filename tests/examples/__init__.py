"""Tests of the robot examples in examples/."""
