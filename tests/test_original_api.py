"""Code written against the original openpi imports and runs here: its public modules and names, its registered
configs, and its main entry points called the way it calls them (tiny configs)."""

import dataclasses
import functools
import importlib

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi import transforms
from openpi.models import lora
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import pi0_config
from openpi.models import pi0_fast
from openpi.models import siglip
from openpi.policies import policy as _policy
from openpi.shared import array_typing as at
from openpi.shared import nnx_utils
from openpi.training import checkpoints
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader
from openpi.training import optimizer
from openpi.training import sharding
from openpi.training import utils
from openpi.training import weight_loaders

# Public names of the original's current `src/openpi` and `packages/openpi-client`, module by module. Not here:
# names that need torch or transformers internals, the TensorFlow RLDS reader of DROID and the RoboArena
# binning / FSQ tokenizers (see the README's differences from the original).
ORIGINAL_NAMES = {
    "openpi.models.model": [
        "ArrayT",
        "ModelType",
        "IMAGE_KEYS",
        "IMAGE_RESOLUTION",
        "Observation",
        "Actions",
        "preprocess_observation",
        "BaseModelConfig",
        "BaseModel",
        "restore_params",
    ],
    "openpi.models.pi0_config": ["Pi0Config"],
    "openpi.models.pi0": ["make_attn_mask", "posemb_sincos", "Pi0"],
    "openpi.models.pi0_fast": [
        "PALIGEMMA_EOS_TOKEN",
        "Pi0FASTConfig",
        "Pi0FAST",
        "make_attn_mask",
        "left_to_right_align",
        "put_along_last_axis",
    ],
    "openpi.models.gemma": [
        "PALIGEMMA_VOCAB_SIZE",
        "Config",
        "Variant",
        "FeedForward",
        "get_config",
        "RMSNorm",
        "Embedder",
        "Attention",
        "Block",
        "KVCache",
        "Module",
    ],
    "openpi.models.gemma_fast": [
        "Variant",
        "get_config",
        "Einsum",
        "RMSNorm",
        "Embedder",
        "Attention",
        "Block",
        "KVCache",
        "Module",
    ],
    "openpi.models.siglip": ["MlpBlock", "Encoder1DBlock", "Encoder", "Module", "decode_variant", "posemb_sincos_2d"],
    "openpi.models.lora": ["LoRAConfig", "Einsum", "FeedForward"],
    "openpi.models.tokenizer": ["PaligemmaTokenizer", "FASTTokenizer"],
    "openpi.shared.nnx_utils": ["module_jit", "PathRegex", "state_map"],
    "openpi.shared.normalize": ["NormStats", "RunningStats", "serialize_json", "deserialize_json", "save", "load"],
    "openpi.shared.image_tools": ["resize_with_pad"],
    "openpi.shared.download": ["DEFAULT_CACHE_DIR", "get_cache_dir", "maybe_download"],
    "openpi.shared.array_typing": [
        "Array",
        "ArrayLike",
        "Bool",
        "DTypeLike",
        "Float",
        "Int",
        "Key",
        "Num",
        "PyTree",
        "Real",
        "UInt8",
        "KeyArrayLike",
        "Params",
        "typecheck",
        "disable_typechecking",
        "check_pytree_equality",
    ],
    "openpi.transforms": [
        "DataDict",
        "NormStats",
        "DataTransformFn",
        "Group",
        "CompositeTransform",
        "compose",
        "RepackTransform",
        "InjectDefaultPrompt",
        "Normalize",
        "Unnormalize",
        "ResizeImages",
        "SubsampleActions",
        "DeltaActions",
        "AbsoluteActions",
        "TokenizePrompt",
        "TokenizeFASTInputs",
        "ExtractFASTActions",
        "PromptFromLeRobotTask",
        "PadStatesAndActions",
        "flatten_dict",
        "unflatten_dict",
        "transform_dict",
        "apply_tree",
        "pad_to_dim",
        "make_bool_mask",
    ],
    "openpi.training.config": [
        "ModelType",
        "Filter",
        "AssetsConfig",
        "DataConfig",
        "GroupFactory",
        "ModelTransformFactory",
        "DataConfigFactory",
        "FakeDataConfig",
        "SimpleDataConfig",
        "LeRobotAlohaDataConfig",
        "LeRobotLiberoDataConfig",
        "LeRobotDROIDDataConfig",
        "TrainConfig",
        "cli",
        "get_config",
    ],
    "openpi.training.data_loader": [
        "Dataset",
        "IterableDataset",
        "DataLoader",
        "TransformedDataset",
        "IterableTransformedDataset",
        "FakeDataset",
        "create_torch_dataset",
        "transform_dataset",
        "transform_iterable_dataset",
        "create_data_loader",
        "create_torch_data_loader",
        "TorchDataLoader",
        "DataLoaderImpl",
    ],
    "openpi.training.weight_loaders": [
        "WeightLoader",
        "NoOpWeightLoader",
        "CheckpointWeightLoader",
        "PaliGemmaWeightLoader",
    ],
    "openpi.training.checkpoints": ["initialize_checkpoint_dir", "save_state", "restore_state", "load_norm_stats"],
    "openpi.training.optimizer": [
        "LRScheduleConfig",
        "CosineDecaySchedule",
        "RsqrtDecaySchedule",
        "OptimizerConfig",
        "AdamW",
        "SGD",
        "create_optimizer",
    ],
    "openpi.training.sharding": [
        "BATCH_AXIS",
        "FSDP_AXIS",
        "DATA_AXIS",
        "make_mesh",
        "set_mesh",
        "activation_sharding_constraint",
        "fsdp_sharding",
    ],
    "openpi.training.utils": ["TrainState", "tree_to_info", "array_tree_to_info"],
    "openpi.policies.policy": ["BasePolicy", "Policy", "PolicyRecorder"],
    "openpi.policies.policy_config": ["create_trained_policy"],
    "openpi.policies.aloha_policy": ["make_aloha_example", "AlohaInputs", "AlohaOutputs"],
    "openpi.policies.droid_policy": ["make_droid_example", "DroidInputs", "DroidOutputs"],
    "openpi.policies.libero_policy": ["make_libero_example", "LiberoInputs", "LiberoOutputs"],
    "openpi_client.base_policy": ["BasePolicy"],
    "openpi_client.action_chunk_broker": ["ActionChunkBroker"],
    "openpi_client.image_tools": ["convert_to_uint8", "resize_with_pad"],
    "openpi_client.msgpack_numpy": ["pack_array", "unpack_array", "Packer", "packb", "Unpacker", "unpackb"],
    "openpi_client.websocket_client_policy": ["WebsocketClientPolicy"],
    "openpi_client.runtime.agent": ["Agent"],
    "openpi_client.runtime.environment": ["Environment"],
    "openpi_client.runtime.subscriber": ["Subscriber"],
    "openpi_client.runtime.runtime": ["Runtime"],
    "openpi_client.runtime.agents.policy_agent": ["PolicyAgent"],
}

