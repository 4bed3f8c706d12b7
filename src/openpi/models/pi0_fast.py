"""pi0-FAST: an autoregressive vision-language-action model (Pertsch et al., 2025).

One PaliGemma (no action expert) reads the images and a prompt that carries the task and the discretized state,
then writes the action chunk as text: "Action: ", FAST action tokens (a compressed DCT of the chunk, mapped onto
the last ids of the PaliGemma vocabulary, see ``tokenizer.FASTTokenizer``), "|" and EOS. Training is next-token
cross-entropy on those action tokens; sampling decodes greedily (or with a temperature) with a KV cache and stops
once every sequence has written EOS. The model returns token ids; the data pipeline turns them into actions.
"""

import dataclasses
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import tyro

from openpi.models import gemma
from openpi.models import lora
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import siglip
from openpi.shared import array_typing as at

PALIGEMMA_EOS_TOKEN = 1
# Cameras of the pi0-FAST checkpoints: two third-person views and one wrist view.
FAST_IMAGE_KEYS = ("base_0_rgb", "base_1_rgb", "wrist_0_rgb")


@dataclasses.dataclass(frozen=True)
class Pi0FASTConfig(_model.BaseModelConfig):
    """pi0-FAST sizes. ``fast_model_tokenizer`` (a tokenizer class or factory called with ``max_token_len`` and
    ``fast_model_tokenizer_kwargs``) replaces the default ``tokenizer.FASTTokenizer`` in the data pipeline."""

    dtype: str = "bfloat16"
    paligemma_variant: _model.VariantFlag[gemma.Config] = "gemma_2b"

    action_dim: int = 32
    action_horizon: int = 32
    max_token_len: int = 250

    fast_model_tokenizer: tyro.conf.Suppress[Any] = None
    fast_model_tokenizer_kwargs: dict | None = None

    # Not in the original config (there fixed): as in `Pi0Config`.
    vision_variant: _model.VariantFlag[siglip.Config] = "So400m/14"
    vocab_size: int = gemma.PALIGEMMA_VOCAB_SIZE
    image_resolution: tuple[int, int] = _model.IMAGE_RESOLUTION
    remat: bool = True
    unroll_layers: _model.UnrollLayers = "sampling"
    image_keys: tuple[str, ...] = FAST_IMAGE_KEYS
    augmentation: _model.Augmentation = "pi0"

    def __post_init__(self):
        _model.check_model_fields(self.dtype, self.image_keys, self.augmentation, self.unroll_layers)

    @property
    def model_type(self) -> _model.ModelType:
        return _model.ModelType.PI0_FAST

    def create(self, rng: at.KeyArrayLike) -> "Pi0FAST":
        return Pi0FAST(self, rngs=nnx.Rngs(rng))

    def inputs_spec(self, *, batch_size: int = 1) -> tuple[_model.Observation, _model.Actions]:
        image_spec = jax.ShapeDtypeStruct([batch_size, *self.image_resolution, 3], jnp.float32)
        mask_spec = jax.ShapeDtypeStruct([batch_size], jnp.bool_)
        tokens_spec = jax.ShapeDtypeStruct([batch_size, self.max_token_len], jnp.int32)
        token_mask_spec = jax.ShapeDtypeStruct([batch_size, self.max_token_len], jnp.bool_)
        observation = _model.Observation(
            images=dict.fromkeys(self.image_keys, image_spec),
            image_masks=dict.fromkeys(self.image_keys, mask_spec),
            state=jax.ShapeDtypeStruct([batch_size, self.action_dim], jnp.float32),
            tokenized_prompt=tokens_spec,
            tokenized_prompt_mask=token_mask_spec,
            token_ar_mask=tokens_spec,
            token_loss_mask=token_mask_spec,
        )
        actions = jax.ShapeDtypeStruct([batch_size, self.action_horizon, self.action_dim], jnp.float32)
        return observation, actions

    def get_freeze_filter(self) -> nnx.filterlib.Filter:
        """Parameters that stay frozen when fine-tuning with LoRA: the base weights of the Gemma (see
        ``lora.freeze_filter``)."""
        return lora.freeze_filter([gemma.get_config(self.paligemma_variant).lora_config("attn") is not None])


