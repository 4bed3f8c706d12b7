"""pi0 and pi0.5: flow-matching vision-language-action models (Black et al., 2024; Physical Intelligence, 2025).

The prefix (SigLIP image tokens + prompt tokens) runs through the PaliGemma expert with bidirectional
attention. The suffix (one state token + ``action_horizon`` noisy-action tokens carrying the flow time) runs
through the smaller action expert, attending to the whole prefix. Training regresses the flow velocity
``noise - actions``; sampling integrates it from pure noise (t=1) to actions (t=0) with Euler steps, reusing the
prefix keys/values at every step. Given the previous chunk, sampling continues it (real-time chunking, ``rtc``).

pi0.5 (``Pi0Config(pi05=True)``) changes only the suffix: the state is not a token (the prompt carries it as text,
see ``PaligemmaTokenizer``), and the flow time conditions every norm of the action expert (adaRMSNorm) instead of
being fused into the action tokens.
"""

import dataclasses

import einops
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from openpi.models import gemma
from openpi.models import intermediates
from openpi.models import lora
from openpi.models import model as _model
from openpi.models import rtc
from openpi.models import siglip
from openpi.shared import array_typing as at


def make_attn_mask(
    input_mask: at.Bool[at.Array, "b n"], mask_ar: at.Bool[at.Array, "*b n"]
) -> at.Bool[at.Array, "b n n"]:
    """Block-causal attention mask: ``[b, query, key]``, True where the query token may attend to the key token.

    A token may attend to every valid token whose cumulative ``mask_ar`` count is not larger than its own:
    ``mask_ar`` True starts a new block that earlier tokens cannot see; False continues the current block. Invalid
    tokens (``input_mask`` False: padding) attend to nothing and are attended by nothing. For example:

    - ``mask_ar`` all False: one bidirectional block (every token sees every token).
    - ``mask_ar`` all True: plain causal attention (each token is its own block).
    - ``[F, F, F, T, T, T]``: a bidirectional prefix of 3 tokens, then 3 causal tokens (prefix-LM).
    - pi0 with 2 prefix tokens, the state and 2 actions, ``[F, F, T, T, F]`` (cumulative counts 0 0 1 2 2)::

          key:    p0 p1 st a0 a1
          p0       1  1  .  .  .     the prefix sees only itself (the pretrained VLM's inputs are unchanged,
          p1       1  1  .  .  .     and its keys/values can be cached for every denoising step);
          st       1  1  1  .  .     the state sees the prefix, not the noisy actions;
          a0       1  1  1  1  1     the actions see everything, each other included.
          a1       1  1  1  1  1
    """
    mask_ar = jnp.broadcast_to(mask_ar, input_mask.shape)
    cumsum = jnp.cumsum(mask_ar, axis=1)
    attn_mask = cumsum[:, None, :] <= cumsum[:, :, None]
    valid_mask = input_mask[:, None, :] & input_mask[:, :, None]
    return attn_mask & valid_mask


def suffix_positions(
    prefix_mask: at.Bool[at.Array, "b p"], suffix_mask: at.Bool[at.Array, "b s"]
) -> at.Int[at.Array, "b s"]:
    """RoPE positions of suffix tokens: they continue after the valid prefix tokens."""
    return jnp.sum(prefix_mask, axis=-1)[:, None] + jnp.cumsum(suffix_mask, axis=-1) - 1


def pad_prefix_cache(
    prefix_mask: at.Bool[at.Array, "b p"], kv_cache: gemma.KVCache, suffix_len: int, multiple: int = 128
) -> tuple[at.Bool[at.Array, "b q"], gemma.KVCache]:
    """The prefix cache with masked slots appended, so that prefix plus ``suffix_len`` keys are a multiple of
    ``multiple``: each denoising step's attention products then have aligned sizes, which XLA's GPU GEMMs would
    otherwise pad for themselves (two padding kernels per layer and step). Masked keys add exact zeros to the
    softmax; the suffix's positions count valid prefix tokens only."""
    extra = -(prefix_mask.shape[1] + suffix_len) % multiple
    if extra == 0:
        return prefix_mask, kv_cache
    pad = [(0, 0), (0, 0), (0, extra), (0, 0), (0, 0)]
    return (
        jnp.pad(prefix_mask, [(0, 0), (0, extra)], constant_values=False),
        tuple(jnp.pad(cache, pad) for cache in kv_cache),
    )


