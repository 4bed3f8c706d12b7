"""Numeric parity against fixtures made with the original openpi (``pi0_tiny_parity.{npz,json}`` format).

A fixture's JSON describes the model (pi0, pi0.5 or pi0-FAST; any vision/Gemma dims, vocabulary, horizon, action
dim, token length);
its npz holds ``params/<path>``, inputs ``in/*`` and outputs ``out/*`` (plus ``out_bf16/*``). ``check_fixture``
builds the described model, loads the params by path, recomputes every output through the model's own code
and reports the max abs difference per output.
"""

import dataclasses
import json
import pathlib
import re
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from openpi.models import gemma
from openpi.models import intermediates
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import pi0_fast
from openpi.models import siglip
from openpi.shared import array_typing as at
from openpi.shared import tree

FLOAT32_ATOL = 1e-4
# bfloat16 keeps 8 mantissa bits, so results move with the order of accumulation: the original's own bf16 run
# differs from its f32 run by 0.024 (loss) / 0.034 (actions) on the tiny pi0 fixture and by 0.146 (loss) on the
# pi0-FAST one, and merely batching the three cameras through SigLIP together moves our bf16 loss by ~0.01. So a bf16
# output passes within this tolerance or within the original's own bf16-to-f32 distance where the fixture holds both,
# whichever is larger. A broken bf16 path is off by far more.
BFLOAT16_ATOL = 5e-2


@dataclasses.dataclass(frozen=True)
class Comparison:
    name: str
    max_abs_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs_diff <= self.atol)


def _gemma_config(spec: dict[str, Any]) -> gemma.Config:
    return gemma.Config(
        **{key: int(spec[key]) for key in ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")}
    )


def model_kind(meta: dict[str, Any]) -> _model.ModelType:
    """The model family a fixture JSON describes (pi0 unless it says ``pi05`` or ``model_type: pi0_fast``)."""
    spec = meta["model"]
    if spec.get("model_type") == _model.ModelType.PI0_FAST.value:
        return _model.ModelType.PI0_FAST
    return _model.ModelType.PI05 if spec.get("pi05") else _model.ModelType.PI0


def config_from_fixture(meta: dict[str, Any], *, dtype: str = "float32") -> pi0.Pi0Config | pi0_fast.Pi0FASTConfig:
    """The model config (``Pi0Config``, pi0 or pi0.5, or ``Pi0FASTConfig``) a fixture JSON's ``model`` describes."""
    spec = meta["model"]
    vision = spec["siglip"]
    vision_config = siglip.Config(
        width=int(vision["width"]),
        depth=int(vision["depth"]),
        mlp_dim=int(vision["mlp_dim"]),
        num_heads=int(vision["num_heads"]),
        patch_size=tuple(int(p) for p in vision["patch_size"]),
    )
    common = {
        "dtype": dtype,
        "paligemma_variant": _gemma_config(spec["paligemma_llm"]),
        "action_dim": int(spec["action_dim"]),
        "action_horizon": int(spec["action_horizon"]),
        "max_token_len": int(spec["max_token_len"]),
        "vision_variant": vision_config,
        "vocab_size": int(spec.get("vocab_size", gemma.PALIGEMMA_VOCAB_SIZE)),
        "image_resolution": tuple(int(r) for r in vision.get("image_resolution", _model.IMAGE_RESOLUTION)),
    }
    if "camera_order_in_prefix" in spec:
        common["image_keys"] = tuple(spec["camera_order_in_prefix"])
    kind = model_kind(meta)
    if kind == _model.ModelType.PI0_FAST:
        return pi0_fast.Pi0FASTConfig(**common)
    return pi0.Pi0Config(
        **common,
        action_expert_variant=_gemma_config(spec["action_expert"]),
        pi05=kind == _model.ModelType.PI05,
    )


def params_from_npz(arrays: dict[str, np.ndarray]) -> dict:
    """Nested param dict from ``params/<a>/<b>/...`` keys."""
    flat = {tuple(key.split("/")[1:]): value for key, value in arrays.items() if key.startswith("params/")}
    if not flat:
        raise ValueError("fixture: no 'params/...' arrays found")
    return tree.unflatten(flat)


def observation_from_npz(arrays: dict[str, np.ndarray], prompt_prefix: str = "in/") -> _model.Observation:
    """The fixture's observation; the prompt arrays (tokens, masks) are read under ``prompt_prefix``."""
    cams = sorted({m.group(1) for key in arrays if (m := re.fullmatch(r"in/images/(.+)", key))})

    def optional(name: str) -> jnp.ndarray | None:
        return jnp.asarray(arrays[prompt_prefix + name]) if prompt_prefix + name in arrays else None

    return _model.Observation(
        images={cam: jnp.asarray(arrays[f"in/images/{cam}"]) for cam in cams},
        image_masks={cam: jnp.asarray(arrays[f"in/image_masks/{cam}"]) for cam in cams},
        state=jnp.asarray(arrays["in/state"]),
        tokenized_prompt=optional("tokenized_prompt"),
        tokenized_prompt_mask=optional("tokenized_prompt_mask"),
        token_ar_mask=optional("token_ar_mask"),
        token_loss_mask=optional("token_loss_mask"),
    )


def _prefix_and_loss_terms(model: pi0.Pi0, observation, actions, noise, time) -> dict[str, at.Array]:
    """Every non-iterative intermediate, computed in one program (one compilation); the loss terms are those the
    model's own ``flow_matching_loss`` records (``intermediates``)."""
    with intermediates.capture() as flow:
        loss = model.flow_matching_loss(observation, actions, noise, time)
    tokens, input_mask, ar_mask = model.embed_prefix(observation)
    out = {"compute_loss": loss, "prefix/tokens": tokens, "prefix/input_mask": input_mask}
    out["prefix/ar_mask"] = ar_mask
    for cam, image in observation.images.items():
        out[f"prefix/image_tokens/{cam}"] = model.PaliGemma.img(image)
    if observation.tokenized_prompt is not None:
        out["prefix/text_embeddings"] = model.PaliGemma.llm.embed(observation.tokenized_prompt)

    expert_width = model.action_in_proj.out_features
    out["loss/time_emb"] = pi0.posemb_sincos(time, expert_width, min_period=4e-3, max_period=4.0)
    _, suffix_mask, suffix_ar_mask, adarms_cond = model.embed_suffix(observation, flow["x_t"], time)
    for name in ("x_t", "u_t", "suffix_tokens", "positions", "prefix_out", "suffix_out", "v_t"):
        out[f"loss/{name}"] = flow[name]
    out["loss/suffix_input_mask"] = suffix_mask
    out["loss/suffix_ar_mask"] = suffix_ar_mask
    out["loss/per_element"] = loss
    # The names of the pi0.5 fixture for the same suffix terms.
    out["suffix/tokens"] = flow["suffix_tokens"]
    out["suffix/input_mask"] = suffix_mask
    out["suffix/ar_mask"] = suffix_ar_mask
    if adarms_cond is not None:
        out["suffix/adarms_cond"] = adarms_cond

    prefix_mask, (out["sample/kv_cache_k"], out["sample/kv_cache_v"]) = model.fill_kv_cache(observation)
    step0_tokens, step0_mask, _, _ = model.embed_suffix(observation, noise, jnp.ones(noise.shape[:1], jnp.float32))
    out["sample/step0/suffix_tokens"] = step0_tokens
    out["sample/step0/positions"] = pi0.suffix_positions(prefix_mask, step0_mask)
    out["prefix_mask"] = prefix_mask
    return out


def _jit_method(model: nnx.Module, method):
    """``method(model, ...)`` jitted with the params as an argument (not baked-in constants); call it as
    ``run(*args)``."""
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda state, *args: method(nnx.merge(graphdef, state), *args))
    return lambda *args: jitted(state, *args)


