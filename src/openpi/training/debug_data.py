"""Offline stand-ins for the debug configs: character-level prompt tokenizers and a small generated ALOHA dataset.

None needs the network. The tokenizer is a sentencepiece CHAR model built in code (so it is byte-identical on
every machine) with the PaliGemma special ids (pad 0, eos 1, bos 2, unk 3); it has `TOKENIZER_VOCAB_SIZE`
pieces, so a model with at least that many embeddings can read its tokens. The pi0-FAST variant appends
user-defined action pieces up to `FAST_TOKENIZER_VOCAB_SIZE`, so that every FAST id maps above the characters,
and comes with a FAST vocabulary fitted on generated smooth chunks. The dataset is written with our
LeRobot writer on first use and has learnable structure: the action chunk is a fixed function of the state,
the prompt (which sets the direction of motion) and the frame's position in the episode (shown in the images).
"""

import os
import pathlib
import shutil
import string

import filelock
import numpy as np
from sentencepiece import sentencepiece_model_pb2

from openpi.lerobot import lerobot_dataset
from openpi.models import fast_tokenizer as _fast_tokenizer
from openpi.models import tokenizer as _tokenizer
from openpi.shared import download
from openpi.shared import fileio as _fileio

# Printable ASCII, the word-boundary marker and newline, after the four special pieces.
_CHAR_PIECES = ("\n", "\u2581", *string.ascii_letters, *string.digits, *string.punctuation)
TOKENIZER_VOCAB_SIZE = 4 + len(_CHAR_PIECES)
# The debug FAST vocabulary has at most this many tokens; the pi0-FAST sentencepiece model then has exactly enough
# pieces that the lowest mapped action id (`size - 1 - FAST_SKIP_TOKENS - (FAST_ACTION_VOCAB_SIZE - 1)`) is the
# first id after the characters.
FAST_ACTION_VOCAB_SIZE = 512
FAST_TOKENIZER_VOCAB_SIZE = TOKENIZER_VOCAB_SIZE + FAST_ACTION_VOCAB_SIZE + _tokenizer.FAST_SKIP_TOKENS
# Bump when the generated chunks or the fit change, so that stale cached vocabularies are not reused.
_FAST_VOCAB_VERSION = 1
_FAST_SCALE = 10
_FAST_FIT_CHUNKS = 512

DEBUG_ALOHA_REPO_ID = "openpi/debug_aloha"
DEBUG_ALOHA_TASKS = ("transfer cube", "lift cube")
ALOHA_CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
_ALOHA_DIM = 14


def _char_tokenizer_proto(*, num_action_pieces: int = 0, add_dummy_prefix: bool = True) -> bytes:
    """The character model; `num_action_pieces` user-defined pieces `<act0000>`, ... follow the characters (they
    decode to their name and encode back to their id, so action tokens survive a trip through text)."""
    model = sentencepiece_model_pb2.ModelProto()
    spec = model.trainer_spec
    spec.model_type = sentencepiece_model_pb2.TrainerSpec.CHAR
    spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = 0, 1, 2, 3
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = add_dummy_prefix
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    piece_type = sentencepiece_model_pb2.ModelProto.SentencePiece
    for name, kind in (
        ("<pad>", piece_type.CONTROL),
        ("</s>", piece_type.CONTROL),
        ("<s>", piece_type.CONTROL),
        ("<unk>", piece_type.UNKNOWN),
    ):
        model.pieces.add(piece=name, type=kind, score=0.0)
    for char in _CHAR_PIECES:
        model.pieces.add(piece=char, type=piece_type.NORMAL, score=-1.0)
    for index in range(num_action_pieces):
        model.pieces.add(piece=f"<act{index:04d}>", type=piece_type.USER_DEFINED, score=0.0)
    spec.vocab_size = len(model.pieces)
    return model.SerializeToString(deterministic=True)


def tokenizer_path() -> pathlib.Path:
    """The debug tokenizer model file in the cache (`$OPENPI_DATA_HOME/debug/char_tokenizer.model`), written
    atomically on first use."""
    path = download.get_cache_dir() / "debug" / "char_tokenizer.model"
    proto = _char_tokenizer_proto()
    if path.is_file() and path.read_bytes() == proto:
        return path
    _fileio.atomic_write_bytes(path, proto)
    return path


def make_tokenizer(max_len: int) -> _tokenizer.PaligemmaTokenizer:
    """A PaligemmaTokenizer (same prompt layout) reading the debug character model."""
    return _tokenizer.PaligemmaTokenizer(max_len, path=tokenizer_path())


def fast_tokenizer_path() -> pathlib.Path:
    """The pi0-FAST debug sentencepiece model (`FAST_TOKENIZER_VOCAB_SIZE` pieces) in the cache, written atomically on
    first use. Like PaliGemma's it adds no dummy prefix, so text decoded from tokens encodes back to them."""
    path = download.get_cache_dir() / "debug" / "char_fast_tokenizer.model"
    proto = _char_tokenizer_proto(
        num_action_pieces=FAST_TOKENIZER_VOCAB_SIZE - TOKENIZER_VOCAB_SIZE, add_dummy_prefix=False
    )
    if path.is_file() and path.read_bytes() == proto:
        return path
    _fileio.atomic_write_bytes(path, proto)
    return path


