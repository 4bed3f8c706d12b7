"""Tests for the data transforms: repacking, normalization (against openpi reference arrays), images, actions,
prompt tokenization for pi0.5 and pi0-FAST (with the offline debug tokenizers)."""

import logging
import pathlib

import numpy as np
import pytest

from openpi import transforms
from openpi.models import tokenizer as _tokenizer
from openpi.shared import normalize
from openpi.training import debug_data

REFERENCE = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def reference_stats() -> dict[str, normalize.NormStats]:
    return normalize.deserialize_json((REFERENCE / "norm_stats_example.json").read_text())


@pytest.fixture(scope="module")
def reference_arrays() -> dict[str, np.ndarray]:
    with np.load(REFERENCE / "norm_stats_example_input.npz") as data:
        return dict(data)


@pytest.mark.parametrize(("use_quantiles", "mode"), [(False, "zscore"), (True, "quantile")])
def test_normalize_then_unnormalize_reproduce_openpi_reference(reference_stats, reference_arrays, use_quantiles, mode):
    rows = {key: reference_arrays[key][:8] for key in ("state", "actions")}
    normalized = transforms.Normalize(reference_stats, use_quantiles=use_quantiles)(rows)
    for key in rows:
        expected = reference_arrays[f"expected/normalize_{mode}/{key}"]
        assert normalized[key].dtype == np.float64
        np.testing.assert_array_equal(normalized[key], expected)

    padded = {key: transforms.pad_to_dim(value, 32) for key, value in normalized.items()}
    restored = transforms.Unnormalize(reference_stats, use_quantiles=use_quantiles)(padded)
    for key in rows:
        np.testing.assert_array_equal(restored[key], reference_arrays[f"expected/unnormalize_{mode}_padded32/{key}"])
        np.testing.assert_allclose(restored[key][:, :14], rows[key], atol=1e-5)


def test_zscore_uses_std_plus_epsilon():
    stats = {"state": normalize.NormStats(mean=np.array([1.0, -2.0]), std=np.array([2.0, 0.0]))}
    out = transforms.Normalize(stats)({"state": np.array([5.0, -2.0])})
    np.testing.assert_allclose(out["state"], [4.0 / (2.0 + 1e-6), 0.0])


def test_quantile_normalization_maps_q01_q99_to_minus_one_one_without_clipping():
    stats = {"actions": normalize.NormStats(mean=np.zeros(1), std=np.ones(1), q01=np.array([2.0]), q99=np.array([4.0]))}
    out = transforms.Normalize(stats, use_quantiles=True)({"actions": np.array([[2.0], [4.0], [6.0]])})
    np.testing.assert_allclose(out["actions"][:, 0], [-1.0, 1.0, 3.0], atol=1e-5)


def test_normalize_passes_through_keys_without_stats_and_keeps_structure():
    stats = {"observation/state": normalize.NormStats(mean=np.array([1.0]), std=np.array([1.0]))}
    data = {"observation": {"state": np.array([3.0]), "other": np.array([3.0])}, "prompt": "hi"}
    out = transforms.Normalize(stats)(data)
    assert out["prompt"] == "hi"
    np.testing.assert_array_equal(out["observation"]["other"], [3.0])
    np.testing.assert_allclose(out["observation"]["state"], [2.0 / (1 + 1e-6)])
    np.testing.assert_array_equal(data["observation"]["state"], [3.0])  # input untouched


def test_missing_stats_key_is_an_error_only_when_strict():
    stats = {"state": normalize.NormStats(mean=np.zeros(1), std=np.ones(1))}
    assert transforms.Normalize(stats)({"actions": np.ones(1)}) == {"actions": np.ones(1)}
    with pytest.raises(KeyError, match="state: have norm stats but are missing"):
        transforms.Normalize(stats, strict=True)({"actions": np.ones(1)})
    with pytest.raises(KeyError, match="state"):
        transforms.Unnormalize(stats)({"actions": np.ones(1)})


def test_quantile_mode_requires_quantiles():
    stats = {"state": normalize.NormStats(mean=np.zeros(1), std=np.ones(1))}
    with pytest.raises(ValueError, match="norm_stats/state: quantile normalization needs q01 and q99"):
        transforms.Normalize(stats, use_quantiles=True)
    with pytest.raises(ValueError, match="norm_stats/state"):
        transforms.Unnormalize(stats, use_quantiles=True)