def _flow_outputs(model: pi0.Pi0, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """pi0 / pi0.5: loss, sampled actions and every intermediate (bf16 runs: loss and actions only)."""
    observation = _model.preprocess_observation(
        None,
        observation_from_npz(arrays),
        train=False,
        image_keys=model.image_keys,
        image_resolution=model.image_resolution,
    )
    noise = jnp.asarray(arrays["in/noise"])
    actions = jnp.asarray(arrays["in/actions"])
    time = jnp.asarray(arrays["in/time"])
    num_steps = int(arrays["in/num_steps"])
    sample = _jit_method(
        model, lambda m, obs, noise: m.sample_actions(jax.random.key(0), obs, num_steps=num_steps, noise=noise)
    )
    out: dict[str, Any] = {"sample_actions": sample(observation, noise)}
    if prefix != "out":
        out["compute_loss"] = _jit_method(model, lambda m, *args: m.flow_matching_loss(*args))(
            observation, actions, noise, time
        )
        return {f"{prefix}/{name}": np.asarray(value) for name, value in out.items()}

    out |= _jit_method(model, _prefix_and_loss_terms)(observation, actions, noise, time)
    prefix_mask = out.pop("prefix_mask")
    kv_cache = (out["sample/kv_cache_k"], out["sample/kv_cache_v"])
    predict = _jit_method(model, lambda m, *args: m.predict_velocity(*args))
    batch_size = noise.shape[0]
    x_t, t = noise, jnp.float32(1.0)
    dt = -1.0 / num_steps
    xs, vs, ts = [], [], []
    for _ in range(num_steps):
        v_t = predict(observation, prefix_mask, kv_cache, x_t, jnp.broadcast_to(t, batch_size))
        xs.append(x_t)
        vs.append(v_t)
        ts.append(t)
        x_t, t = x_t + dt * v_t, t + dt
    out["sample/step0/v_t"] = vs[0]
    out["sample/x_t_trajectory"] = jnp.stack(xs)
    out["sample/v_t_trajectory"] = jnp.stack(vs)
    out["sample/t_trajectory"] = jnp.stack(ts)
    out["sample/actions_unrolled"] = x_t
    return {f"{prefix}/{name}": np.asarray(value) for name, value in out.items()}


def _fast_outputs(model: pi0_fast.Pi0FAST, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """pi0-FAST: the token loss, the greedy tokens decoded from the prompt part (``in/sample/*``) and the
    embedded inputs (bf16 runs: the loss only, as greedy tokens diverge under bf16)."""
    observation = observation_from_npz(arrays)
    out: dict[str, Any] = {
        "compute_loss": _jit_method(model, lambda m, obs: m.compute_loss(jax.random.key(0), obs, None))(observation)
    }
    if prefix != "out":
        return {f"{prefix}/{name}": np.asarray(value) for name, value in out.items()}
    preprocessed = _model.preprocess_observation(
        None, observation, train=False, image_keys=model.image_keys, image_resolution=model.image_resolution
    )
    tokens, input_mask, ar_mask = _jit_method(model, lambda m, obs: m.embed_inputs(obs))(preprocessed)
    out |= {"embed/tokens": tokens, "embed/input_mask": input_mask, "embed/ar_mask": ar_mask}
    steps = int(arrays["in/max_decoding_steps"])
    sample = _jit_method(
        model, lambda m, obs: m.sample_actions(jax.random.key(0), obs, max_decoding_steps=steps, temperature=0.0)
    )
    out["sample_actions"] = sample(observation_from_npz(arrays, "in/sample/"))
    return {f"{prefix}/{name}": np.asarray(value) for name, value in out.items()}


def compute_outputs(
    model: _model.BaseModel, arrays: dict[str, np.ndarray], prefix: str = "out"
) -> dict[str, np.ndarray]:
    """Recomputes the fixture's outputs (``<prefix>/...`` names) with the model's own methods."""
    if isinstance(model, pi0_fast.Pi0FAST):
        return _fast_outputs(model, arrays, prefix)
    return _flow_outputs(model, arrays, prefix)


def _max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    if expected.shape != actual.shape:
        return float("inf")
    if expected.dtype == np.bool_ or actual.dtype == np.bool_:
        return float(np.count_nonzero(expected.astype(bool) != actual.astype(bool)))
    return float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64)), initial=0.0))


