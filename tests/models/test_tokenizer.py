"""Tests for PaligemmaTokenizer's pi0 and pi0.5 token layouts and TokenizePrompt, with a tiny sentencepiece model
trained here and the debug character model."""

import json
import logging
import pathlib

import numpy as np
import pytest
import sentencepiece

from openpi import transforms
from openpi.models import tokenizer as _tokenizer
from openpi.training import debug_data

CORPUS = [
    "pick up the red cube",
    "put the cube in the bowl",
    "fold the towel",
    "open the drawer and close the drawer",
    "transfer the cube to the other arm",
]
# PaliGemma's special ids: pad 0, eos 1, bos 2.
BOS, NEWLINE = 2, 4
PROMPT_FORMATS = pathlib.Path(__file__).parents[1] / "fixtures" / "prompt_formats.json"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> pathlib.Path:
    """A tiny BPE model shaped like PaliGemma's: BOS id 2, a "\\n" piece, no normalization or dummy prefix."""
    prefix = tmp_path_factory.mktemp("spm") / "tiny"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_prefix=str(prefix),
        vocab_size=60,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        user_defined_symbols=["\n"],
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


@pytest.fixture(scope="module")
def processor(model_path) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(model_path))


def test_tiny_model_has_the_paligemma_special_ids(processor):
    assert processor.bos_id() == BOS
    assert processor.encode("\n") == [NEWLINE]


def test_tokens_are_bos_prompt_newline_then_zero_padding(model_path, processor):
    tokens, mask = _tokenizer.PaligemmaTokenizer(16, path=model_path).tokenize("pick up the cube")
    body = processor.encode("pick up the cube")
    expected = [BOS, *body, NEWLINE]
    assert tokens.dtype == np.int32
    assert mask.dtype == bool
    assert tokens.shape == mask.shape == (16,)
    assert tokens[: len(expected)].tolist() == expected
    assert (tokens[len(expected) :] == 0).all()
    assert mask.tolist() == [True] * len(expected) + [False] * (16 - len(expected))


def test_prompt_is_stripped_and_underscores_and_newlines_become_spaces(model_path):
    tokenizer = _tokenizer.PaligemmaTokenizer(16, path=model_path)
    messy, _ = tokenizer.tokenize("  pick_up\nthe cube \n")
    clean, _ = tokenizer.tokenize("pick up the cube")
    np.testing.assert_array_equal(messy, clean)


def test_long_prompt_is_truncated_with_a_warning(model_path, caplog):
    prompt = "transfer the cube to the other arm and fold the towel"
    full, _ = _tokenizer.PaligemmaTokenizer(64, path=model_path).tokenize(prompt)
    num_tokens = int((full != 0).sum())
    assert num_tokens > 6
    with caplog.at_level(logging.WARNING):
        tokens, mask = _tokenizer.PaligemmaTokenizer(6, path=model_path).tokenize(prompt)
    assert f"Token length ({num_tokens}) exceeds max length (6), truncating" in caplog.text
    np.testing.assert_array_equal(tokens, full[:6])
    assert mask.all()


def test_prompt_that_fills_max_len_exactly_is_not_truncated(model_path, caplog):
    full, mask = _tokenizer.PaligemmaTokenizer(64, path=model_path).tokenize("fold the towel")
    num_tokens = int(mask.sum())
    with caplog.at_level(logging.WARNING):
        tokens, mask = _tokenizer.PaligemmaTokenizer(num_tokens, path=model_path).tokenize("fold the towel")
    assert caplog.text == ""
    np.testing.assert_array_equal(tokens, full[:num_tokens])
    assert tokens[-1] == NEWLINE
    assert mask.all()


def test_max_len_must_be_positive(model_path):
    with pytest.raises(ValueError, match="max_len"):
        _tokenizer.PaligemmaTokenizer(0, path=model_path)


def test_without_path_the_model_is_fetched_through_the_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    # Offline with an empty cache, the download layer refuses, naming the tokenizer's URL.
    with pytest.raises(FileNotFoundError, match=r"gs://big_vision/paligemma_tokenizer\.model"):
        _tokenizer.PaligemmaTokenizer()


