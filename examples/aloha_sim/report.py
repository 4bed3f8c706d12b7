"""The demo's results for people: success rate with its Wilson interval, loss curve, per-seed chart, contact sheet."""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display

from matplotlib import pyplot as plt
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from openpi.shared import fileio

SUCCESS_COLOUR = (60, 200, 60)
FAILURE_COLOUR = (230, 50, 50)
# The transfer-cube task's rewards, as gym-aloha counts them.
REWARD_LABELS = ("0 nothing", "1 touched", "2 lifted", "3 both grippers", "4 handed over")


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a success rate (95 % for the default z): (low, high), both in [0, 1]."""
    if trials < 1:
        raise ValueError(f"trials: expected >= 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes: expected 0..{trials}, got {successes}")
    rate = successes / trials
    denominator = 1 + z**2 / trials
    centre = (rate + z**2 / (2 * trials)) / denominator
    half_width = z * math.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def _save(figure, path: pathlib.Path) -> pathlib.Path:
    with fileio.atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)
    return path


def loss_curve(metrics_path: pathlib.Path, path: pathlib.Path, title: str) -> pathlib.Path:
    """Training loss per logged step (log scale) from a `metrics.jsonl`, with the learning rate on a second axis."""
    records = [json.loads(line) for line in pathlib.Path(metrics_path).read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{metrics_path}: no metrics recorded")
    steps = [record["step"] for record in records]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.plot(steps, [record["loss"] for record in records], color="tab:blue", label="training loss (flow matching)")
    axis.set_yscale("log")
    axis.set_xlabel("training step")
    axis.set_ylabel("loss (log scale)", color="tab:blue")
    axis.grid(True, which="both", alpha=0.3)
    if all("learning_rate" in record for record in records):
        rate_axis = axis.twinx()
        rate_axis.plot(steps, [record["learning_rate"] for record in records], color="tab:gray", linestyle="--")
        rate_axis.set_ylabel("learning rate (dashed)", color="tab:gray")
    axis.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def seeds_chart(
    seeds: Sequence[int],
    policy_rewards: Sequence[int],
    policy_successes: Sequence[bool],
    expert_rewards: Sequence[int],
    path: pathlib.Path,
    title: str,
) -> pathlib.Path:
    """Highest task reward per evaluation seed, policy beside the scripted expert; policy successes filled and marked
    o, failures hollow and marked x."""
    if not len(seeds) == len(policy_rewards) == len(policy_successes) == len(expert_rewards):
        raise ValueError("seeds_chart: seeds, rewards and successes must have one entry per episode")
    x = np.arange(len(seeds))
    figure, axis = plt.subplots(figsize=(max(8, 0.25 * len(seeds) + 2), 4.5))
    axis.bar(x - 0.2, expert_rewards, width=0.4, color="lightgray", edgecolor="gray", label="scripted expert")
    colours = ["tab:green" if success else "white" for success in policy_successes]
    axis.bar(x + 0.2, policy_rewards, width=0.4, color=colours, edgecolor="tab:green", label="policy")
    # A mark on every policy episode, so that one that reached nothing still shows: o success, x failure.
    for success, marker, colour in ((True, "o", "tab:green"), (False, "x", "tab:red")):
        chosen = [i for i, episode_success in enumerate(policy_successes) if episode_success == success]
        axis.scatter(x[chosen] + 0.2, np.asarray(policy_rewards)[chosen], marker=marker, color=colour, zorder=3)
    axis.set_xticks(x, [str(seed) for seed in seeds], rotation=90, fontsize=7)
    axis.set_yticks(range(len(REWARD_LABELS)), REWARD_LABELS)
    axis.set_ylim(-0.3, len(REWARD_LABELS) - 0.5)
    axis.set_xlabel("evaluation seed")
    axis.set_ylabel("highest task reward")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def contact_sheet(
    frames: Sequence[np.ndarray],
    labels: Sequence[str],
    successes: Sequence[bool],
    path: pathlib.Path,
    columns: int = 8,
    tile_width: int = 240,
) -> pathlib.Path:
    """One PNG of every episode's last frame (HWC uint8) in a grid, each framed green (success) or red (failure)
    and labelled underneath."""
    if not frames or not len(frames) == len(labels) == len(successes):
        raise ValueError("contact_sheet: expected one or more frames, with one label and one outcome each")
    height, width = frames[0].shape[:2]
    tile_height = round(height * tile_width / width)
    border, label_height = 4, 20
    cell_width, cell_height = tile_width + 2 * border, tile_height + 2 * border + label_height
    columns = min(columns, len(frames))
    rows = math.ceil(len(frames) / columns)
    sheet = PIL.Image.new("RGB", (columns * cell_width, rows * cell_height), "white")
    draw = PIL.ImageDraw.Draw(sheet)
    font = PIL.ImageFont.load_default(size=13)
    for index, (frame, label, success) in enumerate(zip(frames, labels, successes, strict=True)):
        left, top = index % columns * cell_width, index // columns * cell_height
        colour = SUCCESS_COLOUR if success else FAILURE_COLOUR
        draw.rectangle([left, top, left + cell_width - 1, top + tile_height + 2 * border - 1], fill=colour)
        tile = PIL.Image.fromarray(frame).resize((tile_width, tile_height), PIL.Image.Resampling.BILINEAR)
        sheet.paste(tile, (left + border, top + border))
        draw.text((left + border, top + tile_height + 2 * border + 2), label, fill=colour, font=font)
    with fileio.atomic_write(path) as f:
        sheet.save(f, format="PNG")
    return path
