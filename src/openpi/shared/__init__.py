"""Shared utilities: downloads, normalization statistics, image tools, typing."""
