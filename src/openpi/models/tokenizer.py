"""PaliGemma sentencepiece tokenizer that turns a language prompt into pi0's fixed-length token input."""

import logging
import pathlib

import numpy as np
import sentencepiece

PALIGEMMA_TOKENIZER_URL = "gs://big_vision/paligemma_tokenizer.model"

logger = logging.getLogger(__name__)


class PaligemmaTokenizer:
    """Tokenizes prompts as `BOS + encode(prompt) + encode("\\n")`, padded or truncated to `max_len`.

    The prompt is stripped and `_` / newlines become spaces first; the trailing newline token marks the
    start of the answer, as in PaliGemma. The sentencepiece model is downloaded from
    `gs://big_vision/paligemma_tokenizer.model` into the cache (`OPENPI_DATA_HOME`), or read from `path`.
    """

    def __init__(self, max_len: int = 48, *, path: str | pathlib.Path | None = None):
        if max_len < 1:
            raise ValueError(f"max_len: expected a positive token count, got {max_len}")
        self._max_len = max_len
        if path is None:
            # Imported here so that reading a local model never touches the download layer.
            from openpi.shared import download

            path = download.maybe_download(PALIGEMMA_TOKENIZER_URL, gs={"token": "anon"})
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=pathlib.Path(path).read_bytes())

    @property
    def max_len(self) -> int:
        return self._max_len

    def model_proto(self) -> bytes:
        """The serialized sentencepiece model, e.g. to ship it inside an exported policy."""
        return self._processor.serialized_model_proto()

    def tokenize(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns `(tokens int32 [max_len], mask bool [max_len])`; padding is token 0 with mask False."""
        cleaned = prompt.strip().replace("_", " ").replace("\n", " ")
        tokens = self._processor.encode(cleaned, add_bos=True) + self._processor.encode("\n")
        if len(tokens) > self._max_len:
            logger.warning(
                "Token length (%d) exceeds max length (%d), truncating. Consider increasing `max_token_len` "
                "in the model config if this happens often.",
                len(tokens),
                self._max_len,
            )
            tokens = tokens[: self._max_len]
        num_valid = len(tokens)
        padded = np.zeros(self._max_len, dtype=np.int32)
        padded[:num_valid] = tokens
        mask = np.arange(self._max_len) < num_valid
        return padded, mask