@pytest.mark.parametrize("use_quantiles", [False, True])
def test_normalize_inverts_unnormalize_when_data_is_wider_than_stats(reference_stats, use_quantiles):
    stats = {"actions": reference_stats["actions"]}
    padded = {"actions": np.random.default_rng(0).normal(size=(5, 32))}
    restored = transforms.Unnormalize(stats, use_quantiles=use_quantiles)(padded)
    again = transforms.Normalize(stats, use_quantiles=use_quantiles)(restored)
    np.testing.assert_allclose(again["actions"], padded["actions"], atol=1e-9)


def test_none_norm_stats_is_a_no_op():
    data = {"state": np.ones(3)}
    assert transforms.Normalize(None)(data) is data
    assert transforms.Unnormalize(None)(data) is data


def test_group_push_appends_inputs_and_prepends_outputs():
    group = transforms.Group(inputs=("a",), outputs=("z",)).push(inputs=("b",), outputs=("y",))
    assert group.inputs == ("a", "b")
    assert group.outputs == ("y", "z")


def test_composite_transform_applies_in_order():
    chain = transforms.compose([transforms.InjectDefaultPrompt("first"), transforms.InjectDefaultPrompt("second")])
    assert chain({})["prompt"] == "first"
    assert isinstance(chain, transforms.DataTransformFn)


def test_repack_selects_leaves_and_subtrees_by_path():
    data = {
        "observation/state": np.array([1.0]),  # a flat key containing "/"
        "observation.images.top": "top",
        "images": {"left": "L", "right": "R"},
        "action": np.array([2.0]),
        "unused": 0,
    }
    repack = transforms.RepackTransform(
        {"images": {"cam_high": "observation.images.top"}, "wrists": "images", "state": "observation/state"}
    )
    out = repack(data)
    assert out == {
        "images": {"cam_high": "top"},
        "wrists": {"left": "L", "right": "R"},
        "state": data["observation/state"],
    }


def test_repack_names_the_missing_source_key():
    with pytest.raises(KeyError, match=r"images/cam_high: source key 'observation.top' not found"):
        transforms.RepackTransform({"images": {"cam_high": "observation.top"}})({"action": 1})


def test_inject_default_prompt_keeps_an_existing_prompt():
    inject = transforms.InjectDefaultPrompt("default")
    assert inject({"prompt": "mine"})["prompt"] == "mine"
    assert inject({})["prompt"] == "default"
    assert transforms.InjectDefaultPrompt(None)({}) == {}


def test_prompt_from_lerobot_task_looks_up_task_index():
    transform = transforms.PromptFromLeRobotTask({0: "fold the towel", 3: "open the drawer"})
    assert transform({"task_index": np.int64(3)})["prompt"] == "open the drawer"
    with pytest.raises(ValueError, match="task_index: 1 not in the task table"):
        transform({"task_index": 1})


def test_resize_images_pads_to_keep_aspect_ratio():
    image = np.full((100, 200, 3), 200, dtype=np.uint8)
    out = transforms.ResizeImages(224, 224)({"image": {"base_0_rgb": image}, "state": 1})
    resized = out["image"]["base_0_rgb"]
    assert resized.shape == (224, 224, 3)
    # 200x100 scales to 224x112, centred: rows 56..167 hold the image, the rest is black padding.
    assert (resized[:56] == 0).all()
    assert (resized[168:] == 0).all()
    assert (resized[56:168] == 200).all()
    assert out["state"] == 1


def test_delta_and_absolute_actions_shift_masked_dims_by_state():
    mask = transforms.make_bool_mask(2, -1)
    data = {
        "state": np.array([1.0, 2.0, 3.0, 4.0]),
        "actions": np.array([[10.0, 10.0, 10.0, 10.0], [5.0, 6.0, 7.0, 8.0]]),
    }
    delta = transforms.DeltaActions(mask)(data)
    np.testing.assert_array_equal(delta["actions"], [[9.0, 8.0, 10.0, 10.0], [4.0, 4.0, 7.0, 8.0]])
    np.testing.assert_array_equal(data["actions"][0], [10.0, 10.0, 10.0, 10.0])  # input untouched
    restored = transforms.AbsoluteActions(mask)(delta)
    np.testing.assert_array_equal(restored["actions"], data["actions"])


