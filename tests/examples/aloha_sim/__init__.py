"""Tests of examples/aloha_sim."""