class Pi0FAST(_model.BaseModel):
    def __init__(self, config: Pi0FASTConfig, *, rngs: nnx.Rngs):
        super().__init__(config.action_dim, config.action_horizon, config.max_token_len)
        self.image_resolution = config.image_resolution
        self.image_keys = config.image_keys
        self.augmentation = config.augmentation
        self.unroll_sampling = bool(config.unroll_layers)
        self.PaliGemma = pi0.PaliGemma(
            config, (gemma.get_config(config.paligemma_variant),), float32_queries=True, rngs=rngs
        )

    def embed_inputs(
        self, obs: _model.Observation
    ) -> tuple[at.Array, at.Bool[at.Array, "b n"], at.Int[at.Array, "b n"]]:
        """Image tokens of every camera (one bidirectional block), then the prompt tokens with their own
        block-start marks (``token_ar_mask``: 0 for the prompt, 1 for each action token)."""
        tokens, input_mask = self.PaliGemma.embed_images(obs, tuple(obs.images))
        ar_mask = [jnp.zeros(mask.shape, jnp.int32) for mask in input_mask]
        tokens.append(self.PaliGemma.llm.embed(obs.tokenized_prompt))
        input_mask.append(obs.tokenized_prompt_mask)
        ar_mask.append(jnp.asarray(obs.token_ar_mask, jnp.int32))
        return jnp.concatenate(tokens, axis=1), jnp.concatenate(input_mask, axis=1), jnp.concatenate(ar_mask, axis=1)

    def _preprocess(self, rng: at.KeyArrayLike | None, observation: _model.Observation, *, train: bool):
        return _model.preprocess_observation(
            rng,
            observation,
            train=train,
            image_keys=self.image_keys,
            image_resolution=self.image_resolution,
            augmentation=self.augmentation,
        )

    def compute_loss(
        self, rng: at.KeyArrayLike, observation: _model.Observation, actions: _model.Actions, *, train: bool = False
    ) -> at.Float[at.Array, "*b"]:
        """Mean next-token cross-entropy over the loss-masked (action) tokens, per example; ``actions`` are
        already in the tokenized prompt."""
        if observation.token_ar_mask is None or observation.token_loss_mask is None:
            raise ValueError("observation: pi0-FAST needs token_ar_mask and token_loss_mask (see TokenizeFASTInputs)")
        observation = self._preprocess(rng, observation, train=train)
        tokens, input_mask, ar_mask = self.embed_inputs(observation)
        attn_mask = pi0.make_attn_mask(input_mask, ar_mask)
        # Every token but the last predicts its successor; only the prompt part has targets.
        (hidden,), _ = self.PaliGemma.llm(
            [tokens[:, :-1]], positions=jnp.arange(tokens.shape[1] - 1)[None, :], mask=attn_mask[:, :-1, :-1]
        )
        targets = observation.tokenized_prompt[:, 1:]
        logits = self.PaliGemma.llm.logits(hidden[:, -targets.shape[1] :])
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        target_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        loss_mask = observation.token_loss_mask[:, 1:]
        return -jnp.sum(target_log_probs * loss_mask, axis=-1) / jnp.clip(jnp.sum(loss_mask, axis=-1), 1)

    def sample_actions(
        self,
        rng: at.KeyArrayLike,
        observation: _model.Observation,
        *,
        max_decoding_steps: int = 256,
        temperature: float = 0.0,
    ) -> at.Float[at.Array, "b s"]:
        """Decodes up to ``max_decoding_steps`` tokens after the prompt (greedy at temperature 0); returns their
        ids as floats [b, max_decoding_steps], zero after an early stop (every sequence has written EOS)."""
        observation = self._preprocess(None, observation, train=False)
        tokens, input_mask, ar_mask = self.embed_inputs(observation)
        attn_mask = pi0.make_attn_mask(input_mask, ar_mask)
        # Right-align every sequence so that all of them continue at the same cache slot.
        tokens, input_mask, attn_mask = jax.vmap(left_to_right_align)(tokens, input_mask, attn_mask)
        batch_size, prefill_size = input_mask.shape
        prefill_len = jnp.sum(input_mask, axis=-1)
        prefix_start = prefill_size - prefill_len
        cache_size = prefill_size + max_decoding_steps

        (hidden,), kv_cache = self.PaliGemma.llm(
            [tokens], positions=jnp.cumsum(input_mask, axis=-1) - 1, mask=attn_mask
        )
        pad = [(0, 0), (0, 0), (0, max_decoding_steps), (0, 0), (0, 0)]
        kv_cache = tuple(jnp.pad(cache, pad) for cache in kv_cache)
        last_logits = self.PaliGemma.llm.logits(hidden[:, -1:])
        output_tokens = jnp.zeros((batch_size, max_decoding_steps))
        slots = jnp.arange(cache_size)[None, None, :]

        def step(carry):
            rng, last_logits, output_tokens, kv_cache, _, step = carry
            rng, step_rng = jax.random.split(rng)
            token = jax.lax.cond(
                temperature > 0.0,
                lambda: jax.random.categorical(step_rng, last_logits / temperature, axis=-1),
                lambda: jnp.argmax(last_logits, axis=-1),
            )
            output_tokens = put_along_last_axis(output_tokens, jnp.broadcast_to(step, token.shape), token)
            all_eos = jnp.all(token == PALIGEMMA_EOS_TOKEN)
            # As the original: the new token sees the cache from the first aligned prompt slot on, and its position
            # continues one past the prompt's last.
            mask = (slots >= prefix_start[:, None, None]) & (slots < prefill_size + step + 1)
            (hidden,), kv_cache = self.PaliGemma.llm(
                [self.PaliGemma.llm.embed(token)],
                positions=prefill_len[:, None] + step + 1,
                mask=jnp.broadcast_to(mask, (batch_size, 1, cache_size)),
                kv_cache=kv_cache,
                cache_index=prefill_size + step,
                unroll=self.unroll_sampling,
            )
            return rng, self.PaliGemma.llm.logits(hidden), output_tokens, kv_cache, all_eos, step + 1

        def keep_going(carry):
            *_, all_eos, step = carry
            return (~all_eos) & (step < max_decoding_steps)

        carry = (rng, last_logits, output_tokens, kv_cache, jnp.bool_(False), jnp.int32(0))
        return jax.lax.while_loop(keep_going, step, carry)[2]


