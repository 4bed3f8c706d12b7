"""report.py: the Wilson interval, and the figures the demo writes (contact sheet, per-seed chart, loss curve)."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from .. import example_modules

(report,) = example_modules.load("aloha_sim", "report")


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [(8, 10, (0.4902, 0.9433)), (0, 10, (0.0, 0.2775)), (40, 40, (0.9124, 1.0)), (34, 40, (0.7093, 0.9294))],
)
def test_wilson_interval_matches_the_textbook_values(successes, trials, expected):
    low, high = report.wilson_interval(successes, trials)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize(
    ("successes", "trials", "field"), [(1, 0, "trials"), (5, 4, "successes"), (-1, 4, "successes")]
)
def test_wilson_interval_names_the_bad_argument(successes, trials, field):
    with pytest.raises(ValueError, match=field):
        report.wilson_interval(successes, trials)


def test_contact_sheet_frames_successes_green_and_failures_red(tmp_path):
    frames = [np.full((24, 32, 3), value, np.uint8) for value in (0, 100, 200)]
    path = report.contact_sheet(
        frames, ["seed 1", "seed 2", "seed 3"], [True, False, True], tmp_path / "sheet.png", columns=2, tile_width=64
    )
    sheet = np.asarray(PIL.Image.open(path).convert("RGB"))
    cell_width, cell_height = 64 + 8, 48 + 8 + 20  # tile, border on both sides, label underneath
    assert sheet.shape == (2 * cell_height, 2 * cell_width, 3)
    assert tuple(sheet[1, 1]) == report.SUCCESS_COLOUR  # top-left border of episode 0
    assert tuple(sheet[1, cell_width + 1]) == report.FAILURE_COLOUR  # episode 1
    assert tuple(sheet[cell_height + 1, 1]) == report.SUCCESS_COLOUR  # episode 2, second row
    assert tuple(sheet[20, cell_width + 20]) == (100, 100, 100)  # episode 1's frame, scaled into its tile


def test_contact_sheet_needs_one_label_and_outcome_per_frame(tmp_path):
    with pytest.raises(ValueError, match="one label and one outcome"):
        report.contact_sheet([np.zeros((8, 8, 3), np.uint8)], ["a", "b"], [True], tmp_path / "sheet.png")


def test_loss_curve_and_seeds_chart_are_pngs(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(json.dumps({"step": s, "loss": 2.0 / (s + 1), "lr": 1e-3}) + "\n" for s in range(0, 500, 50))
    )
    curve = PIL.Image.open(report.loss_curve(metrics, tmp_path / "loss.png", "a run"))
    assert curve.format == "PNG"
    assert curve.size == (800, 450)
    chart = PIL.Image.open(
        report.seeds_chart([7, 8, 9], [4, 2, 0], [True, False, False], [4, 4, 4], tmp_path / "seeds.png", "3 seeds")
    )
    assert chart.format == "PNG"
    with pytest.raises(ValueError, match="one entry per episode"):
        report.seeds_chart([7, 8], [4], [True], [4], tmp_path / "bad.png", "mismatch")


def test_loss_curve_of_an_empty_metrics_file_is_an_error(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("")
    with pytest.raises(ValueError, match="no metrics"):
        report.loss_curve(metrics, tmp_path / "loss.png", "empty")
