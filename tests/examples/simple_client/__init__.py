"""Tests of examples/simple_client."""