# The block-causal mask of the prompt and action tokens: pi0's.
make_attn_mask = pi0.make_attn_mask


def left_to_right_align(
    tokens: at.Array, input_mask: at.Bool[at.Array, " n"], attn_mask: at.Bool[at.Array, "n n"]
) -> tuple[at.Array, at.Bool[at.Array, " n"], at.Bool[at.Array, "n n"]]:
    """Rolls one (unbatched) sequence so that its last valid token sits at the end (the padding moves to the
    front): every sequence of a batch then continues at the same cache slot."""
    length = jnp.max(input_mask * jnp.arange(input_mask.shape[0])) + 1
    return (
        jnp.roll(tokens, -length, axis=0),
        jnp.roll(input_mask, -length, axis=0),
        jnp.roll(attn_mask, -length, axis=(0, 1)),
    )


def put_along_last_axis(array: at.Array, indices: at.Int[at.Array, "*b k"], values: at.Array) -> at.Array:
    """`array` [*b, n] with `values` [*b, k] written at the distinct positions `indices` [*b, k] of its last axis."""
    if indices.shape != values.shape:
        raise ValueError(f"indices, values: expected the same shape, got {indices.shape} and {values.shape}")
    hits = jax.nn.one_hot(indices, array.shape[-1], dtype=jnp.bool_)
    written = jnp.sum(jnp.where(hits, values[..., None], 0), axis=-2).astype(array.dtype)
    return jnp.where(jnp.any(hits, axis=-2), written, array)
