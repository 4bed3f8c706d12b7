"""Composable data transforms that turn robot/dataset samples into model inputs and model outputs back.

Every transform is a frozen dataclass called on one unbatched sample (a nested dict of numpy arrays) and
returning a new dict; inputs (their dicts and their arrays) are never modified in place, so callers (`Policy`, the
data loader) hand samples over without copying them. Nested keys are addressed with `/`, e.g.
`observation/state`.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import re
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from openpi.models import tokenizer as _tokenizer
from openpi.shared import normalize as _normalize
from openpi.shared import tree as _tree
from openpi_client import image_tools

DataDict: TypeAlias = dict[str, Any]
NormStats: TypeAlias = _normalize.NormStats

# Added to the scale in all four normalization formulas so that constant dimensions do not divide by zero.
_NORM_EPSILON = 1e-6


@runtime_checkable
class DataTransformFn(Protocol):
    """A transform of one data sample (a possibly nested dict of numpy arrays)."""

    def __call__(self, data: DataDict) -> DataDict: ...


@dataclasses.dataclass(frozen=True)
class Group:
    """Input transforms (robot → model) and the matching output transforms (model → robot)."""

    inputs: Sequence[DataTransformFn] = ()
    outputs: Sequence[DataTransformFn] = ()

    def push(self, *, inputs: Sequence[DataTransformFn] = (), outputs: Sequence[DataTransformFn] = ()) -> "Group":
        """Returns a new group with `inputs` run after the current inputs and `outputs` before the current outputs.

        Outputs go in front so that the output chain stays the mirror image of the input chain.
        """
        return Group(inputs=(*self.inputs, *inputs), outputs=(*outputs, *self.outputs))


@dataclasses.dataclass(frozen=True)
class CompositeTransform(DataTransformFn):
    """Applies `transforms` in order."""

    transforms: Sequence[DataTransformFn]

    def __call__(self, data: DataDict) -> DataDict:
        for transform in self.transforms:
            data = transform(data)
        return data


def compose(transforms: Sequence[DataTransformFn]) -> DataTransformFn:
    """Returns one transform that applies `transforms` in order."""
    return CompositeTransform(tuple(transforms))


@dataclasses.dataclass(frozen=True)
class RepackTransform(DataTransformFn):
    """Builds a new dict whose leaves are taken from the input by `/`-separated key paths.

    Example: `RepackTransform({"images": {"cam_high": "observation.images.top"}, "state": "observation/state"})`.
    A path may name a leaf or a whole sub-dict. Keys that are not mentioned are dropped.
    """

    structure: Mapping[str, Any]

    def __call__(self, data: DataDict) -> DataDict:
        flat = flatten_dict(data)

        def pick(node: Any, where: str) -> Any:
            if isinstance(node, Mapping):
                return {key: pick(value, f"{where}/{key}" if where else key) for key, value in node.items()}
            if not isinstance(node, str):
                raise TypeError(f"RepackTransform.structure/{where}: expected a key path string, got {node!r}")
            if node in flat:
                return flat[node]
            prefix = node + "/"
            subtree = {key[len(prefix) :]: value for key, value in flat.items() if key.startswith(prefix)}
            if not subtree:
                raise KeyError(f"{where}: source key {node!r} not found in data; available keys: {sorted(flat)}")
            return unflatten_dict(subtree)

        return pick(self.structure, "")


@dataclasses.dataclass(frozen=True)
class InjectDefaultPrompt(DataTransformFn):
    """Sets `prompt` to a default when the sample has none (a `None` default does nothing).

    The one place a default prompt takes effect. A data config's default (`ModelTransformFactory`, training and
    serving) and a policy's (`PolicyConfig.default_prompt`, e.g. `serve_policy.py --default_prompt`) both become this
    step; the policy's runs first in the chain, so it wins.
    """

    prompt: str | None

    def __call__(self, data: DataDict) -> DataDict:
        if self.prompt is None or "prompt" in data:
            return data
        return {**data, "prompt": self.prompt}


@dataclasses.dataclass(frozen=True)
class PromptFromLeRobotTask(DataTransformFn):
    """Sets `prompt` from the sample's `task_index` using the dataset's task table."""

    tasks: Mapping[int, str]

    def __call__(self, data: DataDict) -> DataDict:
        if "task_index" not in data:
            raise ValueError("task_index: required to look up the prompt, but missing from the sample")
        task_index = int(np.asarray(data["task_index"]).item())
        if task_index not in self.tasks:
            raise ValueError(f"task_index: {task_index} not in the task table (known: {sorted(self.tasks)})")
        return {**data, "prompt": self.tasks[task_index]}


@dataclasses.dataclass(frozen=True)
class Normalize(DataTransformFn):
    """Normalizes every key that has stats: z-score `(x - mean) / (std + 1e-6)`, or quantile [q01, q99] → [-1, 1].

    Stats are cut to the data's last dimension. Data dims beyond the stats are treated as mean 0 / std 1
    (z-score) or passed through (quantile), which makes this the exact inverse of `Unnormalize`.
    Quantile outputs are not clipped. With `strict`, every stats key must be present in the data.
    """

    norm_stats: Mapping[str, NormStats] | None
    use_quantiles: bool = False
    strict: bool = False

    def __post_init__(self):
        if self.norm_stats is not None and self.use_quantiles:
            _check_quantile_stats(self.norm_stats)

    def __call__(self, data: DataDict) -> DataDict:
        if self.norm_stats is None:
            return data
        normalize = _normalize_quantile if self.use_quantiles else _normalize_zscore
        return apply_tree(data, flatten_dict(self.norm_stats), normalize, strict=self.strict)


@dataclasses.dataclass(frozen=True)
class Unnormalize(DataTransformFn):
    """Inverse of `Normalize`; every stats key must be present in the data.

    z-score: `x * (std + 1e-6) + mean` with std padded by 1 and mean by 0 up to the data dim, so padded dims
    come out as `x * (1 + 1e-6)`. Quantile: `(x + 1) / 2 * (q99 - q01 + 1e-6) + q01` on the stats dims, the
    rest passed through unchanged.
    """

    norm_stats: Mapping[str, NormStats] | None
    use_quantiles: bool = False

    def __post_init__(self):
        if self.norm_stats is not None and self.use_quantiles:
            _check_quantile_stats(self.norm_stats)

    def __call__(self, data: DataDict) -> DataDict:
        if self.norm_stats is None:
            return data
        unnormalize = _unnormalize_quantile if self.use_quantiles else _unnormalize_zscore
        return apply_tree(data, flatten_dict(self.norm_stats), unnormalize, strict=True)


def _normalize_zscore(x: np.ndarray, stats: NormStats) -> np.ndarray:
    mean, std = _fit_to_dim(stats.mean, x, 0.0), _fit_to_dim(stats.std, x, 1.0)
    return (x - mean) / (std + _NORM_EPSILON)


def _unnormalize_zscore(x: np.ndarray, stats: NormStats) -> np.ndarray:
    mean, std = _fit_to_dim(stats.mean, x, 0.0), _fit_to_dim(stats.std, x, 1.0)
    return x * (std + _NORM_EPSILON) + mean


def _normalize_quantile(x: np.ndarray, stats: NormStats) -> np.ndarray:
    return _on_stats_dims(x, stats, lambda part, q01, q99: (part - q01) / (q99 - q01 + _NORM_EPSILON) * 2.0 - 1.0)


def _unnormalize_quantile(x: np.ndarray, stats: NormStats) -> np.ndarray:
    return _on_stats_dims(x, stats, lambda part, q01, q99: (part + 1.0) / 2.0 * (q99 - q01 + _NORM_EPSILON) + q01)


def _fit_to_dim(stat: np.ndarray, x: np.ndarray, pad_value: float) -> np.ndarray:
    """Cuts or pads a stats vector to the last dimension of `x`."""
    return pad_to_dim(np.asarray(stat)[..., : x.shape[-1]], x.shape[-1], value=pad_value)


def _on_stats_dims(x: np.ndarray, stats: NormStats, fn: Callable[..., np.ndarray]) -> np.ndarray:
    """Applies `fn(x, q01, q99)` to the dims covered by the quantile stats; other dims pass through."""
    dim = min(stats.q01.shape[-1], x.shape[-1])
    result = fn(x[..., :dim], stats.q01[..., :dim], stats.q99[..., :dim])
    if dim == x.shape[-1]:
        return result
    return np.concatenate([result, x[..., dim:]], axis=-1)


def _check_quantile_stats(norm_stats: Mapping[str, NormStats]) -> None:
    for key, stats in flatten_dict(norm_stats).items():
        if stats.q01 is None or stats.q99 is None:
            raise ValueError(
                f"norm_stats/{key}: quantile normalization needs q01 and q99; recompute the stats "
                "with scripts/compute_norm_stats.py"
            )


@dataclasses.dataclass(frozen=True)
class ResizeImages(DataTransformFn):
    """Resizes every `image/*` (uint8 HWC) to `height`×`width`, keeping the aspect ratio and zero-padding."""

    height: int
    width: int

    def __call__(self, data: DataDict) -> DataDict:
        if "image" not in data:
            raise KeyError(f"image: required by ResizeImages, but the sample only has keys {sorted(data)}")
        images = {
            name: image_tools.resize_with_pad(np.asarray(image), self.height, self.width)
            for name, image in data["image"].items()
        }
        return {**data, "image": images}


@dataclasses.dataclass(frozen=True)
class SubsampleActions(DataTransformFn):
    """Keeps every `stride`-th action of the chunk."""

    stride: int

    def __call__(self, data: DataDict) -> DataDict:
        if "actions" not in data:
            return data
        return {**data, "actions": np.asarray(data["actions"])[:: self.stride]}


@dataclasses.dataclass(frozen=True)
class DeltaActions(DataTransformFn):
    """Turns absolute actions into actions relative to the current state on the masked dims.

    `mask` (see `make_bool_mask`) may be shorter than the action dim; later dims stay absolute. `None`
    disables the transform. Samples without `actions` (inference) pass through.
    """

    mask: Sequence[bool] | None

    def __call__(self, data: DataDict) -> DataDict:
        return _shift_actions(data, self.mask, sign=-1)


@dataclasses.dataclass(frozen=True)
class AbsoluteActions(DataTransformFn):
    """Inverse of `DeltaActions`: adds the current state back onto the masked action dims."""

    mask: Sequence[bool] | None

    def __call__(self, data: DataDict) -> DataDict:
        return _shift_actions(data, self.mask, sign=1)


def _shift_actions(data: DataDict, mask: Sequence[bool] | None, *, sign: int) -> DataDict:
    """Adds `sign * state` to the masked dims of every action in the chunk."""
    if mask is None or "actions" not in data:
        return data
    mask = np.asarray(mask, dtype=bool)
    dims = mask.shape[-1]
    if "state" not in data:
        raise KeyError("state: required to convert between delta and absolute actions, but missing")
    state, actions = np.asarray(data["state"]), np.array(data["actions"], copy=True)
    if state.shape[-1] < dims or actions.shape[-1] < dims:
        raise ValueError(
            f"state/actions: the delta mask covers {dims} dims, got state {state.shape} and actions {actions.shape}"
        )
    actions[..., :dims] += sign * np.expand_dims(np.where(mask, state[..., :dims], 0), axis=-2)
    return {**data, "actions": actions}


@dataclasses.dataclass(frozen=True)
class TokenizePrompt(DataTransformFn):
    """Replaces `prompt` by `tokenized_prompt` (int32) and `tokenized_prompt_mask` (bool).

    A sample without a prompt is refused: `InjectDefaultPrompt`, earlier in the chain, supplies a default
    (`default_prompt` here, as the original README's fine-tuning guide passes it, applies that same step). With
    `discrete_state_input` (pi0.5) the normalized `state` is written into the prompt as well, so this runs after
    `Normalize` and before `PadStatesAndActions`: the prompt shows the robot's own state dims.
    """

    tokenizer: _tokenizer.PaligemmaTokenizer
    discrete_state_input: bool = False
    default_prompt: str | None = None

    def __call__(self, data: DataDict) -> DataDict:
        data = dict(InjectDefaultPrompt(self.default_prompt)(data))
        prompt = data.pop("prompt", None)
        if prompt is None:
            raise ValueError("prompt: required (a string), but the sample has none and no default prompt was set")
        state = (
            _required_state(data, "TokenizePrompt(discrete_state_input=True)") if self.discrete_state_input else None
        )
        tokens, mask = self.tokenizer.tokenize(_as_str(prompt), state)
        return {
            **data,
            "tokenized_prompt": np.asarray(tokens, np.int32),
            "tokenized_prompt_mask": np.asarray(mask, bool),
        }


@dataclasses.dataclass(frozen=True)
class TokenizeFASTInputs(DataTransformFn):
    """pi0-FAST: replaces `prompt` by `tokenized_prompt`, `tokenized_prompt_mask`, `token_ar_mask` and
    `token_loss_mask` built from the prompt, the normalized `state` and, when training, the normalized `actions`
    (which stay in the sample; the model reads them from the tokens)."""

    tokenizer: _tokenizer.FASTTokenizer

    def __call__(self, data: DataDict) -> DataDict:
        data = dict(data)
        prompt = data.pop("prompt", None)
        if prompt is None:
            raise ValueError("prompt: required (a string) by pi0-FAST, but the sample has none")
        state = _required_state(data, "TokenizeFASTInputs")
        actions = data.get("actions")
        tokens, token_mask, ar_mask, loss_mask = self.tokenizer.tokenize(
            _as_str(prompt), state, None if actions is None else np.asarray(actions)
        )
        return {
            **data,
            "tokenized_prompt": np.asarray(tokens, np.int32),
            "tokenized_prompt_mask": np.asarray(token_mask, bool),
            "token_ar_mask": np.asarray(ar_mask, np.int32),
            "token_loss_mask": np.asarray(loss_mask, bool),
        }


@dataclasses.dataclass(frozen=True)
class ExtractFASTActions(DataTransformFn):
    """pi0-FAST output: turns `actions`, the token ids the model generated, into the action chunk
    `[action_horizon, action_dim]` they encode (zeros, with a logged warning, when they encode none)."""

    tokenizer: _tokenizer.FASTTokenizer
    action_horizon: int
    action_dim: int

    def __call__(self, data: DataDict) -> DataDict:
        if "actions" not in data:
            return data
        tokens = np.asarray(data["actions"])
        if tokens.ndim != 1:
            raise ValueError(f"actions: expected the 1-d token ids of one sample, got shape {tokens.shape}")
        actions = self.tokenizer.extract_actions(tokens.astype(np.int32), self.action_horizon, self.action_dim)
        return {**data, "actions": actions}


def _required_state(data: DataDict, user: str) -> np.ndarray:
    if "state" not in data:
        raise KeyError(f"state: required by {user} (it is written into the prompt), but missing from the sample")
    state = np.asarray(data["state"])
    if state.ndim != 1:
        raise ValueError(f"state: expected a 1-d state of one sample, got shape {state.shape}")
    return state


def _as_str(prompt: Any) -> str:
    """Accepts a prompt as str, bytes or a 0-d numpy string array."""
    if isinstance(prompt, np.ndarray) and prompt.ndim == 0:
        prompt = prompt.item()
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a string, got {type(prompt).__name__}")
    return prompt


@dataclasses.dataclass(frozen=True)
class PadStatesAndActions(DataTransformFn):
    """Zero-pads `state` and (if present) `actions` to the model's action dimension."""

    model_action_dim: int

    def __call__(self, data: DataDict) -> DataDict:
        data = {**data, "state": pad_to_dim(np.asarray(data["state"]), self.model_action_dim)}
        if "actions" in data:
            data["actions"] = pad_to_dim(np.asarray(data["actions"]), self.model_action_dim)
        return data


def flatten_dict(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Flattens nested dicts into one level with `/`-joined keys (empty sub-dicts vanish)."""
    return _tree.flatten(tree, sep="/")


def unflatten_dict(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_dict`."""
    return _tree.unflatten(flat, sep="/")


def transform_dict(patterns: Mapping[str, str | None], tree: Mapping[str, Any]) -> dict[str, Any]:
    """Renames (or drops) the leaves of a nested dict by regex on their `/`-joined paths, e.g. to map a checkpoint's
    param tree onto a model's.

    Each path is matched in order against the keys of `patterns`, which must match the whole path; the first match
    renames it with `re.sub` semantics (backreferences like `\\1` allowed), or drops the leaf when its value is None.
    Paths that match no pattern keep their name. Two leaves renamed to one path, or a leaf renamed onto a parent of
    another, raise a ValueError.
    """
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in patterns.items()]
    renamed: dict[str, Any] = {}
    for path, value in flatten_dict(tree).items():
        new_path = path
        for pattern, replacement in compiled:
            if pattern.fullmatch(path):
                new_path = None if replacement is None else pattern.sub(replacement, path, count=1)
                break
        if new_path is None:
            continue
        if new_path in renamed:
            raise ValueError(f"{path}: renamed to {new_path!r}, which another leaf was already renamed to")
        renamed[new_path] = value
    return unflatten_dict(renamed)


def apply_tree(
    tree: Mapping[str, Any], selector: Mapping[str, Any], fn: Callable[[Any, Any], Any], *, strict: bool = False
) -> dict[str, Any]:
    """Returns `tree` with each leaf whose `/`-path is a path of `selector` (nested or already flat) replaced by
    `fn(leaf, selector[path])`.

    The structure of `tree` is kept. With `strict`, every selector path must be found in `tree`.
    """
    selector = flatten_dict(selector)
    found = set()

    def visit(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        result = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                result[key] = visit(value, path + "/")
            elif path in selector:
                found.add(path)
                result[key] = fn(np.asarray(value), selector[path])
            else:
                result[key] = value
        return result

    result = visit(tree, "")
    if strict and (missing := sorted(set(selector) - found)):
        raise KeyError(f"{', '.join(missing)}: have norm stats but are missing from the data")
    return result


def pad_to_dim(x: np.ndarray, target_dim: int, axis: int = -1, value: float = 0.0) -> np.ndarray:
    """Pads `x` along `axis` with `value` up to `target_dim`; longer arrays are returned unchanged."""
    current_dim = x.shape[axis]
    if current_dim >= target_dim:
        return x
    pad_width = [(0, 0)] * x.ndim
    pad_width[axis] = (0, target_dim - current_dim)
    return np.pad(x, pad_width, constant_values=value)


def make_bool_mask(*dims: int) -> tuple[bool, ...]:
    """Builds a mask from run lengths: positive n → n times True, negative n → |n| times False.

    `make_bool_mask(6, -1, 6, -1)` masks the joints but not the grippers of a 14-d bimanual robot.
    """
    return tuple(flag for dim in dims for flag in [dim > 0] * abs(dim))


def to_hwc_uint8(image: Any, *, name: str = "image") -> np.ndarray:
    """Returns an image as uint8 `[h, w, 3]`; accepts CHW or HWC, uint8 or float in [0, 1].

    LeRobot datasets store float32 CHW images while robots send uint8 HWC, so policies accept both.
    """
    image = image_tools.convert_to_uint8(np.asarray(image))
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 or float image, got dtype {image.dtype}")
    if image.ndim != 3 or 3 not in (image.shape[0], image.shape[-1]):
        raise ValueError(f"{name}: expected an RGB image [h, w, 3] or [3, h, w], got shape {image.shape}")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = np.transpose(image, (1, 2, 0))
    return image


def check_last_dim(x: Any, dim: int, *, name: str) -> np.ndarray:
    """Returns `x` as an array after checking that its last axis has `dim` entries."""
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"{name}: expected shape [..., {dim}], got {x.shape}")
    return x
