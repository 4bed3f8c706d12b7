"""FAST action tokenizer (arXiv 2501.09747): an action chunk becomes quantized DCT coefficients, compressed by BPE.

Encoding a chunk `[time, action_dim]`: a DCT-II (orthonormal) along time, times `scale`, rounded, flattened time-major,
shifted by `min_token` so the smallest coefficient is 0 and written as one unicode character per coefficient; a
byte-pair encoding learned on such strings turns it into a few token ids. Decoding runs the same steps backwards.
Smooth motion concentrates in the low frequencies, so most coefficients round to zero and BPE compresses them well.

A vocabulary is a directory with `tokenizer.json` (a Hugging Face `tokenizers` BPE) and `processor_config.json`
(`scale`, `vocab_size`, `min_token`, `time_horizon`, `action_dim`), the layout of the released
`physical-intelligence/fast` on the Hugging Face hub, which `FASTActionTokenizer.load` reads as well.
"""

from collections.abc import Iterable
import json
import logging
import os
import pathlib
import re
from typing import Any

import numpy as np
import scipy.fft
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import trainers

from openpi.shared import fileio as _fileio

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "processor_config.json"
# The same variable huggingface_hub reads, so a mirror configured for it serves our downloads too.
HF_ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# Fewer learned merges than this past the alphabet leave BPE little room to compress.
_MIN_MERGES = 100