# Names of the first openpi release that code may still import.
SEED_ERA_NAMES = {
    "openpi.models.pi0": ["Pi0Config"],
    "openpi.models.model": ["Model"],
    "openpi.policies.policy_config": ["PolicyConfig", "create_policy"],
}

# The original's registered train configs, less those that read DROID's RLDS build (TensorFlow) for training
# (`pi0*_droid_jointpos*_polaris`) or need the RoboArena binning / FSQ tokenizers (`paligemma_binning_droid*`,
# `paligemma_vq_droid`).
ORIGINAL_CONFIG_NAMES = [
    "pi0_aloha",
    "pi05_aloha",
    "pi0_aloha_towel",
    "pi0_aloha_tupperware",
    "pi0_droid",
    "pi0_fast_droid",
    "pi05_droid",
    "pi0_libero",
    "pi0_libero_low_mem_finetune",
    "pi0_fast_libero",
    "pi0_fast_libero_low_mem_finetune",
    "pi05_libero",
    "pi0_aloha_pen_uncap",
    "pi05_aloha_pen_uncap",
    "pi0_fast_full_droid_finetune",
    "pi05_full_droid_finetune",
    "pi05_droid_finetune",
    "pi0_aloha_sim",
    "debug",
    "debug_restore",
    "debug_pi05",
    "paligemma_fast_droid",
    "paligemma_fast_specialist_droid",
    "paligemma_diffusion_droid",
]

