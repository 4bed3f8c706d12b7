"""Tests for the FAST action tokenizer (DCT + BPE), its loading and saving, and pi0-FAST's FASTTokenizer layout, on
vocabularies fitted here and the offline debug tokenizer."""

from collections.abc import Iterator
import contextlib
import functools
import http.server
import json
import logging
import pathlib
import threading

import numpy as np
import pytest
import scipy.fft
import sentencepiece
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from openpi.models import fast_tokenizer as _fast_tokenizer
from openpi.models import tokenizer as _tokenizer
from openpi.training import debug_data

HORIZON, DIM, SCALE = 10, 7, 10
PROMPT_FORMATS = pathlib.Path(__file__).parents[1] / "fixtures" / "prompt_formats.json"


def smooth_chunks(count: int, seed: int, horizon: int = HORIZON, dim: int = DIM) -> np.ndarray:
    """Random sinusoids within [-1, 1], `[count, horizon, dim]`."""
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.0, 1.0, size=(count, 1, dim))
    speed = rng.uniform(-0.3, 0.3, size=(count, 1, dim))
    phase = rng.uniform(0.0, 2 * np.pi, size=(count, 1, dim))
    return amplitude * np.cos(phase + speed * np.arange(horizon)[None, :, None])


def quantization_bound(horizon: int, scale: float) -> float:
    """Each DCT coefficient is off by at most 0.5 / scale after rounding; the orthonormal inverse DCT sums those
    errors with its weights, so a decoded value is off by at most 0.5 / scale times the largest row sum of |IDCT|."""
    inverse = scipy.fft.idct(np.eye(horizon), axis=0, norm="ortho")
    return 0.5 / scale * np.abs(inverse).sum(axis=1).max()


@pytest.fixture(scope="module")
def fitted() -> _fast_tokenizer.FASTActionTokenizer:
    return _fast_tokenizer.FASTActionTokenizer.fit(smooth_chunks(200, seed=0), scale=SCALE, vocab_size=256)


