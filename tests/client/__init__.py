"""Tests of the openpi-client package."""
