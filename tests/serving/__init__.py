"""Tests of the policy server."""
