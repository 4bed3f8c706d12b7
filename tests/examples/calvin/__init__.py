"""Tests of examples/calvin."""
