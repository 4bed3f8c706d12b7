"""Tests of the UR5 example."""