# Tiny stand-ins for the original's "dummy" test models: its Gemma variant names, a small vision tower and
# vocabulary so that they compile in seconds on a CPU.
_TINY_VISION = {
    "vision_variant": siglip.Config(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=(16, 16)),
    "image_resolution": (32, 32),
    "vocab_size": 128,
    "remat": False,
}
TINY_MODELS = {
    "pi0": pi0_config.Pi0Config(
        paligemma_variant="dummy", action_expert_variant="dummy", action_horizon=4, max_token_len=8, **_TINY_VISION
    ),
    "pi05": pi0_config.Pi0Config(
        pi05=True,
        paligemma_variant="dummy",
        action_expert_variant="dummy",
        action_horizon=4,
        max_token_len=8,
        **_TINY_VISION,
    ),
    "pi0_fast": pi0_fast.Pi0FASTConfig(
        paligemma_variant="dummy", action_dim=8, action_horizon=4, max_token_len=8, **_TINY_VISION
    ),
}


@pytest.mark.parametrize("module_name", [*ORIGINAL_NAMES, *SEED_ERA_NAMES])
def test_original_module_exposes_its_public_names(module_name):
    module = importlib.import_module(module_name)
    names = ORIGINAL_NAMES.get(module_name, []) + SEED_ERA_NAMES.get(module_name, [])
    assert [name for name in names if not hasattr(module, name)] == []


def test_original_registered_configs_exist_and_pi0_config_lives_in_both_modules():
    assert [name for name in ORIGINAL_CONFIG_NAMES if name not in _config._CONFIGS_DICT] == []
    assert pi0.Pi0Config is pi0_config.Pi0Config
    pi05 = pi0_config.Pi0Config(pi05=True)
    assert (pi05.discrete_state_input, pi05.max_token_len) == (True, 200)
    fast_specialist = _config.get_config("paligemma_fast_specialist_droid").model
    assert fast_specialist.fast_model_tokenizer_kwargs == {"fast_tokenizer_path": "KarlP/fast_droid_specialist"}
    # The original's configs set its PyTorch fields; they are accepted (and unused).
    copied = _config.TrainConfig(name="copied", pytorch_weight_path="/path/to/your/pytorch_weight_path")
    assert copied.pytorch_training_precision == "bfloat16"


def test_simple_data_config_takes_the_original_group_factories(tmp_path):
    pad = transforms.PadStatesAndActions(8)
    data = _config.SimpleDataConfig(
        repo_id="my/robot",
        data_transforms=lambda model: transforms.Group(inputs=[transforms.SubsampleActions(2)]),
        model_transforms=lambda model: transforms.Group(inputs=[pad]),
    )
    data_config = data.create(tmp_path, TINY_MODELS["pi0"])
    assert (data_config.repo_id, data_config.norm_stats) == ("my/robot", None)
    assert data_config.data_transforms.inputs == [transforms.SubsampleActions(2)]
    assert data_config.model_transforms.inputs == [pad]


