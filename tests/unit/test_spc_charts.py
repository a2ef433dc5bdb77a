"""SPC charts and funnel plots as PNG (services/quality_monitor/charts.py): Making Data Count
colours on the points that carry each kind of variation."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from services.quality_monitor.charts import (
    BLUE,
    GREY,
    ORANGE,
    TARGET,
    funnel_figure,
    funnel_png,
    label_boxes,
    render,
    spc_figure,
    spc_png,
)
from services.quality_monitor.funnel import Funnel, Unit, funnel
from services.quality_monitor.spc import Direction, SpcOptions, chart

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


# -- charts people read (issue 16) -----------------------------------------------------------

def crowded_funnel() -> Funnel:
    """Ten providers far above the rest, close together: their labels would overlap (limits
    without the overdispersion adjustment, which would absorb so many)."""
    units = [Unit(f"RA{i}", 29 + i % 3, 500) for i in range(40)]
    units += [Unit(f"RH{i}", 88 + i, 400 + 3 * i) for i in range(10)]
    return funnel(units, overdispersion=False)


def test_funnel_labels_only_outliers_and_the_selected_provider_without_overlaps() -> None:
    f = crowded_funnel()
    outliers = [p.key for p in f.points if p.band.value in ("above_99.8", "below_99.8")]
    assert len(outliers) == 10 and "RA3" not in outliers
    names = {k: f"Provider {k} NHS Foundation Trust" for k in outliers}
    fig = funnel_figure("FFT % negative, inpatient, 2026-10", f, names=names, selected="RA3")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "provider-label"]
    assert len(texts) == len(outliers) + 1
    assert any(t.startswith("Provider RH0 NHS Foundation Trust (RH0)") for t in texts)
    assert any(t.startswith("RA3:") for t in texts)  # the selected one, named by its code
    boxes = label_boxes(fig)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_funnel_subtitle_is_plain_english_with_an_overdispersion_footnote() -> None:
    units = [Unit(k, e, n) for k, e, n in (("RJ1", 20, 400), ("RJ2", 22, 420), ("RJ7", 18, 380),
                                          ("RAX", 25, 500), ("RKE", 60, 450), ("RAN", 21, 410))]
    f = funnel(units)
    assert f.adjusted and f.tau2 > 0
    words = " ".join(t.get_text().replace("\n", " ") for t in funnel_figure("FFT", f).texts)
    assert "Each dot is one of 6 providers" in words
    assert "further from the average than chance explains" in words
    assert "* The limits are widened: providers differ from each other more than chance" in words
    assert "tau" not in words
    plain = " ".join(t.get_text().replace("\n", " ")
                     for t in funnel_figure("FFT", crowded_funnel()).texts)
    assert "these limits do not allow for it" in plain  # the adjustment switched off


def test_spc_chart_as_svg_with_icons_target_and_rebase_line() -> None:
    before = [10.0, 11, 10, 12, 11, 10, 11, 12, 10, 11, 10, 11]
    after = [6.0, 7, 6, 5, 6, 7, 6, 5, 6, 7, 6, 5, 9.5]
    c = chart(before + after, SpcOptions(), [12])
    assert c is not None
    periods = [f"{2025 + i // 12}-{i % 12 + 1:02d}" for i in range(25)]
    fig = spc_figure("Example (RXX): FFT % negative", periods, c, Direction.UP, percent=True,
                     target=8, rebase_notes={12: "new discharge lounge"})
    svg = render(fig, "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
    words = " ".join(t.get_text() for t in fig.texts)
    assert "a change for the worse that chance does not explain" in words
    assert "sometimes meet and sometimes miss" in words  # the target is inside the limits
    assert any("rebased from 2026-01: new discharge lounge" in t.get_text()
               for ax in fig.axes for t in ax.texts)
    icon_letters = [t.get_text() for ax in fig.axes for t in ax.texts if len(t.get_text()) == 1]
    assert icon_letters == ["H", "?"]  # concern (high); hit and miss
    image = pixels(render(fig, "png"))
    assert has_colour(image, TARGET, 0.08) and has_colour(image, ORANGE)
