"""Tests of examples/libero."""