def posemb_sincos(
    pos: at.Real[at.Array, " b"], embedding_dim: int, min_period: float, max_period: float
) -> at.Float[at.Array, "b {embedding_dim}"]:
    """Sine-cosine embedding of a scalar per example, periods spaced geometrically in [min, max]."""
    if embedding_dim % 2:
        raise ValueError(f"embedding_dim: expected an even number, got {embedding_dim}")
    fraction = jnp.linspace(0.0, 1.0, embedding_dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    angles = jnp.einsum("i,j->ij", pos, 1.0 / period * 2 * jnp.pi, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


@dataclasses.dataclass(frozen=True)
class Pi0Config(_model.BaseModelConfig):
    """pi0 / pi0.5 sizes. Variants are names (``gemma.VARIANTS``, ``"So400m/14"``) or explicit configs for custom
    dims."""

    dtype: str = "bfloat16"
    paligemma_variant: _model.VariantFlag[gemma.Config] = "gemma_2b"
    action_expert_variant: _model.VariantFlag[gemma.Config] = "gemma_300m"

    action_dim: int = 32
    action_horizon: int = 50
    # Prompt tokens; None: 200 for pi0.5 (the state is in the prompt), else 48.
    max_token_len: int | None = None  # type: ignore[assignment]

    # pi0.5: state as prompt text, flow time through adaRMSNorm in the action expert.
    pi05: bool = False
    # Whether the data pipeline writes the state into the prompt; None: as `pi05`. (pi0.5 with False ignores the
    # state altogether, as the original's `pi05_libero` does.)
    discrete_state_input: bool | None = None

    # Not in the original config (there fixed): vision tower, vocabulary, image size, activation recompute, layer
    # loops compiled unrolled (`_model.UnrollLayers`; same parameters), the cameras the model sees (in token order;
    # an observation's other cameras are ignored) and the training-time image augmentation (`model.Augmentation`).
    vision_variant: _model.VariantFlag[siglip.Config] = "So400m/14"
    vocab_size: int = gemma.PALIGEMMA_VOCAB_SIZE
    image_resolution: tuple[int, int] = _model.IMAGE_RESOLUTION
    remat: bool = True
    unroll_layers: _model.UnrollLayers = "sampling"
    image_keys: tuple[str, ...] = _model.IMAGE_KEYS
    augmentation: _model.Augmentation = "pi0"

    # Training-time real-time chunking (`rtc`, arXiv 2512.05964). With a max delay d_max > 0, each training example
    # gets its first d actions given clean (flow time 0 on those tokens, no loss on them), d drawn from
    # `training_rtc_delay_distribution` over 0..d_max; `sample_actions` then continues a previous chunk by giving it
    # its frozen prefix the same way (`rtc_method="prefix"`) instead of guiding towards it. 0 trains as without it.
    training_rtc_max_delay: int = 0
    training_rtc_delay_distribution: rtc.DelayDistribution = "uniform"

    def __post_init__(self):
        if self.max_token_len is None:
            object.__setattr__(self, "max_token_len", 200 if self.pi05 else 48)
        if self.discrete_state_input is None:
            object.__setattr__(self, "discrete_state_input", self.pi05)
        if self.discrete_state_input and not self.pi05:
            raise ValueError("discrete_state_input: only pi0.5 (pi05=True) reads the state from the prompt")
        _model.check_model_fields(self.dtype, self.image_keys, self.augmentation, self.unroll_layers)
        rtc.check_training_fields(
            self.training_rtc_max_delay, self.training_rtc_delay_distribution, self.action_horizon
        )

    @property
    def model_type(self) -> _model.ModelType:
        return _model.ModelType.PI05 if self.pi05 else _model.ModelType.PI0

    def create(self, rng: at.KeyArrayLike) -> "Pi0":
        return Pi0(self, rngs=nnx.Rngs(rng))

    def inputs_spec(self, *, batch_size: int = 1) -> tuple[_model.Observation, _model.Actions]:
        image_spec = jax.ShapeDtypeStruct([batch_size, *self.image_resolution, 3], jnp.float32)
        mask_spec = jax.ShapeDtypeStruct([batch_size], jnp.bool_)
        observation = _model.Observation(
            images=dict.fromkeys(self.image_keys, image_spec),
            image_masks=dict.fromkeys(self.image_keys, mask_spec),
            state=jax.ShapeDtypeStruct([batch_size, self.action_dim], jnp.float32),
            tokenized_prompt=jax.ShapeDtypeStruct([batch_size, self.max_token_len], jnp.int32),
            tokenized_prompt_mask=jax.ShapeDtypeStruct([batch_size, self.max_token_len], jnp.bool_),
        )
        actions = jax.ShapeDtypeStruct([batch_size, self.action_horizon, self.action_dim], jnp.float32)
        return observation, actions

    def get_freeze_filter(self) -> nnx.filterlib.Filter:
        """Parameters that stay frozen when fine-tuning with LoRA: the base weights of every LoRA expert (see
        ``lora.freeze_filter``)."""
        experts = (self.paligemma_variant, self.action_expert_variant)
        return lora.freeze_filter([gemma.get_config(variant).lora_config("attn") is not None for variant in experts])


class PaliGemma(nnx.Module):
    """The vision tower (``img``) and the Gemma experts (``llm``): PaliGemma first, then any action expert."""

    def __init__(
        self,
        config: "Pi0Config | _model.BaseModelConfig",
        experts: tuple[gemma.Config, ...],
        *,
        adarms: tuple[bool, ...] | None = None,
        float32_queries: bool = False,
        rngs: nnx.Rngs,
    ):
        self.llm = gemma.Module(
            experts,
            embed_dtype=config.dtype,
            vocab_size=config.vocab_size,
            remat=config.remat,
            unroll=config.unroll_layers is True,
            adarms=adarms,
            float32_queries=float32_queries,
            rngs=rngs,
        )
        self.img = siglip.Module(
            config.vision_variant,
            num_classes=experts[0].width,
            image_size=config.image_resolution,
            dtype_mm=config.dtype,
            remat=config.remat,
            unroll=config.unroll_layers is True,
            rngs=rngs,
        )

    def embed_images(
        self, obs: _model.Observation, image_keys: tuple[str, ...]
    ) -> tuple[list[at.Array], list[at.Bool[at.Array, "b s"]]]:
        """SigLIP tokens of each camera (in ``image_keys`` order) and their masks (a camera's mask on each token)."""
        # All cameras go through SigLIP as one batch: fewer, larger matmuls than one pass per camera.
        all_image_tokens = self.img(jnp.concatenate([obs.images[name] for name in image_keys], axis=0))
        tokens = jnp.split(all_image_tokens, len(image_keys), axis=0)
        masks = [einops.repeat(obs.image_masks[name], "b -> b s", s=all_image_tokens.shape[1]) for name in image_keys]
        return tokens, masks


class Pi0(_model.BaseModel):
    def __init__(self, config: Pi0Config, *, rngs: nnx.Rngs):
        super().__init__(config.action_dim, config.action_horizon, config.max_token_len)
        self.image_resolution = config.image_resolution
        self.image_keys = config.image_keys
        self.augmentation = config.augmentation
        self.pi05 = config.pi05
        self.training_rtc_max_delay = config.training_rtc_max_delay
        self.training_rtc_delay_distribution = config.training_rtc_delay_distribution
        self.unroll_sampling = bool(config.unroll_layers)
        experts = (gemma.get_config(config.paligemma_variant), gemma.get_config(config.action_expert_variant))
        self.PaliGemma = PaliGemma(config, experts, adarms=(False, config.pi05), rngs=rngs)
        width = experts[1].width
        self.action_in_proj = nnx.Linear(config.action_dim, width, rngs=rngs)
        if config.pi05:
            self.time_mlp_in = nnx.Linear(width, width, rngs=rngs)
            self.time_mlp_out = nnx.Linear(width, width, rngs=rngs)
        else:
            self.state_proj = nnx.Linear(config.action_dim, width, rngs=rngs)
            self.action_time_mlp_in = nnx.Linear(2 * width, width, rngs=rngs)
            self.action_time_mlp_out = nnx.Linear(width, width, rngs=rngs)
        self.action_out_proj = nnx.Linear(width, config.action_dim, rngs=rngs)

    def embed_prefix(
        self, obs: _model.Observation
    ) -> tuple[at.Array, at.Bool[at.Array, "b p"], at.Bool[at.Array, " p"]]:
        """Image tokens of every camera, then prompt tokens; all in one bidirectional block."""
        tokens, input_mask = self.PaliGemma.embed_images(obs, tuple(obs.images))
        if obs.tokenized_prompt is not None:
            tokens.append(self.PaliGemma.llm.embed(obs.tokenized_prompt))
            input_mask.append(obs.tokenized_prompt_mask)
        tokens = jnp.concatenate(tokens, axis=1)
        ar_mask = jnp.zeros(tokens.shape[1], dtype=jnp.bool_)
        return tokens, jnp.concatenate(input_mask, axis=1), ar_mask

    def embed_suffix(
        self, obs: _model.Observation, noisy_actions: _model.Actions, time: at.Float[at.Array, " b *ah"]
    ) -> tuple[at.Array, at.Bool[at.Array, "b s"], at.Bool[at.Array, " s"], at.Float[at.Array, " b *ah d"] | None]:
        """pi0: a state token (own block), then action tokens fused with the flow time (one block after it).
        pi0.5: the action tokens alone (one block) and the time conditioning of the expert's norms.

        ``time`` is one flow time per example [b], or one per action token [b, ah] (training-time RTC: 0 on the given
        prefix). Returns tokens, input mask, block-start mask and the adaRMS conditioning (None for pi0; per token
        when the time is).
        """
        time_emb = self._time_embedding(time)
        action_tokens = self.action_in_proj(noisy_actions)
        if self.pi05:
            adarms_cond = self._time_conditioning(time_emb)
            input_mask = jnp.ones(action_tokens.shape[:2], dtype=jnp.bool_)
            ar_mask = jnp.array([True] + [False] * (self.action_horizon - 1))
            return action_tokens, input_mask, ar_mask, adarms_cond
        state_token = self.state_proj(obs.state)[:, None, :]
        # One time per example is repeated onto every action token; one per token is there already.
        time_tokens = einops.repeat(time_emb, "b d -> b s d", s=self.action_horizon) if time.ndim == 1 else time_emb
        action_time = jnp.concatenate([action_tokens, time_tokens], axis=-1)
        action_time = self.action_time_mlp_out(nnx.swish(self.action_time_mlp_in(action_time)))
        tokens = jnp.concatenate([state_token, action_time], axis=1)
        input_mask = jnp.ones(tokens.shape[:2], dtype=jnp.bool_)
        ar_mask = jnp.array([True, True] + [False] * (self.action_horizon - 1))
        return tokens, input_mask, ar_mask, None

    def _time_embedding(self, time: at.Float[at.Array, " *t"]) -> at.Float[at.Array, " *t d"]:
        """Sine-cosine embedding of flow times of any shape."""
        width = self.action_in_proj.out_features
        time_emb = posemb_sincos(time.reshape(-1), width, min_period=4e-3, max_period=4.0)
        return time_emb.reshape(*time.shape, width)

    def _time_conditioning(self, time_emb: at.Float[at.Array, " *t d"]) -> at.Float[at.Array, " *t d"]:
        """pi0.5: the action expert's adaRMSNorm conditioning from time embeddings."""
        return nnx.swish(self.time_mlp_out(nnx.swish(self.time_mlp_in(time_emb))))

    def compute_loss(
        self, rng: at.KeyArrayLike, observation: _model.Observation, actions: _model.Actions, *, train: bool = False
    ) -> at.Float[at.Array, "*b ah"]:
        preprocess_rng, noise_rng, time_rng = jax.random.split(rng, 3)
        observation = _model.preprocess_observation(
            preprocess_rng,
            observation,
            train=train,
            image_keys=self.image_keys,
            image_resolution=self.image_resolution,
            augmentation=self.augmentation,
        )
        noise = jax.random.normal(noise_rng, actions.shape)
        # Flow time t runs from 1 (pure noise) to 0 (the actions): the paper's tau reversed, t = 1 - tau. It is drawn
        # as the paper draws tau: Beta(1.5, 1), which favours the noisy end (t near 1). Unlike images, whose fine
        # detail is learned at low noise, actions are narrowed down by the observation, so the training effort goes
        # where their overall shape is decided. The shift keeps t >= 0.001 (the paper's cutoff s = 0.999): fine
        # enough for samplers of up to 1000 Euler steps, whose last step evaluates t = 1 / num_steps.
        time = jax.random.beta(time_rng, 1.5, 1, actions.shape[:-2]) * 0.999 + 0.001
        if not self.training_rtc_max_delay:
            return self.flow_matching_loss(observation, actions, noise, time)
        # Training-time RTC: the first d actions are given clean (time 0) and not predicted.
        delay = rtc.sample_delays(
            jax.random.fold_in(time_rng, 1),
            actions.shape[:-2],
            self.training_rtc_max_delay,
            self.training_rtc_delay_distribution,
        )
        prefix = rtc.prefix_mask(delay, self.action_horizon)
        token_time = jnp.where(prefix, 0.0, time[..., None])
        return rtc.postfix_loss(self.flow_matching_loss(observation, actions, noise, token_time), prefix)

    def flow_matching_loss(
        self,
        observation: _model.Observation,
        actions: _model.Actions,
        noise: _model.Actions,
        time: at.Float[at.Array, " b *ah"],
    ) -> at.Float[at.Array, "b ah"]:
        """Per action, the squared error of the velocity ``v_t`` predicted at ``x_t = t * noise + (1 - t) * actions``
        against the velocity of that straight path, ``u_t = noise - actions`` (its derivative in t). ``time`` is one
        per example [b] or one per action [b, ah]. Prefix and suffix run in one pass: training needs no cache. The
        intermediate values go to ``intermediates.record`` (the parity check reads them there)."""
        t = time[..., None, None] if time.ndim == 1 else time[..., None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        prefix_tokens, prefix_mask, prefix_ar_mask = self.embed_prefix(observation)
        suffix_tokens, suffix_mask, suffix_ar_mask, adarms_cond = self.embed_suffix(observation, x_t, time)
        input_mask = jnp.concatenate([prefix_mask, suffix_mask], axis=1)
        ar_mask = jnp.concatenate([prefix_ar_mask, suffix_ar_mask], axis=0)
        positions = jnp.cumsum(input_mask, axis=1) - 1
        (prefix_out, suffix_out), _ = self.PaliGemma.llm(
            [prefix_tokens, suffix_tokens],
            positions=positions,
            mask=make_attn_mask(input_mask, ar_mask),
            adarms_cond=[None, adarms_cond],
        )
        v_t = self.action_out_proj(suffix_out[:, -self.action_horizon :])
        intermediates.record(
            x_t=x_t,
            u_t=u_t,
            suffix_tokens=suffix_tokens,
            positions=positions,
            prefix_out=prefix_out,
            suffix_out=suffix_out,
            v_t=v_t,
        )
        return jnp.mean(jnp.square(v_t - u_t), axis=-1)

    def fill_kv_cache(self, observation: _model.Observation) -> tuple[at.Bool[at.Array, "b p"], gemma.KVCache]:
        """Runs the prefix once; returns its mask and the keys/values every denoising step attends to."""
        prefix_tokens, prefix_mask, prefix_ar_mask = self.embed_prefix(observation)
        _, kv_cache = self.PaliGemma.llm(
            [prefix_tokens, None],
            positions=jnp.cumsum(prefix_mask, axis=1) - 1,
            mask=make_attn_mask(prefix_mask, prefix_ar_mask),
        )
        return prefix_mask, kv_cache

    def predict_velocity(
        self,
        observation: _model.Observation,
        prefix_mask: at.Bool[at.Array, "b p"],
        kv_cache: gemma.KVCache,
        x_t: _model.Actions,
        time: at.Float[at.Array, " b"],
        adarms_modulations: gemma.AdaRMSModulations | None = None,
    ) -> _model.Actions:
        """One action-expert pass over the suffix, attending to the cached prefix. pi0.5: ``adarms_modulations``,
        those of ``time`` computed beforehand, spare the pass computing them."""
        suffix_tokens, suffix_mask, suffix_ar_mask, adarms_cond = self.embed_suffix(observation, x_t, time)
        # Suffix tokens see the valid prefix plus the suffix blocks up to and including their own.
        prefix_part = einops.repeat(prefix_mask, "b p -> b s p", s=suffix_tokens.shape[1])
        mask = jnp.concatenate([prefix_part, make_attn_mask(suffix_mask, suffix_ar_mask)], axis=-1)
        (_, suffix_out), _ = self.PaliGemma.llm(
            [None, suffix_tokens],
            positions=suffix_positions(prefix_mask, suffix_mask),
            mask=mask,
            kv_cache=kv_cache,
            adarms_cond=[None, adarms_cond],
            unroll=self.unroll_sampling,
            adarms_modulations=adarms_modulations,
        )
        return self.action_out_proj(suffix_out[:, -self.action_horizon :])

    def _step_modulations(self, num_steps: int, batch_size: int) -> gemma.AdaRMSModulations:
        """pi0.5: the action expert's norm modulations at the flow time of each of ``num_steps`` Euler steps, with a
        step axis (after the layer axis of the layer norms'). The times are summed as the loop sums them, to the
        same float32 bits."""
        dt = np.float32(-1.0 / num_steps)
        times = [np.float32(1.0)]
        for _ in range(num_steps - 1):
            times.append(times[-1] + dt)
        step_times = jnp.broadcast_to(jnp.asarray(times)[:, None], (num_steps, batch_size))
        return self.PaliGemma.llm.adarms_modulations([None, self._time_conditioning(self._time_embedding(step_times))])

    def sample_actions(
        self,
        rng: at.KeyArrayLike,
        observation: _model.Observation,
        *,
        num_steps: int = 10,
        noise: _model.Actions | None = None,
        prev_chunk: _model.Actions | None = None,
        inference_delay: rtc.Steps | None = None,
        execution_horizon: rtc.Steps | None = None,
        guidance_max_weight: float = 5.0,
        prefix_attention_schedule: rtc.PrefixAttentionSchedule = "exp",
        rtc_method: rtc.Method | None = None,
    ) -> _model.Actions:
        """Integrates the flow from noise (t=1) to actions (t=0) with ``num_steps`` Euler steps.

        With ``prev_chunk`` (the previous chunk re-indexed so that index 0 executes when this one starts), real-time
        chunking (``rtc``): the first ``inference_delay`` actions are those of ``prev_chunk`` and the rest continues
        them. ``rtc_method`` says how; None picks "prefix" for a model trained with ``training_rtc_max_delay`` and
        "guided" otherwise:

        - "guided" (inference-time RTC): the overlap up to ``action_horizon - execution_horizon`` is guided towards
          ``prev_chunk``, the guidance weight clipped at ``guidance_max_weight`` and decaying by
          ``prefix_attention_schedule``; a backward pass per step.
        - "prefix" (training-time RTC): the frozen actions enter every step clean, at flow time 0, and only the rest
          is denoised; no extra cost. ``execution_horizon`` is optional and the guidance settings do not apply. A
          model not trained that way sees a prefix outside its training distribution.

        The delay and horizon are ints or one per example.
        """
        observation = _model.preprocess_observation(
            None, observation, train=False, image_keys=self.image_keys, image_resolution=self.image_resolution
        )
        batch_size = observation.state.shape[0]
        actions_shape = (batch_size, self.action_horizon, self.action_dim)
        if noise is None:
            noise = jax.random.normal(rng, actions_shape)
        method = None
        if prev_chunk is None:
            if inference_delay is not None or execution_horizon is not None:
                raise ValueError("prev_chunk: required with inference_delay and execution_horizon, got None")
        else:
            method = rtc_method or ("prefix" if self.training_rtc_max_delay else "guided")
            if method not in rtc.METHODS:
                raise ValueError(f"rtc_method: expected one of {rtc.METHODS} or None, got {rtc_method!r}")
            if inference_delay is None:
                raise ValueError("inference_delay: required with prev_chunk, got None")
            if method == "guided" and execution_horizon is None:
                raise ValueError("execution_horizon: required with prev_chunk for rtc_method='guided', got None")
            horizon = 0 if execution_horizon is None else execution_horizon
            rtc.check_inputs(prev_chunk, inference_delay, horizon, actions_shape)
            frozen = jnp.broadcast_to(rtc.prefix_mask(inference_delay, self.action_horizon), actions_shape[:2])
            if method == "guided":
                weights = rtc.prefix_weights(inference_delay, horizon, self.action_horizon, prefix_attention_schedule)
                weights = jnp.broadcast_to(weights, actions_shape[:2])
            else:
                noise = jnp.where(frozen[..., None], prev_chunk, noise)
        # Euler steps down the flow time, from t = 1 (the noise) to t = 0 (the actions).
        dt = -1.0 / num_steps
        prefix_mask, kv_cache = self.fill_kv_cache(observation)
        suffix_len = self.action_horizon + (0 if self.pi05 else 1)
        prefix_mask, kv_cache = pad_prefix_cache(prefix_mask, kv_cache, suffix_len)
        # pi0.5: every step's flow time is known before the loop, so the expert's norm modulations (two small products
        # per layer and step) are computed for all steps at once (not for per-token times, "prefix").
        all_modulations = self._step_modulations(num_steps, batch_size) if self.pi05 and method != "prefix" else None

        def step(i, carry):
            x_t, time = carry
            modulations = None
            if all_modulations is not None:
                modulations = gemma.AdaRMSModulations(
                    jax.tree.map(lambda m: m[:, i], all_modulations.layers),
                    jax.tree.map(lambda m: m[i], all_modulations.final),
                )

            def velocity(x):
                time_b = jnp.broadcast_to(time, batch_size)
                return self.predict_velocity(observation, prefix_mask, kv_cache, x, time_b, modulations)

            if method is None:
                v_t = velocity(x_t)
            elif method == "guided":
                v_t = rtc.guided_velocity(velocity, x_t, time, prev_chunk, weights, guidance_max_weight)
            else:
                token_time = jnp.where(frozen, 0.0, time)
                v_t = self.predict_velocity(observation, prefix_mask, kv_cache, x_t, token_time)
                v_t = jnp.where(frozen[..., None], 0.0, v_t)
            return x_t + dt * v_t, time + dt

        x_0, _ = jax.lax.fori_loop(0, num_steps, step, (noise, jnp.float32(1.0)))
        if method is None:
            return x_0
        # Guidance alone leaves the frozen prefix only close; the robot executes prev_chunk's actions there.
        return jnp.where(frozen[..., None], prev_chunk, x_0)