def check_fixture(
    npz_path: str | pathlib.Path,
    json_path: str | pathlib.Path | None = None,
    *,
    atol: float = FLOAT32_ATOL,
    bf16_atol: float = BFLOAT16_ATOL,
) -> list[Comparison]:
    """Compares every ``out*/...`` array of a fixture with our recomputation.

    Raises ValueError if the fixture holds an output this tool does not know how to recompute.
    """
    npz_path = pathlib.Path(npz_path)
    json_path = pathlib.Path(json_path) if json_path else npz_path.with_suffix(".json")
    meta = json.loads(json_path.read_text())
    with np.load(npz_path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    params = params_from_npz(arrays)

    # The fixtures hold full-float32 results; GPUs would otherwise run float32 matmuls in TF32 (10-bit mantissa).
    with jax.default_matmul_precision("highest"):
        actual = compute_outputs(config_from_fixture(meta, dtype="float32").load(params), arrays)
    if any(key.startswith("out_bf16/") for key in arrays):
        actual |= compute_outputs(config_from_fixture(meta, dtype="bfloat16").load(params), arrays, "out_bf16")

    expected_keys = sorted(key for key in arrays if key.startswith(("out/", "out_bf16/")))
    unknown = [key for key in expected_keys if key not in actual]
    if unknown:
        raise ValueError(f"fixture: outputs this tool cannot recompute: {unknown}")
    return [
        Comparison(key, _max_abs_diff(arrays[key], actual[key]), _tolerance(key, arrays, atol, bf16_atol))
        for key in expected_keys
    ]


def _tolerance(key: str, arrays: dict[str, np.ndarray], atol: float, bf16_atol: float) -> float:
    if not key.startswith("out_bf16/"):
        return atol
    float32_key = "out/" + key.removeprefix("out_bf16/")
    if float32_key not in arrays:
        return bf16_atol
    return max(bf16_atol, _max_abs_diff(arrays[key], arrays[float32_key]))