class FASTActionTokenizer:
    """Turns one action chunk `[time_horizon, action_dim]` into FAST token ids and back."""

    def __init__(
        self,
        bpe: tokenizers.Tokenizer,
        *,
        scale: float,
        min_token: int,
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ):
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        # A copy, so that fixing its decoder below never changes the caller's object.
        self._bpe = tokenizers.Tokenizer.from_str(bpe.to_str())
        if self._bpe.decoder is None:
            # Without a decoder `tokenizers` joins pieces with spaces, which would add coefficients.
            self._bpe.decoder = decoders.Fuse()
        self._scale = scale
        self._min_token = int(min_token)
        self._time_horizon = time_horizon
        self._action_dim = action_dim

    @property
    def vocab_size(self) -> int:
        """Token ids lie in `[0, vocab_size)`."""
        return self._bpe.get_vocab_size()

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def min_token(self) -> int:
        return self._min_token

    @property
    def time_horizon(self) -> int | None:
        """The chunk length `decode` assumes when not told; None when the vocabulary records none."""
        return self._time_horizon

    @property
    def action_dim(self) -> int | None:
        """The action width `decode` assumes when not told; None when the vocabulary records none."""
        return self._action_dim

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """The token ids (int32, 1-d) of one chunk `[time, action_dim]`.

        Coefficients below `min_token` are clipped to it; ones beyond the vocabulary's alphabet cannot be
        represented and are dropped by BPE, which is logged as a warning.
        """
        coefficients = _quantized_dct(_checked_chunk(actions, "actions"), self._scale)
        text = _as_text(np.maximum(coefficients - self._min_token, 0))
        ids = self._bpe.encode(text).ids
        if self._bpe.decode(ids) != text:
            logger.warning(
                "FAST: the action chunk has DCT coefficients outside the vocabulary's alphabet (largest %d, "
                "min_token %d); they were dropped, so its tokens will not decode to a chunk of the same shape",
                coefficients.max(),
                self._min_token,
            )
        return np.asarray(ids, dtype=np.int32)

    def decode(
        self, tokens: Iterable[int], *, time_horizon: int | None = None, action_dim: int | None = None
    ) -> np.ndarray:
        """The chunk (float32 `[time_horizon, action_dim]`) that `tokens` encode.

        `time_horizon` / `action_dim` default to the vocabulary's. Raises ValueError when an id is outside the
        vocabulary or the tokens do not hold exactly `time_horizon * action_dim` coefficients.
        """
        time_horizon = time_horizon or self._time_horizon
        action_dim = action_dim or self._action_dim
        if time_horizon is None or action_dim is None:
            raise ValueError(
                "time_horizon, action_dim: required, as the vocabulary records none; got "
                f"time_horizon={time_horizon}, action_dim={action_dim}"
            )
        ids = np.asarray(list(tokens), dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError(f"tokens: expected a 1-d sequence of ids, got shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"tokens: expected ids in [0, {self.vocab_size}), got values from {ids.min()} to {ids.max()}"
            )
        text = self._bpe.decode(ids.tolist())
        codes = np.fromiter(map(ord, text), dtype=np.int64, count=len(text)) + self._min_token
        if codes.size != time_horizon * action_dim:
            raise ValueError(
                f"tokens: expected {time_horizon} x {action_dim} = {time_horizon * action_dim} DCT coefficients, "
                f"got {codes.size}"
            )
        coefficients = codes.reshape(time_horizon, action_dim) / self._scale
        return scipy.fft.idct(coefficients, axis=0, norm="ortho").astype(np.float32)

    @classmethod
    def fit(
        cls, action_chunks: Iterable[np.ndarray], scale: float = 10, vocab_size: int = 1024
    ) -> "FASTActionTokenizer":
        """Learns a vocabulary of at most `vocab_size` tokens from chunks `[time, action_dim]`.

        The alphabet is every integer between the smallest and largest quantized coefficient of the data, so
        `vocab_size` must be at least that range; chunks of one shape also set `time_horizon` and `action_dim`.
        """
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        chunks = [_checked_chunk(chunk, f"action_chunks[{index}]") for index, chunk in enumerate(action_chunks)]
        if not chunks:
            raise ValueError("action_chunks: expected at least one chunk, got none")
        codes = [_quantized_dct(chunk, scale) for chunk in chunks]
        min_token = int(min(code.min() for code in codes))
        alphabet_size = int(max(code.max() for code in codes)) - min_token + 1
        if alphabet_size > vocab_size:
            raise ValueError(
                f"vocab_size: expected at least {alphabet_size}, the range of the quantized DCT coefficients at "
                f"scale {scale}, got {vocab_size}"
            )
        if alphabet_size + _MIN_MERGES > vocab_size:
            logger.warning(
                "FAST: the alphabet (%d) nearly fills vocab_size (%d), leaving few merges; consider a larger "
                "vocab_size or a smaller scale",
                alphabet_size,
                vocab_size,
            )
        # No pre-tokenizer: each chunk is one word, so merges may span the whole chunk.
        bpe = tokenizers.Tokenizer(models.BPE())
        bpe.decoder = decoders.Fuse()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[],
            initial_alphabet=[chr(code) for code in range(alphabet_size)],
            show_progress=False,
        )
        bpe.train_from_iterator((_as_text(code - min_token) for code in codes), trainer=trainer)
        shapes = {chunk.shape for chunk in chunks}
        time_horizon, action_dim = shapes.pop() if len(shapes) == 1 else (None, None)
        return cls(bpe, scale=scale, min_token=min_token, time_horizon=time_horizon, action_dim=action_dim)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes `tokenizer.json` and `processor_config.json` into `directory`, each atomically."""
        directory = pathlib.Path(directory)
        config = {
            "scale": self._scale,
            "vocab_size": self.vocab_size,
            "min_token": self._min_token,
            "time_horizon": self._time_horizon,
            "action_dim": self._action_dim,
        }
        with _fileio.atomic_write(directory / TOKENIZER_FILE, "w", encoding="utf-8") as out:
            out.write(self._bpe.to_str())
        with _fileio.atomic_write(directory / CONFIG_FILE, "w", encoding="utf-8") as out:
            json.dump(config, out, indent=2)

    @classmethod
    def load(cls, source: str | os.PathLike) -> "FASTActionTokenizer":
        """Reads a vocabulary from a local directory, a remote directory URL (gs://, s3://, https://) or a Hugging
        Face repo id such as "physical-intelligence/fast" (fetched from `$HF_ENDPOINT`, default
        https://huggingface.co); remote files go through the download cache and honour `OPENPI_OFFLINE`."""
        tokenizer_file, config_file = _vocabulary_files(source)
        try:
            bpe = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as err:
            raise ValueError(f"{tokenizer_file}: not a Hugging Face tokenizers file ({err})") from err
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{config_file}: not valid JSON ({err})") from err
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
        return cls(
            bpe,
            scale=_config_field(config, config_file, "scale", (int, float), required=True),
            min_token=_config_field(config, config_file, "min_token", int, required=True),
            time_horizon=_config_field(config, config_file, "time_horizon", int),
            action_dim=_config_field(config, config_file, "action_dim", int),
        )


def _checked_chunk(actions: np.ndarray, name: str) -> np.ndarray:
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2:
        raise ValueError(f"{name}: expected an action chunk [time, action_dim], got shape {actions.shape}")
    if not np.isfinite(actions).all():
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    return actions


def _quantized_dct(actions: np.ndarray, scale: float) -> np.ndarray:
    """The chunk's rounded, scaled DCT coefficients, flattened time-major (int64)."""
    return np.around(scipy.fft.dct(actions, axis=0, norm="ortho") * scale).astype(np.int64).reshape(-1)


def _as_text(codes: np.ndarray) -> str:
    return "".join(map(chr, codes.tolist()))


def _vocabulary_files(source: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    """Local paths of a vocabulary's two files, downloading them into the cache when `source` is remote."""
    text = os.fspath(source)
    local = pathlib.Path(text).expanduser()
    if local.is_dir():
        files = (local / TOKENIZER_FILE, local / CONFIG_FILE)
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(
                    f"fast_tokenizer_path: {local} has no {file.name}; expected a FAST vocabulary directory holding "
                    f"{TOKENIZER_FILE} and {CONFIG_FILE}"
                )
        return files
    if "://" in text:
        base, what = text.rstrip("/"), f"the directory {text}"
    elif _REPO_ID.fullmatch(text):
        endpoint = os.environ.get(HF_ENDPOINT_ENV) or DEFAULT_HF_ENDPOINT
        base, what = f"{endpoint.rstrip('/')}/{text}/resolve/main", f"the Hugging Face repo {text!r}"
    else:
        raise FileNotFoundError(
            f"fast_tokenizer_path: {text!r} is neither an existing local directory nor a Hugging Face repo id "
            "(owner/name) nor a URL"
        )
    # Imported here so that reading a local vocabulary never touches the download layer.
    from openpi.shared import download

    paths = []
    for name in (TOKENIZER_FILE, CONFIG_FILE):
        try:
            paths.append(download.maybe_download(f"{base}/{name}"))
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"fast_tokenizer_path: could not fetch {name} of {what} ({err}); pass a local directory holding "
                f"{TOKENIZER_FILE} and {CONFIG_FILE} instead"
            ) from err
    return paths[0], paths[1]


def _config_field(
    config: dict[str, Any], file: pathlib.Path, name: str, kind: type | tuple[type, ...], *, required: bool = False
) -> Any:
    value = config.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "a number" if kind == (int, float) else "an integer"
        if not required:
            expected += " or null"
        raise ValueError(f"{file}: field {name!r}: expected {expected}, got {value!r}")
    return value