def test_delta_actions_is_a_no_op_without_mask_or_actions():
    data = {"state": np.ones(2), "actions": np.ones((3, 2))}
    assert transforms.DeltaActions(None)(data) is data
    no_actions = {"state": np.ones(2)}
    assert transforms.AbsoluteActions((True,))(no_actions) is no_actions


def test_delta_actions_reject_a_mask_wider_than_the_data():
    with pytest.raises(ValueError, match="delta mask covers 3 dims"):
        transforms.DeltaActions((True, True, True))({"state": np.ones(2), "actions": np.ones((1, 2))})


def test_pad_states_and_actions_zero_pads_to_model_dim():
    out = transforms.PadStatesAndActions(4)({"state": np.array([1.0, 2.0]), "actions": np.ones((2, 3))})
    np.testing.assert_array_equal(out["state"], [1.0, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["actions"], [[1.0, 1.0, 1.0, 0.0]] * 2)


def test_subsample_actions_keeps_every_stride_th_action():
    out = transforms.SubsampleActions(2)({"actions": np.arange(5)})
    np.testing.assert_array_equal(out["actions"], [0, 2, 4])


def test_pad_to_dim():
    np.testing.assert_array_equal(transforms.pad_to_dim(np.array([1, 2]), 4), [1, 2, 0, 0])
    np.testing.assert_array_equal(
        transforms.pad_to_dim(np.ones((1, 2)), 3, axis=0, value=7.0), [[1, 1], [7, 7], [7, 7]]
    )
    longer = np.arange(5)
    assert transforms.pad_to_dim(longer, 3) is longer


def test_make_bool_mask():
    assert transforms.make_bool_mask(2, -2, 2) == (True, True, False, False, True, True)
    assert transforms.make_bool_mask(2, 0, 2) == (True, True, True, True)
    assert transforms.make_bool_mask(6, -1, 6, -1) == (True,) * 6 + (False,) + (True,) * 6 + (False,)


def test_flatten_and_unflatten_are_inverses():
    tree = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    flat = transforms.flatten_dict(tree)
    assert flat == {"a/b": 1, "a/c/d": 2, "e": 3}
    assert transforms.unflatten_dict(flat) == tree
    with pytest.raises(ValueError, match="a/b"):
        transforms.unflatten_dict({"a": 1, "a/b": 2})


def test_to_hwc_uint8_converts_chw_float_images():
    chw = np.zeros((3, 2, 4), dtype=np.float32)
    chw[0] = 1.0
    chw[2] = 0.5
    hwc = transforms.to_hwc_uint8(chw)
    assert hwc.shape == (2, 4, 3)
    assert hwc.dtype == np.uint8
    np.testing.assert_array_equal(hwc[0, 0], [255, 0, 127])
    uint8_hwc = np.ones((5, 6, 3), dtype=np.uint8)
    assert transforms.to_hwc_uint8(uint8_hwc) is uint8_hwc
    with pytest.raises(ValueError, match=r"images/cam: expected an RGB image .* got shape \(5, 6\)"):
        transforms.to_hwc_uint8(np.zeros((5, 6), np.uint8), name="images/cam")


@pytest.fixture(scope="module")
def debug_tokenizers(tmp_path_factory) -> tuple[_tokenizer.PaligemmaTokenizer, _tokenizer.FASTTokenizer]:
    """The debug prompt tokenizer (48 tokens) and a debug FAST tokenizer for chunks [4, 3] (64 tokens)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path_factory.mktemp("openpi_data")))
        return debug_data.make_tokenizer(48), debug_data.make_fast_tokenizer(64, action_horizon=4, action_dim=3)


def test_tokenize_prompt_writes_the_state_into_the_prompt_only_with_discrete_state_input(debug_tokenizers):
    tokenizer, _ = debug_tokenizers
    state = np.array([-1.0, 0.0, 0.5])
    sample = {"prompt": "lift cube", "state": state}
    with_state = transforms.TokenizePrompt(tokenizer, discrete_state_input=True)(sample)
    without = transforms.TokenizePrompt(tokenizer)(sample)
    np.testing.assert_array_equal(with_state["tokenized_prompt"], tokenizer.tokenize("lift cube", state)[0])
    np.testing.assert_array_equal(without["tokenized_prompt"], tokenizer.tokenize("lift cube")[0])
    assert with_state["tokenized_prompt_mask"].sum() > without["tokenized_prompt_mask"].sum()
    # The state stays in the sample for the model (and for PadStatesAndActions after it).
    assert with_state["state"] is state
    with pytest.raises(KeyError, match="state: required by TokenizePrompt"):
        transforms.TokenizePrompt(tokenizer, discrete_state_input=True)({"prompt": "lift cube"})


def test_tokenize_prompt_default_prompt_fills_only_a_missing_prompt_as_the_readme_guide_passes_it(debug_tokenizers):
    tokenizer, _ = debug_tokenizers
    tokenize = transforms.TokenizePrompt(tokenizer, default_prompt="be a good robot")
    filled = tokenize({"state": np.zeros(3)})
    kept = tokenize({"prompt": "lift cube", "state": np.zeros(3)})
    np.testing.assert_array_equal(filled["tokenized_prompt"], tokenizer.tokenize("be a good robot")[0])
    np.testing.assert_array_equal(kept["tokenized_prompt"], tokenizer.tokenize("lift cube")[0])
    with pytest.raises(ValueError, match="prompt: required"):
        transforms.TokenizePrompt(tokenizer)({"state": np.zeros(3)})


def test_fast_tokens_of_a_chunk_extract_back_to_the_chunk(debug_tokenizers):
    _, tokenizer = debug_tokenizers
    steps = np.arange(4)[:, None]
    actions = np.cos(0.3 * steps + np.array([0.0, 1.0, 2.0])) * np.array([0.5, 1.0, 1.5])
    sample = {"prompt": np.asarray("lift cube"), "state": np.array([0.1, -0.2, 0.3]), "actions": actions}
    tokens = transforms.TokenizeFASTInputs(tokenizer)(sample)
    assert "prompt" not in tokens
    assert tokens["actions"] is actions
    assert tokens["tokenized_prompt"].dtype == np.int32
    assert tokens["token_ar_mask"].dtype == np.int32
    # Prefix: bidirectional, no loss; postfix ("Action: ", the action tokens, "|", EOS): causal, trained.
    postfix = tokens["token_ar_mask"] == 1
    np.testing.assert_array_equal(tokens["token_loss_mask"], postfix)
    assert postfix.any()
    assert not postfix[: np.argmax(postfix)].any()
    assert not (postfix & ~tokens["tokenized_prompt_mask"]).any()
    # The model would generate the postfix; its ids come out of sample_actions as floats.
    generated = tokens["tokenized_prompt"][postfix].astype(np.float32)
    extracted = transforms.ExtractFASTActions(tokenizer, action_horizon=4, action_dim=3)(
        {"actions": generated, "state": sample["state"]}
    )
    assert extracted["actions"].shape == (4, 3)
    # DCT coefficients are rounded to multiples of 1 / scale (0.1): the orthonormal inverse keeps that error small.
    np.testing.assert_allclose(extracted["actions"], actions, atol=0.1)
    np.testing.assert_array_equal(extracted["state"], sample["state"])


def test_fast_inference_inputs_have_no_trained_tokens_and_bad_generations_give_zeros(debug_tokenizers, caplog):
    _, tokenizer = debug_tokenizers
    tokens = transforms.TokenizeFASTInputs(tokenizer)({"prompt": "lift cube", "state": np.zeros(3)})
    assert not tokens["token_loss_mask"].any()
    assert not tokens["token_ar_mask"].any()
    with pytest.raises(ValueError, match="prompt: required"):
        transforms.TokenizeFASTInputs(tokenizer)({"state": np.zeros(3)})
    extract = transforms.ExtractFASTActions(tokenizer, action_horizon=4, action_dim=3)
    with caplog.at_level(logging.WARNING):
        zeros = extract({"actions": np.zeros(16, np.float32)})["actions"]
    np.testing.assert_array_equal(zeros, np.zeros((4, 3)))
    assert "zero actions" in caplog.text
    no_actions = {"state": np.zeros(3)}
    assert extract(no_actions) is no_actions
    with pytest.raises(ValueError, match=r"actions: expected the 1-d token ids of one sample, got shape \(2, 8\)"):
        extract({"actions": np.zeros((2, 8))})