@functools.cache
def _tiny_model(name: str) -> _model.BaseModel:
    return TINY_MODELS[name].create(jax.random.key(0))


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_model_config_fake_inputs_fit_the_model_it_creates_and_loads(name):
    config = TINY_MODELS[name]
    observation, actions = config.fake_obs(batch_size=2), config.fake_act(batch_size=2)
    assert observation.state.shape == (2, config.action_dim)
    assert actions.shape == (2, config.action_horizon, config.action_dim)
    # `load` takes params as the pure dict `restore_params` returns.
    params = nnx.to_pure_dict(nnx.state(_tiny_model(name), nnx.Param))
    reloaded = nnx.to_pure_dict(nnx.state(config.load(params), nnx.Param))
    at.check_pytree_equality(expected=params, got=reloaded, check_shapes=True, check_dtypes=True)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_model_computes_a_finite_loss_on_its_config_fake_inputs_through_module_jit(name):
    config = TINY_MODELS[name]
    compute_loss = nnx_utils.module_jit(_tiny_model(name).compute_loss)
    loss = compute_loss(jax.random.key(1), config.fake_obs(batch_size=2), config.fake_act(batch_size=2))
    assert loss.shape[0] == 2
    assert np.all(np.isfinite(loss))


def test_pi0_policy_infer_with_the_same_noise_gives_the_same_actions():
    config = TINY_MODELS["pi0"]
    example = jax.tree.map(lambda x: np.asarray(x[0]), config.fake_obs().to_dict())
    noise = np.random.default_rng(0).standard_normal((config.action_horizon, config.action_dim)).astype(np.float32)
    policy = _policy.Policy(_tiny_model("pi0"), sample_kwargs={"num_steps": 2})
    first, second = policy.infer(example, noise=noise), policy.infer(example, noise=noise)
    assert first["actions"].shape == (config.action_horizon, config.action_dim)
    np.testing.assert_array_equal(first["actions"], second["actions"])
    assert isinstance(policy, _policy.BasePolicy)


def test_pi0_fast_samples_tokens_through_module_jit_with_static_decoding_steps():
    sample = nnx_utils.module_jit(_tiny_model("pi0_fast").sample_actions, static_argnames=("max_decoding_steps",))
    tokens = sample(jax.random.key(2), TINY_MODELS["pi0_fast"].fake_obs(batch_size=2), max_decoding_steps=3)
    assert tokens.shape == (2, 3)
    with pytest.raises(ValueError, match="noise"):
        _policy.Policy(_tiny_model("pi0_fast")).infer({}, noise=np.zeros((4, 8)))


_BASE, _LORA, _EXPERT, _EXPERT_LORA, _VISION = (
    ("PaliGemma", "llm", "layers", "attn", "q_einsum", "w"),
    ("PaliGemma", "llm", "layers", "attn", "q_einsum", "lora_a"),
    ("PaliGemma", "llm", "layers", "mlp_1", "gating_einsum"),
    ("PaliGemma", "llm", "layers", "mlp_1", "gating_einsum_lora_a"),
    ("PaliGemma", "img", "head", "kernel"),
)