@pytest.fixture(scope="module")
def debug_cache(tmp_path_factory) -> Iterator[pathlib.Path]:
    """An empty `OPENPI_DATA_HOME` for the debug tokenizer files, for this module."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENPI_DATA_HOME", str(cache))
        yield cache


@pytest.fixture(scope="module")
def debug_tokenizer(debug_cache) -> _tokenizer.FASTTokenizer:
    return debug_data.make_fast_tokenizer(256, HORIZON, DIM)


@pytest.fixture(scope="module")
def debug_processor(debug_cache) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(debug_data.fast_tokenizer_path()))


def test_encode_decode_round_trips_within_the_quantization_error(fitted):
    bound = quantization_bound(HORIZON, SCALE)
    assert bound < 0.5 * np.sqrt(HORIZON) / SCALE
    for chunk in smooth_chunks(20, seed=1):
        tokens = fitted.encode(chunk)
        decoded = fitted.decode(tokens)
        assert tokens.dtype == np.int32
        assert decoded.dtype == np.float32
        assert decoded.shape == (HORIZON, DIM)
        assert np.abs(decoded - chunk).max() <= bound + 1e-6


def test_bpe_compresses_smooth_chunks(fitted):
    lengths = [len(fitted.encode(chunk)) for chunk in smooth_chunks(20, seed=1)]
    assert max(lengths) < HORIZON * DIM / 2


def test_fit_records_the_range_and_shape_of_its_data(fitted):
    codes = np.concatenate([np.around(scipy.fft.dct(c, axis=0, norm="ortho") * SCALE) for c in smooth_chunks(200, 0)])
    assert fitted.min_token == codes.min()
    assert (fitted.time_horizon, fitted.action_dim, fitted.scale) == (HORIZON, DIM, SCALE)
    assert fitted.vocab_size <= 256


def test_fit_is_deterministic(fitted, tmp_path):
    again = _fast_tokenizer.FASTActionTokenizer.fit(smooth_chunks(200, seed=0), scale=SCALE, vocab_size=256)
    fitted.save(tmp_path / "a")
    again.save(tmp_path / "b")
    for name in (_fast_tokenizer.TOKENIZER_FILE, _fast_tokenizer.CONFIG_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_fit_rejects_a_vocab_smaller_than_the_coefficient_range():
    with pytest.raises(ValueError, match="vocab_size: expected at least"):
        _fast_tokenizer.FASTActionTokenizer.fit(smooth_chunks(10, seed=0), scale=100, vocab_size=64)


@pytest.mark.parametrize(
    ("chunk", "match"),
    [(np.zeros(HORIZON), "actions: expected an action chunk"), (np.full((HORIZON, DIM), np.nan), "finite")],
)
def test_encode_rejects_bad_chunks(fitted, chunk, match):
    with pytest.raises(ValueError, match=match):
        fitted.encode(chunk)


def test_coefficients_below_the_alphabet_are_clipped(fitted):
    chunk = np.full((HORIZON, DIM), -100.0)
    decoded = fitted.decode(fitted.encode(chunk))
    expected_dc = fitted.min_token / SCALE
    np.testing.assert_allclose(decoded, expected_dc / np.sqrt(HORIZON), atol=1e-5)


def test_coefficients_beyond_the_alphabet_are_dropped_with_a_warning(fitted, caplog):
    with caplog.at_level(logging.WARNING):
        tokens = fitted.encode(np.full((HORIZON, DIM), 100.0))
    assert "outside the vocabulary's alphabet" in caplog.text
    with pytest.raises(ValueError, match="DCT coefficients"):
        fitted.decode(tokens)


def test_decode_rejects_tokens_of_the_wrong_length_or_range(fitted):
    tokens = fitted.encode(smooth_chunks(1, seed=2)[0])
    with pytest.raises(ValueError, match=r"tokens: expected 10 x 7 = 70 DCT coefficients"):
        fitted.decode(tokens[:-1])
    with pytest.raises(ValueError, match=r"tokens: expected 11 x 7"):
        fitted.decode(tokens, time_horizon=11)
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, "):
        fitted.decode([*tokens.tolist(), fitted.vocab_size])
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, "):
        fitted.decode([-1, *tokens.tolist()])


def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config == {
        "scale": SCALE,
        "vocab_size": fitted.vocab_size,
        "min_token": fitted.min_token,
        "time_horizon": HORIZON,
        "action_dim": DIM,
    }
    loaded = _fast_tokenizer.FASTActionTokenizer.load(tmp_path)
    chunk = smooth_chunks(1, seed=3)[0]
    np.testing.assert_array_equal(loaded.encode(chunk), fitted.encode(chunk))
    np.testing.assert_array_equal(loaded.decode(fitted.encode(chunk)), fitted.decode(fitted.encode(chunk)))


def test_loads_a_byte_level_vocabulary_like_the_released_one(tmp_path):
    """The released vocabulary was trained through a byte-level pre-tokenizer and records no chunk shape; its own
    pipeline must be used to encode and decode."""
    chunks = smooth_chunks(100, seed=0)
    codes = [np.around(scipy.fft.dct(c, axis=0, norm="ortho") * SCALE).astype(int).reshape(-1) for c in chunks]
    min_token = int(min(c.min() for c in codes))
    alphabet_size = int(max(c.max() for c in codes)) - min_token + 1
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=[], initial_alphabet=[chr(i) for i in range(alphabet_size)], show_progress=False
    )
    bpe.train_from_iterator(("".join(map(chr, c - min_token)) for c in codes), trainer=trainer)
    bpe.save(str(tmp_path / "tokenizer.json"))
    config = {
        "processor_class": "UniversalActionProcessor",
        "scale": SCALE,
        "vocab_size": 512,
        "min_token": min_token,
        "time_horizon": None,
        "action_dim": None,
    }
    (tmp_path / "processor_config.json").write_text(json.dumps(config))

    loaded = _fast_tokenizer.FASTActionTokenizer.load(tmp_path)
    assert loaded.time_horizon is None
    chunk = smooth_chunks(1, seed=5)[0]
    decoded = loaded.decode(loaded.encode(chunk), time_horizon=HORIZON, action_dim=DIM)
    assert np.abs(decoded - chunk).max() <= quantization_bound(HORIZON, SCALE) + 1e-6
    with pytest.raises(ValueError, match="time_horizon, action_dim: required"):
        loaded.decode(loaded.encode(chunk))


def test_load_of_a_missing_local_directory_names_it():
    with pytest.raises(FileNotFoundError, match="'/no/such/fast' is neither an existing local directory"):
        _fast_tokenizer.FASTActionTokenizer.load("/no/such/fast")


def test_load_of_an_incomplete_directory_names_the_missing_file(fitted, tmp_path):
    fitted.save(tmp_path)
    (tmp_path / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no processor_config\.json"):
        _fast_tokenizer.FASTActionTokenizer.load(tmp_path)


def test_load_rejects_a_config_with_a_bad_field(fitted, tmp_path):
    fitted.save(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps({"scale": "ten", "min_token": 0}))
    with pytest.raises(ValueError, match="field 'scale': expected a number, got 'ten'"):
        _fast_tokenizer.FASTActionTokenizer.load(tmp_path)


def test_unreachable_repo_asks_for_a_local_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match=r"Hugging Face repo 'physical-intelligence/fast'.*pass a local directory"
    ):
        _fast_tokenizer.FASTActionTokenizer.load("physical-intelligence/fast")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def serve(root: pathlib.Path) -> Iterator[str]:
    """Serves `root` over HTTP on a free loopback port; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_repo_id_is_fetched_from_the_hub_endpoint_into_the_cache(fitted, tmp_path, monkeypatch):
    fitted.save(tmp_path / "hub" / "someone" / "fast" / "resolve" / "main")
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "cache"))
    with serve(tmp_path / "hub") as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        loaded = _fast_tokenizer.FASTActionTokenizer.load("someone/fast")
        with pytest.raises(
            FileNotFoundError, match=r"could not fetch tokenizer\.json of the Hugging Face repo 'someone/gone'"
        ):
            _fast_tokenizer.FASTActionTokenizer.load("someone/gone")
    chunk = smooth_chunks(1, seed=4)[0]
    np.testing.assert_array_equal(loaded.encode(chunk), fitted.encode(chunk))
    # Once cached, the vocabulary loads with the server gone and the network forbidden.
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    again = _fast_tokenizer.FASTActionTokenizer.load("someone/fast")
    np.testing.assert_array_equal(again.encode(chunk), fitted.encode(chunk))


