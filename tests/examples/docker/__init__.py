"""Tests of the Docker files and host set-up scripts."""