@pytest.mark.parametrize(
    ("config", "frozen"),
    [
        (
            pi0_config.Pi0Config(paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora"),
            {_BASE, _EXPERT},
        ),
        (pi0_config.Pi0Config(paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m"), {_BASE}),
        (pi0_config.Pi0Config(paligemma_variant="gemma_2b", action_expert_variant="gemma_300m_lora"), {_EXPERT}),
        (pi0_config.Pi0Config(), set()),
        (pi0_fast.Pi0FASTConfig(paligemma_variant="gemma_2b_lora"), {_BASE, _EXPERT}),
        (pi0_fast.Pi0FASTConfig(), set()),
    ],
)
def test_lora_freeze_filter_of_the_original_variant_names_freezes_only_base_weights(config, frozen):
    is_frozen = nnx.filterlib.to_predicate(config.get_freeze_filter())
    paths = {_BASE, _LORA, _EXPERT, _EXPERT_LORA, _VISION}
    assert {path for path in paths if is_frozen(path, None)} == frozen


def test_create_data_loader_on_the_debug_config_with_fake_data_takes_the_original_keywords():
    config = dataclasses.replace(_config.get_config("debug"), data=_config.FakeDataConfig())
    loader = _data_loader.create_data_loader(config, skip_norm_stats=True, num_batches=2, shuffle=True, framework="jax")
    batches = list(loader)
    assert len(batches) == 2
    for observation, actions in batches:
        assert all(leaf.shape[0] == config.batch_size for leaf in jax.tree.leaves(observation))
        assert actions.shape == (config.batch_size, config.model.action_horizon, config.model.action_dim)
    assert loader.data_config().repo_id == "fake"
    with pytest.raises(ValueError, match="framework"):
        _data_loader.create_data_loader(config, framework="pytorch")


def test_torch_data_loader_call_shape_yields_sharded_dict_batches():
    dataset = _data_loader.FakeDataset(TINY_MODELS["pi0"], 16)
    batches = list(_data_loader.TorchDataLoader(dataset, local_batch_size=4, num_batches=2, num_workers=2))
    assert len(batches) == 2
    assert all(isinstance(leaf, jax.Array) and leaf.shape[0] == 4 for leaf in jax.tree.leaves(batches[0]))
    endless = iter(_data_loader.TorchDataLoader(dataset, local_batch_size=4))
    for _ in range(6):  # more than one epoch of 4 batches
        next(endless)
    data_config = _config.DataConfig(repo_id="fake")
    observation, actions = next(iter(_data_loader.DataLoaderImpl(data_config, iter(batches))))
    assert (observation.state.shape, actions.shape) == ((4, 32), (4, 4, 32))
    loader = _data_loader.create_torch_data_loader(data_config, TINY_MODELS["pi0"], 4, 8, num_batches=1)
    assert len(list(loader)) == 1


def test_transform_dict_renames_drops_and_refuses_collisions_in_a_param_tree():
    params = {"img": {"head": {"kernel": 1, "bias": 2}}, "llm": {"layers": {"mlp": {"linear": 3}}}, "extra": {"x": 4}}
    renamed = transforms.transform_dict(
        {r"img/head/(.*)": r"PaliGemma/img/head/\1", r"llm/(.*)": r"PaliGemma/llm/\1", r"extra/.*": None}, params
    )
    assert renamed == {
        "PaliGemma": {"img": {"head": {"kernel": 1, "bias": 2}}, "llm": {"layers": {"mlp": {"linear": 3}}}}
    }
    assert transforms.transform_dict({}, params) == params
    with pytest.raises(ValueError, match="already"):
        transforms.transform_dict({r"img/head/.*": "head"}, params)
    with pytest.raises(ValueError, match="parent"):
        transforms.transform_dict({r"img/head/kernel": "llm"}, params)


def test_nnx_utils_module_jit_path_regex_and_state_map():
    linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    jitted = nnx_utils.module_jit(linear.__call__)
    np.testing.assert_allclose(jitted(jnp.ones((1, 3))), linear(jnp.ones((1, 3))), atol=1e-6)
    with pytest.raises(ValueError, match="bound method"):
        nnx_utils.module_jit(lambda x: x)
    kernels = nnx.state(linear, nnx_utils.PathRegex(".*kernel"))
    assert set(nnx.to_pure_dict(kernels)) == {"kernel"}
    cast = nnx_utils.state_map(nnx.state(linear), nnx_utils.PathRegex("kernel"), lambda v: v.astype(jnp.bfloat16))
    dtypes = jax.tree.map(lambda x: x.dtype, nnx.to_pure_dict(cast))
    assert dtypes == {"kernel": jnp.bfloat16, "bias": jnp.float32}


def test_array_typing_typecheck_binds_dimensions_and_can_be_disabled():
    @at.typecheck
    def add(x: at.Float[at.Array, "b n"], y: at.Float[at.Array, "b n"]) -> at.Float[at.Array, "b n"]:
        return x + y

    assert add(jnp.ones((2, 3)), jnp.ones((2, 3))).shape == (2, 3)
    with pytest.raises(Exception, match="y"):
        add(jnp.ones((2, 3)), jnp.ones((3, 3)))
    with at.disable_typechecking():
        add(jnp.ones((2, 3)), jnp.ones((1, 3)))
    at.check_pytree_equality(expected={"a": np.ones(2)}, got={"a": np.zeros(2)}, check_shapes=True)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        at.check_pytree_equality(expected={"a": 1, "b": 2}, got={"a": 1})


def test_training_helpers_take_the_original_arguments(tmp_path):
    params = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
    mask = {"w": True, "b": False}
    tx = optimizer.create_optimizer(optimizer.AdamW(weight_decay=0.5), optimizer.CosineDecaySchedule(), mask)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert float(jnp.abs(updates["w"]).sum()) > 0
    assert float(jnp.abs(updates["b"]).sum()) == 0
    assert optimizer.SGD(lr=1e-3).create(1e-3) is not None

    mesh = sharding.make_mesh(1)
    with sharding.set_mesh(mesh):
        assert sharding.activation_sharding_constraint(jnp.ones((len(jax.devices()), 2))).shape[1] == 2
    shardings = sharding.fsdp_sharding(params, mesh, min_size_mbytes=1, log=True)
    assert all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(shardings))

    manager, resuming = checkpoints.initialize_checkpoint_dir(
        tmp_path / "run", keep_period=None, overwrite=False, resume=False
    )
    assert not resuming
    manager.close()


def test_paligemma_weight_loader_fills_paligemma_params_and_keeps_the_rest(tmp_path):
    npz = tmp_path / "pt_224.npz"
    np.savez(npz, **{"params/img/head/kernel": np.full((2, 3), 7.0, np.float32)})
    params = {
        "PaliGemma": {"img": {"head": {"kernel": np.zeros((2, 3), np.float32)}}},
        "action_out_proj": {"kernel": np.ones(2, np.float32)},
    }
    loaded = weight_loaders.PaliGemmaWeightLoader(params_url=str(npz)).load(params)
    np.testing.assert_array_equal(loaded["PaliGemma"]["img"]["head"]["kernel"], np.full((2, 3), 7.0))
    np.testing.assert_array_equal(loaded["action_out_proj"]["kernel"], np.ones(2))


def test_put_along_last_axis_and_left_to_right_align_as_the_original_names_them():
    out = pi0_fast.put_along_last_axis(jnp.zeros((2, 4)), jnp.array([[1], [3]]), jnp.array([[7.0], [9.0]]))
    np.testing.assert_array_equal(out, [[0, 7, 0, 0], [0, 0, 0, 9]])
    tokens, mask, attn = pi0_fast.left_to_right_align(
        jnp.arange(4), jnp.array([True, True, False, False]), jnp.eye(4, dtype=bool)
    )
    np.testing.assert_array_equal(tokens, [2, 3, 0, 1])
    np.testing.assert_array_equal(mask, [False, False, True, True])
    assert bool(attn[2, 2])
    assert not bool(attn[0, 2])
    assert utils.array_tree_to_info({"a": jnp.zeros((2, 3))}) == "['a']: (2, 3)@float32"
    assert nnx_utils.PathRegex("a.b", sep=".")(("a", "b"), None)


def test_siglip_sincos_posemb_and_lora_init_fn():
    embedding = siglip.posemb_sincos_2d(2, 3, 8)
    assert embedding.shape == (1, 6, 8)
    # Patch (row 0, col 0): sin 0, cos 0 for both axes.
    np.testing.assert_allclose(embedding[0, 0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-6)
    # Row 1, col 2 (index 5): the row quarter sees 1, the column quarter 2, at the lowest frequency 1.
    np.testing.assert_allclose(embedding[0, 5, [0, 4]], [np.sin(2.0), np.sin(1.0)], atol=1e-6)
    config = lora.LoRAConfig(rank=2, init_fn=jax.nn.initializers.ones)
    einsum = lora.Einsum((4, 3), init_fn=jax.nn.initializers.zeros, lora_config=config, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(einsum.lora_a[...], np.ones((4, 2)))
