"""SPC charts and funnel plots as PNG (services/quality_monitor/charts.py): Making Data Count
colours on the points that carry each kind of variation."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from services.quality_monitor.charts import BLUE, GREY, ORANGE, funnel_png, spc_png
from services.quality_monitor.funnel import Unit, funnel
from services.quality_monitor.spc import Direction, chart

PERIODS = [f"2026-{m:02d}" for m in range(1, 13)] + ["2027-01"]
STEADY = [5.0, 5.4, 4.8, 5.2, 5.1, 4.9, 5.3, 4.7, 5.0, 5.2, 4.9, 5.1]


def pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(png))[..., :3]


def has_colour(image: np.ndarray, hex_colour: str, tolerance: float = 0.02) -> bool:
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return bool((np.abs(image - rgb).max(axis=-1) < tolerance).any())


def test_a_concern_is_orange_and_common_cause_grey() -> None:
    c = chart([*STEADY, 9.0])
    assert c is not None
    image = pixels(spc_png("RKE: FFT % negative", PERIODS, c, Direction.UP, percent=True))
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert has_colour(image, ORANGE) and has_colour(image, GREY)


def test_the_same_point_is_blue_when_up_is_an_improvement() -> None:
    c = chart([*STEADY, 9.0])
    assert c is not None
    image = pixels(spc_png("RKE: FFT % positive", PERIODS, c, Direction.DOWN))
    assert has_colour(image, BLUE)
    assert c.point_types(Direction.DOWN)[-1].value == "special_cause_improvement"


def test_common_cause_only_has_no_orange_or_blue_points() -> None:
    c = chart([*STEADY, 5.0])
    assert c is not None
    image = pixels(spc_png("steady", PERIODS, c, Direction.UP))
    assert not has_colour(image, ORANGE, 0.01) and not has_colour(image, BLUE, 0.01)


def test_funnel_plot_marks_the_outlier() -> None:
    units = [Unit(k, e, n) for k, e, n in (("RJ1", 20, 400), ("RJ2", 22, 420), ("RJ7", 18, 380),
                                          ("RAX", 25, 500), ("RKE", 60, 450), ("RAN", 21, 410))]
    image = pixels(funnel_png("FFT % negative, inpatient, 2026-10", funnel(units)))
    assert has_colour(image, ORANGE)
