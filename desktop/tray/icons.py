"""Draw TrayProxy's icons with Pillow, at any size, from one description.

The one job: turn a state (running, starting, stopped, error) and a size in pixels into an
RGBA image. The tray app shows these; ``assets/make_icons.py`` writes the app icons (PNG,
.ico, .icns) from the same code, so a design change is one edit here plus a regeneration.

The mark is a disc with a white glyph: a point with an arrow leaving it (the relay: "from
here to there") when running, the point and the arrow head without the shaft between them
(the link is cut) when stopped, three dots while starting, and "!" on red on error.

Legibility on any panel: every fill colour has a WCAG contrast of at least 3:1 against both a
black and a white panel (its relative luminance lies between 0.15 and 0.30), and a darker rim
sharpens the edge on light panels. Small sizes stay crisp because every edge is snapped to the
target pixel grid before the shape is drawn at several times the size and box-filtered down:
a horizontal or vertical edge lands on a pixel boundary instead of smearing over two.

Imports Pillow only: no pystray (the assets script and headless tests use this module), and
nothing from ``desktop``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from PIL import Image, ImageDraw

__all__ = ["MAX_SIZE_PX", "MIN_SIZE_PX", "IconState", "draw_app_icon", "draw_icon"]


class IconState(enum.StrEnum):
    """What the tray icon tells the person at a glance."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    ERROR = "error"


# Smaller than a 16 px tray slot there is nothing left to draw; 1024 px is the largest
# macOS .icns entry (512 pt @2x), the largest size any platform asks an app icon for.
MIN_SIZE_PX = 16
MAX_SIZE_PX = 1024

# Shapes are drawn this many times larger and box-filtered down: 8 x 8 samples per pixel
# give 64 coverage levels, more than the eye tells apart at tray sizes.
SUPERSAMPLE = 8
# Cap on the drawing canvas, so a 1024 px icon is drawn at 2048 px (still 4 samples a side)
# instead of 8192 px (a 256 MiB canvas).
SUPERSAMPLE_CANVAS_MAX_PX = 2048

Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class _Palette:
    fill: Rgb
    rim: Rgb


# Fills keep a relative luminance in [0.15, 0.30]: 3:1 or more against #202020 and against
# white (WCAG 2.x non-text contrast). Rims are the fill at about 55 % brightness.
_PALETTES: dict[IconState, _Palette] = {
    IconState.RUNNING: _Palette(fill=(25, 118, 210), rim=(13, 65, 116)),  # blue, luminance 0.18
    IconState.STARTING: _Palette(fill=(184, 112, 0), rim=(101, 62, 0)),  # amber, 0.22
    IconState.STOPPED: _Palette(fill=(117, 117, 117), rim=(64, 64, 64)),  # grey, 0.18
    IconState.ERROR: _Palette(fill=(211, 47, 47), rim=(116, 26, 26)),  # red, 0.16
}
GLYPH: Rgb = (255, 255, 255)

# Geometry as fractions of the icon size, snapped to whole target pixels when drawn.
DISC_MARGIN = 1 / 32  # transparent border: 0 px at 16, 2 px at 64, so the disc fills small slots
RIM_WIDTH = 1 / 20  # 1 px up to 29 px, 3 px at 64
SHAFT_THICKNESS = 1 / 8  # 2 px at 16: the thinnest line that stays solid after filtering
POINT_CENTRE_X = 0.30  # the "here" point, left of centre
POINT_RADIUS = 0.13
HEAD_BASE_X = 0.57  # the arrow head, pointing right, towards "there"
HEAD_TIP_X = 0.81
HEAD_HALF_HEIGHT = 0.21
DOT_RADIUS = 0.085  # "starting": three dots in a row, like an ellipsis
DOT_SPACING = 0.22  # centre to centre; at least one clear pixel between dots at any size
BANG_TOP_Y = 0.20  # "!" for error: a bar and a dot below it
BANG_BAR_BOTTOM_Y = 0.60
BANG_DOT_TOP_Y = 0.68
BANG_DOT_BOTTOM_Y = 0.82
BANG_WIDTH = 1 / 6  # 3 px at 16


