"""Runs an agent against an environment episode by episode, at a bounded rate."""
