"""Tests of examples/aloha_real."""
