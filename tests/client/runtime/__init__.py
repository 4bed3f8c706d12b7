"""Tests of openpi_client.runtime."""
