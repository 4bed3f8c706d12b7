"""PaliGemma sentencepiece tokenizers that turn a prompt (and, for pi0.5 / pi0-FAST, the state and actions) into the
model's fixed-length token input."""

from collections.abc import Iterator
import contextlib
import contextvars
import functools
import logging
import os
import pathlib

import numpy as np
import sentencepiece

from openpi.models import fast_tokenizer as _fast_tokenizer

PALIGEMMA_TOKENIZER_URL = "gs://big_vision/paligemma_tokenizer.model"
# pi0.5 and pi0-FAST write each state value as one of this many bins over [-1, 1].
STATE_BINS = 256
# FAST token t becomes PaliGemma id `vocab_size - 1 - FAST_SKIP_TOKENS - t`: the last ids are left to special tokens.
FAST_SKIP_TOKENS = 128

logger = logging.getLogger(__name__)

_DEFER_LOADING = contextvars.ContextVar("openpi_tokenizer_defer_loading", default=False)


@contextlib.contextmanager
def deferred_loading() -> Iterator[None]:
    """Tokenizers built inside this block read (and download) their models on first use instead of when built, so
    that code which builds a data pipeline without tokenizing (norm stats need no prompts) needs no tokenizer."""
    token = _DEFER_LOADING.set(True)
    try:
        yield
    finally:
        _DEFER_LOADING.reset(token)


