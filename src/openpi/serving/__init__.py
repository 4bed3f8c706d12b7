"""Serving policies to robots over the network."""