def test_debug_vocabulary_maps_every_action_id_between_the_characters_and_the_skipped_ids(debug_tokenizer):
    action_vocab = debug_tokenizer.action_tokenizer.vocab_size
    assert action_vocab <= debug_data.FAST_ACTION_VOCAB_SIZE
    mapped = debug_data.FAST_TOKENIZER_VOCAB_SIZE - 1 - _tokenizer.FAST_SKIP_TOKENS - np.arange(action_vocab)
    assert mapped.min() >= debug_data.TOKENIZER_VOCAB_SIZE
    assert mapped.max() < debug_data.FAST_TOKENIZER_VOCAB_SIZE - _tokenizer.FAST_SKIP_TOKENS


def test_debug_action_pieces_survive_decoding_and_encoding_again(debug_processor):
    assert debug_processor.vocab_size() == debug_data.FAST_TOKENIZER_VOCAB_SIZE
    ids = list(range(debug_data.TOKENIZER_VOCAB_SIZE, debug_data.FAST_TOKENIZER_VOCAB_SIZE))
    assert debug_processor.encode(debug_processor.decode(ids)) == ids


def test_debug_vocabulary_is_cached_and_the_same_in_every_cache(debug_tokenizer, debug_cache, tmp_path, monkeypatch):
    directory = debug_data.fast_action_tokenizer_dir(HORIZON, DIM)
    assert directory.parent == debug_cache / "debug"
    written = {path.name: path.stat().st_mtime_ns for path in directory.iterdir()}
    assert debug_data.fast_action_tokenizer_dir(HORIZON, DIM) == directory
    assert {path.name: path.stat().st_mtime_ns for path in directory.iterdir()} == written
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    fresh = debug_data.fast_action_tokenizer_dir(HORIZON, DIM)
    for name in written:
        assert (fresh / name).read_bytes() == (directory / name).read_bytes()


def test_fast_prefix_text_matches_openpi(debug_tokenizer, debug_processor):
    for row in json.loads(PROMPT_FORMATS.read_text())["rows"]:
        tokens, token_mask, ar_mask, loss_mask = debug_tokenizer.tokenize(row["prompt"], np.asarray(row["state"]))
        expected = [
            t for text, bos in row["fast_prefix_encode_calls"] for t in debug_processor.encode(text, add_bos=bos)
        ]
        assert tokens[token_mask].tolist() == expected
        assert token_mask.tolist() == [True] * len(expected) + [False] * (256 - len(expected))
        assert not ar_mask.any()
        assert not loss_mask.any()


