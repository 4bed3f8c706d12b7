"""Tests of the command-line scripts."""
