"""Tests of examples/droid."""