@pytest.mark.parametrize("prompt", ["fold the towel", np.asarray("fold the towel"), b"fold the towel"])
def test_tokenize_prompt_replaces_prompt_by_tokens_and_mask(model_path, prompt):
    tokenizer = _tokenizer.PaligemmaTokenizer(12, path=model_path)
    out = transforms.TokenizePrompt(tokenizer)({"prompt": prompt, "state": np.zeros(3)})
    expected_tokens, expected_mask = tokenizer.tokenize("fold the towel")
    assert set(out) == {"state", "tokenized_prompt", "tokenized_prompt_mask"}
    np.testing.assert_array_equal(out["tokenized_prompt"], expected_tokens)
    np.testing.assert_array_equal(out["tokenized_prompt_mask"], expected_mask)


def test_tokenize_prompt_reads_the_injected_default_prompt_and_refuses_a_sample_without_one(model_path):
    tokenizer = _tokenizer.PaligemmaTokenizer(12, path=model_path)
    chain = transforms.compose(
        [transforms.InjectDefaultPrompt("open the drawer"), transforms.TokenizePrompt(tokenizer)]
    )
    np.testing.assert_array_equal(chain({})["tokenized_prompt"], tokenizer.tokenize("open the drawer")[0])
    with pytest.raises(ValueError, match="prompt: required"):
        transforms.TokenizePrompt(tokenizer)({"state": np.zeros(3)})
    with pytest.raises(TypeError, match="prompt: expected a string, got int"):
        transforms.TokenizePrompt(tokenizer)({"prompt": 3})


def test_model_proto_round_trips_the_sentencepiece_model(model_path, tmp_path):
    original = _tokenizer.PaligemmaTokenizer(16, path=model_path)
    copy_path = tmp_path / "copy.model"
    copy_path.write_bytes(original.model_proto())
    copy = _tokenizer.PaligemmaTokenizer(16, path=copy_path)
    np.testing.assert_array_equal(copy.tokenize("fold the towel")[0], original.tokenize("fold the towel")[0])


@pytest.fixture(scope="module")
def char_model_path(tmp_path_factory) -> pathlib.Path:
    """The debug character model: one token per character, so equal tokens mean equal encoded strings."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENPI_DATA_HOME", str(tmp_path_factory.mktemp("cache")))
        return debug_data.tokenizer_path()


@pytest.mark.parametrize("row", json.loads(PROMPT_FORMATS.read_text())["rows"], ids=lambda row: repr(row["prompt"]))
def test_pi0_and_pi05_encode_the_same_strings_as_openpi(char_model_path, row):
    processor = sentencepiece.SentencePieceProcessor(model_file=str(char_model_path))
    tokenizer = _tokenizer.PaligemmaTokenizer(200, path=char_model_path)
    for state, calls in ((None, row["pi0_encode_calls"]), (np.asarray(row["state"]), row["pi05_encode_calls"])):
        tokens, mask = tokenizer.tokenize(row["prompt"], state)
        expected = [token for text, bos in calls for token in processor.encode(text, add_bos=bos)]
        assert tokens[mask].tolist() == expected
        assert mask.tolist() == [True] * len(expected) + [False] * (200 - len(expected))


def test_state_values_fall_into_256_bins_over_minus_one_to_one():
    state = np.asarray([-1.5, -1.0, -1.0 + 2 / 256, -0.001, 0.0, 0.999, 1.0, 1.5])
    assert _tokenizer.discretize_state(state).tolist() == [-1, 0, 1, 127, 128, 255, 255, 255]


def test_state_must_be_one_dimensional():
    with pytest.raises(ValueError, match=r"state: expected a 1-d array, got shape \(2, 3\)"):
        _tokenizer.discretize_state(np.zeros((2, 3)))


def test_pi05_prompt_is_truncated_with_a_warning(char_model_path, caplog):
    full, _ = _tokenizer.PaligemmaTokenizer(200, path=char_model_path).tokenize("fold", np.zeros(2))
    with caplog.at_level(logging.WARNING):
        tokens, mask = _tokenizer.PaligemmaTokenizer(10, path=char_model_path).tokenize("fold", np.zeros(2))
    assert "exceeds max length (10), truncating" in caplog.text
    np.testing.assert_array_equal(tokens, full[:10])
    assert mask.all()
