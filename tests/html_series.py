"""What an HTML report's plots draw, read back from the SVG: each named series' data
(``data-series``) and the vertices of its drawn line (``<g id="series-NAME"><path d=...>``),
shared by the unit and the integration test of the HTML report."""

from __future__ import annotations

import html
import json
import re

import numpy as np


def figure(page: str, plot: str) -> str:
    m = re.search(rf'<figure id="plot-{plot}".*?</figure>', page, re.S)
    assert m, f"plot {plot} is missing"
    return m.group(0)


def series(fig: str) -> dict[str, list[tuple[float, float]]]:
    m = re.search(r'<svg data-series="([^"]*)"', fig)
    assert m, "the plot carries no data-series"
    data = json.loads(html.unescape(m.group(1)))
    return {k: [(float(x), float(y)) for x, y in v] for k, v in data.items()}


def drawn(fig: str, name: str) -> list[tuple[float, float]]:
    """The vertices of the line drawn for series ``name`` (SVG user units)."""
    m = re.search(rf'<g id="series-{re.escape(name)}">\s*<path d="([^"]*)"', fig)
    assert m, f"series {name} is not drawn"
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", m.group(1))]
    return list(zip(nums[0::2], nums[1::2], strict=True))


def affine_residual(data: list[float], px: list[float]) -> float:
    """Largest distance (px) of the drawn coordinates from the best affine map of the data:
    0 (to rounding) when the line is exactly these numbers on a linear axis."""
    d, p = np.asarray(data, dtype=float), np.asarray(px, dtype=float)
    if np.ptp(d) == 0:
        return float(np.ptp(p))
    a, b = np.polyfit(d, p, 1)
    return float(np.max(np.abs(a * d + b - p)))


def check_drawn(fig: str, name: str, want: list[tuple[float, float]], tol: float = 1e-6) -> None:
    """Series ``name`` holds ``want`` and its drawn line is exactly those points."""
    got = series(fig)[name]
    assert len(got) == len(want), (name, got, want)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert abs(gx - wx) <= tol * max(1.0, abs(wx)) and abs(gy - wy) <= tol * max(
            1.0, abs(wy)
        ), (
            name,
            got,
            want,
        )
    px = drawn(fig, name)
    assert len(px) == len(want), (name, px)
    xs, ys = [x for x, _ in want], [y for _, y in want]
    assert affine_residual(xs, [x for x, _ in px]) < 0.01, (name, "x", px)
    assert affine_residual(ys, [y for _, y in px]) < 0.01, (name, "y", px)
    # SVG y grows downwards: a larger value is drawn higher
    for i in range(1, len(ys)):
        if ys[i] != ys[0]:
            assert (ys[i] > ys[0]) == (px[i][1] < px[0][1]), (name, px)