def test_tokens_with_actions_are_prefix_then_causal_action_postfix_with_loss(debug_tokenizer, debug_processor):
    state = np.linspace(-1, 1, DIM)
    actions = smooth_chunks(1, seed=6)[0]
    prefix, prefix_mask, _, _ = debug_tokenizer.tokenize("fold the towel", state)
    tokens, token_mask, ar_mask, loss_mask = debug_tokenizer.tokenize("fold the towel", state, actions)
    num_prefix, num_valid = int(prefix_mask.sum()), int(token_mask.sum())
    assert (tokens.dtype, token_mask.dtype, ar_mask.dtype, loss_mask.dtype) == (np.int32, bool, np.int32, bool)
    assert all(array.shape == (256,) for array in (tokens, token_mask, ar_mask, loss_mask))
    np.testing.assert_array_equal(tokens[:num_prefix], prefix[:num_prefix])
    action_marker = debug_processor.encode("Action: ")
    assert tokens[num_prefix : num_prefix + len(action_marker)].tolist() == action_marker
    assert tokens[num_valid - 2 : num_valid].tolist() == [*debug_processor.encode("|"), debug_processor.eos_id()]
    fast_ids = debug_tokenizer.action_tokenizer.encode(actions)
    action_ids = debug_data.FAST_TOKENIZER_VOCAB_SIZE - 1 - _tokenizer.FAST_SKIP_TOKENS - fast_ids
    assert tokens[num_prefix + len(action_marker) : num_valid - 2].tolist() == action_ids.tolist()
    assert token_mask.tolist() == [True] * num_valid + [False] * (256 - num_valid)
    assert ar_mask.tolist() == [0] * num_prefix + [1] * (num_valid - num_prefix) + [0] * (256 - num_valid)
    assert loss_mask.tolist() == [False] * num_prefix + [True] * (num_valid - num_prefix) + [False] * (256 - num_valid)
    assert (tokens[num_valid:] == 0).all()


def test_extract_actions_recovers_the_tokenized_chunk(debug_tokenizer):
    actions = smooth_chunks(1, seed=7)[0]
    tokens, _, _, _ = debug_tokenizer.tokenize("lift cube", np.zeros(DIM), actions)
    decoded = debug_tokenizer.extract_actions(tokens, HORIZON, DIM)
    assert decoded.dtype == np.float32
    assert np.abs(decoded - actions).max() <= quantization_bound(HORIZON, SCALE) + 1e-6


def test_extract_actions_ignores_what_follows_the_end_marker(debug_tokenizer, debug_processor):
    actions = smooth_chunks(1, seed=8)[0]
    tokens, mask, _, _ = debug_tokenizer.tokenize("lift cube", np.zeros(DIM), actions)
    generated = [*tokens[mask].tolist(), *debug_processor.encode("more | text"), 700, 300]
    np.testing.assert_array_equal(
        debug_tokenizer.extract_actions(np.asarray(generated), HORIZON, DIM),
        debug_tokenizer.extract_actions(tokens, HORIZON, DIM),
    )


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        ("lift the cube", "no 'Action: ' marker"),
        ("Action: lift the cube|", "could not decode actions"),
        ("Action: |", "could not decode actions"),
        ([2, 5000, 7], "could not decode actions"),
        ([2, -3, 7], "could not decode actions"),
    ],
)
def test_extract_actions_of_garbage_gives_zeros_and_a_warning(
    debug_tokenizer, debug_processor, caplog, garbage, reason
):
    tokens = np.asarray(debug_processor.encode(garbage) if isinstance(garbage, str) else garbage)
    with caplog.at_level(logging.WARNING):
        decoded = debug_tokenizer.extract_actions(tokens, HORIZON, DIM)
    np.testing.assert_array_equal(decoded, np.zeros((HORIZON, DIM), np.float32))
    assert decoded.dtype == np.float32
    assert reason in caplog.text


def test_extract_actions_of_a_chunk_of_another_shape_gives_zeros(debug_tokenizer, caplog):
    tokens, _, _, _ = debug_tokenizer.tokenize("lift cube", np.zeros(DIM), smooth_chunks(1, seed=9)[0])
    with caplog.at_level(logging.WARNING):
        decoded = debug_tokenizer.extract_actions(tokens, HORIZON + 1, DIM)
    np.testing.assert_array_equal(decoded, np.zeros((HORIZON + 1, DIM)))
    assert "DCT coefficients" in caplog.text


def test_long_sequences_are_truncated_with_a_warning(debug_tokenizer, debug_cache, caplog):
    actions = smooth_chunks(1, seed=10)[0]
    full = debug_tokenizer.tokenize("fold the towel", np.zeros(DIM), actions)
    num_valid = int(full[1].sum())
    short = debug_data.make_fast_tokenizer(num_valid - 3, HORIZON, DIM)
    with caplog.at_level(logging.WARNING):
        truncated = short.tokenize("fold the towel", np.zeros(DIM), actions)
    assert f"Token length ({num_valid}) exceeds max length ({num_valid - 3}), truncating" in caplog.text
    for whole, cut in zip(full, truncated, strict=True):
        np.testing.assert_array_equal(cut, whole[: num_valid - 3])


def test_a_sentencepiece_model_too_small_for_the_fast_vocabulary_is_rejected(debug_cache):
    with pytest.raises(ValueError, match="path: expected a sentencepiece model with at least 128 \\+"):
        _tokenizer.FASTTokenizer(
            32, debug_data.fast_action_tokenizer_dir(HORIZON, DIM), path=debug_data.tokenizer_path()
        )