class _Pen:
    """Draws in target-pixel coordinates on a canvas ``scale`` times larger."""

    def __init__(self, size_px: int, scale: int) -> None:
        self.size_px = size_px
        self.scale = scale
        self.image = Image.new("RGBA", (size_px * scale, size_px * scale), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.image)

    def snap(self, fraction: float) -> int:
        """A fraction of the icon size, as a whole number of target pixels."""
        return round(fraction * self.size_px)

    def centred_span(self, centre: float, length_px: int) -> tuple[int, int]:
        """``length_px`` whole pixels around a centre given as a fraction of the size."""
        start = round(centre * self.size_px - length_px / 2)
        return start, start + length_px

    def _box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        # Pillow's boxes include their last pixel: the right/bottom edge is one sample in.
        s = self.scale
        return round(x0 * s), round(y0 * s), round(x1 * s) - 1, round(y1 * s) - 1

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: Rgb) -> None:
        self.draw.ellipse(self._box(x0, y0, x1, y1), fill=(*fill, 255))

    def rectangle(self, x0: float, y0: float, x1: float, y1: float, fill: Rgb) -> None:
        self.draw.rectangle(self._box(x0, y0, x1, y1), fill=(*fill, 255))

    def polygon(self, points: list[tuple[float, float]], fill: Rgb) -> None:
        s = self.scale
        self.draw.polygon([(round(x * s), round(y * s)) for x, y in points], fill=(*fill, 255))

    def finish(self) -> Image.Image:
        if self.scale == 1:
            return self.image
        # BOX averages exactly the samples under each pixel: true coverage, no ringing halo
        # (LANCZOS overshoots next to the white glyph and leaves a faint dark fringe).
        return self.image.resize((self.size_px, self.size_px), Image.Resampling.BOX)


def _draw_disc(pen: _Pen, palette: _Palette) -> None:
    margin = pen.snap(DISC_MARGIN)
    rim = max(1, pen.snap(RIM_WIDTH))
    far = pen.size_px - margin
    pen.ellipse(margin, margin, far, far, palette.rim)
    pen.ellipse(margin + rim, margin + rim, far - rim, far - rim, palette.fill)


def _draw_relay(pen: _Pen, *, connected: bool) -> None:
    """The point on the left and the arrow head on the right; the shaft only when connected."""
    point_px = max(3, pen.snap(2 * POINT_RADIUS))  # 3 px is the smallest round-looking dot
    px0, px1 = pen.centred_span(POINT_CENTRE_X, point_px)
    py0, py1 = pen.centred_span(0.5, point_px)
    pen.ellipse(px0, py0, px1, py1, GLYPH)

    base_x, tip_x = pen.snap(HEAD_BASE_X), pen.snap(HEAD_TIP_X)
    half_px = pen.snap(HEAD_HALF_HEIGHT)
    middle = pen.size_px / 2
    pen.polygon([(base_x, middle - half_px), (tip_x, middle), (base_x, middle + half_px)], GLYPH)

    if connected:
        shaft_px = max(2, pen.snap(SHAFT_THICKNESS))
        sy0, sy1 = pen.centred_span(0.5, shaft_px)
        pen.rectangle((px0 + px1) / 2, sy0, base_x + 1, sy1, GLYPH)  # +1: overlap the head's base


def _draw_dots(pen: _Pen) -> None:
    dot_px = max(3, pen.snap(2 * DOT_RADIUS))
    # Whole-pixel offsets from one snapped middle dot: three identical dots, never touching.
    spacing_px = max(dot_px + 1, pen.snap(DOT_SPACING))
    x0, x1 = pen.centred_span(0.5, dot_px)
    y0, y1 = pen.centred_span(0.5, dot_px)
    for offset in (-spacing_px, 0, spacing_px):
        pen.ellipse(x0 + offset, y0, x1 + offset, y1, GLYPH)


def _draw_bang(pen: _Pen) -> None:
    width_px = max(2, pen.snap(BANG_WIDTH))
    x0, x1 = pen.centred_span(0.5, width_px)
    pen.rectangle(x0, pen.snap(BANG_TOP_Y), x1, pen.snap(BANG_BAR_BOTTOM_Y), GLYPH)
    pen.rectangle(x0, pen.snap(BANG_DOT_TOP_Y), x1, pen.snap(BANG_DOT_BOTTOM_Y), GLYPH)


def draw_icon(state: IconState | str, size_px: int) -> Image.Image:
    """The tray icon for ``state`` as a ``size_px`` x ``size_px`` RGBA image.

    Raises ``ValueError`` for an unknown state or a size outside MIN_SIZE_PX..MAX_SIZE_PX.
    """
    state = IconState(state)
    if not MIN_SIZE_PX <= size_px <= MAX_SIZE_PX:
        raise ValueError(f"icon size must be {MIN_SIZE_PX}..{MAX_SIZE_PX} px, not {size_px}")
    scale = max(1, min(SUPERSAMPLE, SUPERSAMPLE_CANVAS_MAX_PX // size_px))
    pen = _Pen(size_px, scale)
    _draw_disc(pen, _PALETTES[state])
    if state is IconState.RUNNING:
        _draw_relay(pen, connected=True)
    elif state is IconState.STOPPED:
        _draw_relay(pen, connected=False)
    elif state is IconState.STARTING:
        _draw_dots(pen)
    else:
        _draw_bang(pen)
    return pen.finish()


def draw_app_icon(size_px: int) -> Image.Image:
    """The application icon (windows, installers, the Dock): the running tray icon."""
    return draw_icon(IconState.RUNNING, size_px)