def discretize_state(state: np.ndarray) -> np.ndarray:
    """The bin (int, `[state_dim]`) of each value of a normalized 1-d state: 256 equal bins over [-1, 1], with
    values below -1 giving -1 and values above 1 giving 255."""
    state = np.asarray(state)
    if state.ndim != 1:
        raise ValueError(f"state: expected a 1-d array, got shape {state.shape}")
    return np.digitize(state, bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1


def _state_text(state: np.ndarray) -> str:
    return " ".join(str(value) for value in discretize_state(state).tolist())


class PaligemmaTokenizer:
    """Tokenizes prompts for pi0 (`BOS + encode(prompt) + encode("\\n")`) or, given a state, for pi0.5
    (`BOS + encode("Task: <prompt>, State: <bins>;\\nAction: ")`), padded or truncated to `max_len`.

    The prompt is stripped and `_` / newlines become spaces first; the trailing newline token marks the
    start of the answer, as in PaliGemma. The sentencepiece model is downloaded from
    `gs://big_vision/paligemma_tokenizer.model` into the cache (`OPENPI_DATA_HOME`), or read from `path`, when the
    tokenizer is built (inside `deferred_loading()`: when first used).
    """

    def __init__(self, max_len: int = 48, *, path: str | pathlib.Path | None = None):
        self._max_len = _checked_max_len(max_len)
        self._path = path
        if not _DEFER_LOADING.get():
            _ = self._processor

    @functools.cached_property
    def _processor(self) -> sentencepiece.SentencePieceProcessor:
        return _load_sentencepiece(self._path)

    @property
    def max_len(self) -> int:
        return self._max_len

    def model_proto(self) -> bytes:
        """The serialized sentencepiece model, e.g. to ship it inside an exported policy."""
        return self._processor.serialized_model_proto()

    def tokenize(self, prompt: str, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Returns `(tokens int32 [max_len], mask bool [max_len])`; padding is token 0 with mask False.

        `state` (1-d, normalized) selects the pi0.5 layout, which shows the discretized state to the model.
        """
        cleaned = prompt.strip().replace("_", " ").replace("\n", " ")
        if state is None:
            tokens = self._processor.encode(cleaned, add_bos=True) + self._processor.encode("\n")
        else:
            text = f"Task: {cleaned}, State: {_state_text(state)};\nAction: "
            tokens = self._processor.encode(text, add_bos=True)
        num_valid = _num_kept(len(tokens), self._max_len)
        return _padded(tokens, self._max_len, np.int32), _padded([True] * num_valid, self._max_len, bool)


class FASTTokenizer:
    """Tokenizes pi0-FAST inputs: the prefix `BOS + encode("Task: <prompt>, State: <bins>;\\n")` and, when training,
    the postfix `encode("Action: ") + <FAST action tokens> + encode("|") + EOS`; and reads actions back from the
    tokens the model generates.

    Each FAST token t is written as the PaliGemma id `vocab_size - 1 - FAST_SKIP_TOKENS - t`. The FAST vocabulary is
    read by `FASTActionTokenizer.load` from `fast_tokenizer_path` (a local directory or a Hugging Face repo id), the
    sentencepiece model as in `PaligemmaTokenizer`; both when the tokenizer is built (inside `deferred_loading()`:
    when first used).
    """

    def __init__(
        self,
        max_len: int = 256,
        fast_tokenizer_path: str | os.PathLike = "physical-intelligence/fast",
        *,
        path: str | pathlib.Path | None = None,
    ):
        self._max_len = _checked_max_len(max_len)
        self._path = path
        self._fast_tokenizer_path = fast_tokenizer_path
        if not _DEFER_LOADING.get():
            _ = self._models

    @functools.cached_property
    def _models(self) -> tuple[sentencepiece.SentencePieceProcessor, _fast_tokenizer.FASTActionTokenizer]:
        processor = _load_sentencepiece(self._path)
        action_tokenizer = _fast_tokenizer.FASTActionTokenizer.load(self._fast_tokenizer_path)
        if processor.vocab_size() - FAST_SKIP_TOKENS - action_tokenizer.vocab_size < 0:
            raise ValueError(
                f"path: expected a sentencepiece model with at least {FAST_SKIP_TOKENS} + "
                f"{action_tokenizer.vocab_size} pieces (skipped ids + FAST vocabulary), got {processor.vocab_size()}"
            )
        return processor, action_tokenizer

    @property
    def _processor(self) -> sentencepiece.SentencePieceProcessor:
        return self._models[0]

    @property
    def _action_tokenizer(self) -> _fast_tokenizer.FASTActionTokenizer:
        return self._models[1]

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def action_tokenizer(self) -> _fast_tokenizer.FASTActionTokenizer:
        return self._action_tokenizer

    def model_proto(self) -> bytes:
        """The serialized sentencepiece model, e.g. to ship it inside an exported policy."""
        return self._processor.serialized_model_proto()

    def tokenize(
        self, prompt: str, state: np.ndarray, actions: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Returns `(tokens int32, token_mask bool, ar_mask int32, loss_mask bool)`, each `[max_len]`.

        The prefix attends bidirectionally (ar_mask 0) and carries no loss; the postfix, present when `actions`
        (`[action_horizon, action_dim]`, normalized) is given, is causal (ar_mask 1) and is what the loss trains.
        """
        cleaned = prompt.lower().strip().replace("_", " ")
        prefix = self._processor.encode(f"Task: {cleaned}, State: {_state_text(state)};\n", add_bos=True)
        if actions is None:
            postfix = []
        else:
            action_ids = self._swap_action_ids(self._action_tokenizer.encode(actions))
            postfix = (
                self._processor.encode("Action: ") + action_ids.tolist() + self._processor.encode("|", add_eos=True)
            )
        num_valid = _num_kept(len(prefix) + len(postfix), self._max_len)
        return (
            _padded(prefix + postfix, self._max_len, np.int32),
            _padded([True] * num_valid, self._max_len, bool),
            _padded([0] * len(prefix) + [1] * len(postfix), self._max_len, np.int32),
            _padded([False] * len(prefix) + [True] * len(postfix), self._max_len, bool),
        )

    def extract_actions(self, tokens: np.ndarray, action_horizon: int, action_dim: int) -> np.ndarray:
        """The action chunk (float32 `[action_horizon, action_dim]`) written after "Action: " in `tokens`, up to
        "|". Tokens that hold no valid chunk give zeros and a logged warning, never an exception, so that one bad
        generation cannot stop a robot's control loop."""
        try:
            text = self._processor.decode(np.asarray(tokens).astype(np.int64).reshape(-1).tolist())
            if "Action: " not in text:
                logger.warning("FAST: the generated tokens hold no 'Action: ' marker; returning zero actions")
                return np.zeros((action_horizon, action_dim), dtype=np.float32)
            action_text = text.split("Action: ", 1)[1].split("|", 1)[0].strip()
            action_ids = self._swap_action_ids(np.asarray(self._processor.encode(action_text), dtype=np.int64))
            return self._action_tokenizer.decode(action_ids, time_horizon=action_horizon, action_dim=action_dim)
        except Exception as err:
            logger.warning("FAST: could not decode actions from the generated tokens (%s); returning zero actions", err)
            return np.zeros((action_horizon, action_dim), dtype=np.float32)

    def _swap_action_ids(self, ids: np.ndarray) -> np.ndarray:
        """FAST ids to PaliGemma ids and back: the map is its own inverse."""
        return self._processor.vocab_size() - 1 - FAST_SKIP_TOKENS - ids


def _checked_max_len(max_len: int) -> int:
    if max_len < 1:
        raise ValueError(f"max_len: expected a positive token count, got {max_len}")
    return max_len


def _load_sentencepiece(path: str | pathlib.Path | None) -> sentencepiece.SentencePieceProcessor:
    if path is None:
        # Imported here so that reading a local model never touches the download layer.
        from openpi.shared import download

        path = download.maybe_download(PALIGEMMA_TOKENIZER_URL, gs={"token": "anon"})
    return sentencepiece.SentencePieceProcessor(model_proto=pathlib.Path(path).read_bytes())


def _num_kept(num_tokens: int, max_len: int) -> int:
    """How many of `num_tokens` fit in `max_len`, warning when some must be cut."""
    if num_tokens > max_len:
        logger.warning(
            "Token length (%d) exceeds max length (%d), truncating. Consider increasing `max_token_len` "
            "in the model config if this happens often.",
            num_tokens,
            max_len,
        )
    return min(num_tokens, max_len)


def _padded(values: list, max_len: int, dtype: type) -> np.ndarray:
    """`values` cut or zero-padded to `max_len`."""
    out = np.zeros(max_len, dtype=dtype)
    kept = values[:max_len]
    out[: len(kept)] = kept
    return out
