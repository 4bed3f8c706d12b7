"""Checks on a client's request before it reaches the policy: a clear error instead of a poisoned batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from openpi_client import msgpack_numpy


class BadRequestError(ValueError):
    """A client sent something that is not a valid observation."""


def decode_observation(frame: bytes | str) -> dict:
    """Decodes one request frame into an observation dict, raising `BadRequestError` saying what is wrong."""
    if isinstance(frame, str):
        raise BadRequestError("request: expected a binary msgpack frame, got a text frame")
    try:
        obs = msgpack_numpy.unpackb(frame)
    except Exception as error:
        raise BadRequestError(
            f"request: not a valid msgpack-numpy message ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(obs, dict):
        raise BadRequestError(f"request: expected a map of observation fields, got {type(obs).__name__}")
    check_observation(obs)
    return obs


def check_observation(obs: dict) -> None:
    """Checks field names are strings, `prompt` (if any) is a string and float arrays hold no NaN or infinity."""
    if "prompt" in obs and not isinstance(obs["prompt"], str):
        raise BadRequestError(f"prompt: expected a string, got {type(obs['prompt']).__name__}")
    _check_value(obs, "observation")


def _check_value(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadRequestError(f"{path}: field names must be strings, got {key!r}")
            _check_value(item, key if path == "observation" else f"{path}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]")
    elif (
        isinstance(value, (np.ndarray, np.generic, float))
        and np.issubdtype(np.asarray(value).dtype, np.floating)
        and not np.isfinite(value).all()
    ):
        raise BadRequestError(f"{path}: contains NaN or infinity")