def fast_action_tokenizer_dir(action_horizon: int, action_dim: int) -> pathlib.Path:
    """A FAST vocabulary for chunks `[action_horizon, action_dim]`, fitted on first use on generated smooth chunks
    (deterministic) and cached in `$OPENPI_DATA_HOME/debug/`; the directory appears in one rename when complete."""
    if action_horizon < 1 or action_dim < 1:
        raise ValueError(f"action_horizon, action_dim: expected positive sizes, got {action_horizon}, {action_dim}")
    name = f"fast_v{_FAST_VOCAB_VERSION}_h{action_horizon}_d{action_dim}"
    directory = download.get_cache_dir() / "debug" / name
    if directory.is_dir():
        return directory
    chunks = _smooth_action_chunks(_FAST_FIT_CHUNKS, action_horizon, action_dim)
    vocabulary = _fast_tokenizer.FASTActionTokenizer.fit(chunks, scale=_FAST_SCALE, vocab_size=FAST_ACTION_VOCAB_SIZE)
    staging = _fileio.staging_dir(directory.parent, f".{name}.tmp-")
    try:
        vocabulary.save(staging)
        os.replace(staging, directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not directory.is_dir():
            raise
        # Another process published the same vocabulary first.
    return directory


def _smooth_action_chunks(count: int, action_horizon: int, action_dim: int) -> np.ndarray:
    """Sinusoids of random amplitude (up to 2.5, which covers the debug dataset's actions after z-score or quantile
    normalization), speed and phase: `[count, action_horizon, action_dim]`, the same on every machine."""
    rng = np.random.default_rng(0)
    amplitude = rng.uniform(0.0, 2.5, size=(count, 1, action_dim))
    speed = rng.uniform(-0.3, 0.3, size=(count, 1, action_dim))
    phase = rng.uniform(0.0, 2 * np.pi, size=(count, 1, action_dim))
    steps = np.arange(action_horizon)[None, :, None]
    return amplitude * np.cos(phase + speed * steps)


def make_fast_tokenizer(max_len: int, action_horizon: int, action_dim: int) -> _tokenizer.FASTTokenizer:
    """A FASTTokenizer (pi0-FAST's token layout) reading the debug character model and a debug FAST vocabulary for
    chunks `[action_horizon, action_dim]`; its ids are below `FAST_TOKENIZER_VOCAB_SIZE`."""
    return _tokenizer.FASTTokenizer(
        max_len, fast_action_tokenizer_dir(action_horizon, action_dim), path=fast_tokenizer_path()
    )


def _episode(rng: np.random.Generator, task_index: int, length: int, image_size: int) -> list[dict]:
    """States rotate in 7 planes at a constant angular speed whose sign is set by the task; each action is the
    next state (a position target). The top camera's brightness shows the progress through the episode."""
    angle = 0.15 if task_index == 0 else -0.15
    radius = rng.uniform(0.3, 1.0, size=_ALOHA_DIM // 2)
    phase = rng.uniform(0, 2 * np.pi, size=_ALOHA_DIM // 2)
    steps = np.arange(length + 1)[:, None]
    angles = phase + angle * steps
    states = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=-1).reshape(length + 1, _ALOHA_DIM)
    states = states.astype(np.float32)
    frames = []
    for t in range(length):
        progress = t / max(1, length - 1)
        shade = lambda values: np.clip((np.asarray(values) + 1.0) * 127.5, 0, 255).astype(np.uint8)  # noqa: E731
        images = {
            "cam_high": np.full((image_size, image_size, 3), shade([2 * progress - 1, task_index - 0.5, 0.0])),
            "cam_left_wrist": np.full((image_size, image_size, 3), shade(states[t, 0:3])),
            "cam_right_wrist": np.full((image_size, image_size, 3), shade(states[t, 7:10])),
        }
        frame = {
            "observation.state": states[t],
            "action": states[t + 1],
            "task": DEBUG_ALOHA_TASKS[task_index],
        }
        frame |= {f"observation.images.{name}": image for name, image in images.items()}
        frames.append(frame)
    return frames


def ensure_aloha_dataset(
    repo_id: str = DEBUG_ALOHA_REPO_ID,
    root: str | pathlib.Path | None = None,
    *,
    num_episodes: int = 8,
    episode_length: int = 30,
    image_size: int = 32,
    seed: int = 0,
) -> pathlib.Path:
    """Writes the generated ALOHA-shaped dataset at `root` (default `$HF_LEROBOT_HOME/<repo_id>`) unless it is
    already there; returns `root`. Written to a temp directory and renamed, under a file lock, so concurrent
    callers and crashes never see a partial dataset."""
    root = pathlib.Path(root) if root is not None else lerobot_dataset.hf_lerobot_home() / repo_id
    root.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root.parent / f".{root.name}.lock")):
        if root.is_dir():
            return root
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        features = {
            "observation.state": {"dtype": "float32", "shape": (_ALOHA_DIM,), "names": None},
            "action": {"dtype": "float32", "shape": (_ALOHA_DIM,), "names": None},
        }
        features |= {
            f"observation.images.{name}": {
                "dtype": "image",
                "shape": (image_size, image_size, 3),
                "names": ["height", "width", "channels"],
            }
            for name in ALOHA_CAMERAS
        }
        dataset = lerobot_dataset.LeRobotDataset.create(
            repo_id, fps=50, features=features, root=tmp, robot_type="aloha", use_videos=False
        )
        rng = np.random.default_rng(seed)
        for episode in range(num_episodes):
            for frame in _episode(rng, episode % len(DEBUG_ALOHA_TASKS), episode_length, image_size):
                dataset.add_frame(frame)
            dataset.save_episode()
        dataset.finalize()
        os.replace(tmp, root)
    return root
