"""The tray state icons and the generated icon files.

What a user would notice: an icon that blurs into a smudge at 16 px, vanishes on a dark (or a
light) panel, looks the same whether the proxy runs or not; an app icon in the installer that
is out of date with the tray icon.
"""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from desktop.tray.icons import MAX_SIZE_PX, MIN_SIZE_PX, IconState, draw_app_icon, draw_icon

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
TRAY_SIZES_PX = (16, 22, 24, 32, 48, 64)

# Panels the icon must read on: pure black and white, and the grey tones of common dark and
# light desktop themes.
PANELS = {
    "black": (0, 0, 0),
    "dark": (32, 32, 32),
    "light": (240, 240, 240),
    "white": (255, 255, 255),
}
# WCAG 2.x asks 3:1 for graphical objects a person must make out (success criterion 1.4.11).
MIN_CONTRAST = 3.0
# Share of the icon's area that must meet MIN_CONTRAST against the panel: the disc's fill
# carries the shape; the dark rim on a dark panel and the white glyph on a white one may not.
# Measured 0.67 (error on #202020 at 16 px) to 0.90.
MIN_CONTRASTING_AREA = 0.6
# An icon pixel counts as covered from half opacity on.
COVERED_ALPHA = 128
# A pixel belongs to the white glyph when every channel is at least this bright.
GLYPH_MIN_CHANNEL = 200
WHITE = (255, 255, 255, 255)


def make_icons_module() -> ModuleType:
    """``assets/make_icons.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_icons", ASSETS / "make_icons.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_luminance(rgb: tuple[int, ...]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """WCAG contrast ratio, 1.0 (same) to 21.0 (black on white)."""
    high, low = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def on_panel(icon: Image.Image, panel: tuple[int, int, int]) -> Image.Image:
    """What the person sees: the icon composited onto a panel of one colour."""
    return Image.alpha_composite(Image.new("RGBA", icon.size, (*panel, 255)), icon)


def pixels(image: Image.Image) -> list[tuple[int, ...]]:
    return [image.getpixel((x, y)) for y in range(image.height) for x in range(image.width)]  # type: ignore[misc]


def glyph_mask(icon: Image.Image) -> list[bool]:
    return [p[3] >= COVERED_ALPHA and min(p[:3]) >= GLYPH_MIN_CHANNEL for p in pixels(icon)]


@pytest.mark.parametrize("size_px", TRAY_SIZES_PX)
@pytest.mark.parametrize("state", list(IconState))
def test_each_state_draws_a_round_rgba_icon_filling_the_slot(state: IconState, size_px: int) -> None:
    """The icon is exactly the size the tray asks for, transparent around a disc that fills the
    slot (no wasted border making it look smaller than its neighbours)."""
    icon = draw_icon(state, size_px)
    assert icon.mode == "RGBA"
    assert icon.size == (size_px, size_px)
    last = size_px - 1
    for corner in ((0, 0), (last, 0), (0, last), (last, last)):
        assert icon.getpixel(corner)[3] == 0  # type: ignore[index]
    left, top, right, bottom = icon.getbbox() or (0, 0, 0, 0)
    assert min(right - left, bottom - top) >= 0.9 * size_px
    covered = sum(p[3] >= COVERED_ALPHA for p in pixels(icon))
    assert covered / size_px**2 > 0.6  # a disc filling its box covers pi/4 of it


def test_state_names_are_accepted_as_plain_strings() -> None:
    """The tray app may pass the controller's state name straight through."""
    assert draw_icon("running", 16).tobytes() == draw_icon(IconState.RUNNING, 16).tobytes()


@pytest.mark.parametrize(
    ("state", "size_px"), [("paused", 16), ("running", MIN_SIZE_PX - 1), ("running", MAX_SIZE_PX + 1)]
)
def test_unknown_state_or_size_out_of_range_is_a_value_error(state: str, size_px: int) -> None:
    with pytest.raises(ValueError, match=r"paused|icon size"):
        draw_icon(state, size_px)


@pytest.mark.parametrize("size_px", TRAY_SIZES_PX)
@pytest.mark.parametrize("panel", list(PANELS))
@pytest.mark.parametrize("state", list(IconState))
def test_icon_stands_out_on_dark_and_light_panels(state: IconState, panel: str, size_px: int) -> None:
    """Most of the icon's area has 3:1 contrast or more with the panel, on a black, dark grey,
    light grey and white panel alike: no state disappears under one theme."""
    icon = draw_icon(state, size_px)
    seen = on_panel(icon, PANELS[panel])
    covered = [p for p, i in zip(pixels(seen), pixels(icon), strict=True) if i[3] >= COVERED_ALPHA]
    share = sum(contrast(p, PANELS[panel]) >= MIN_CONTRAST for p in covered) / len(covered)
    assert share >= MIN_CONTRASTING_AREA, f"{state} at {size_px} px on {panel}: {share:.2f}"


@pytest.mark.parametrize("state", list(IconState))
def test_white_glyph_contrasts_with_its_disc(state: IconState) -> None:
    """The mark inside (arrow, dots, "!") is readable against the disc colour."""
    icon = draw_icon(state, 16)
    covered = [p for p in pixels(icon) if p[3] == 255]
    fill = max(set(covered), key=covered.count)  # the disc colour is the commonest pixel
    assert WHITE in covered
    assert contrast(WHITE, fill) >= MIN_CONTRAST


@pytest.mark.parametrize("size_px", TRAY_SIZES_PX)
def test_states_differ_in_colour_and_in_shape(size_px: int) -> None:
    """Every pair of states looks different at a glance, and differs in the glyph's shape too,
    so a colour-blind person (or a monochrome panel) can still tell them apart."""
    icons = {state: draw_icon(state, size_px) for state in IconState}
    for a, b in itertools.combinations(IconState, 2):
        seen_a, seen_b = (pixels(on_panel(icons[s], PANELS["dark"])) for s in (a, b))
        mean_diff = sum(
            abs(ca - cb)
            for pa, pb in zip(seen_a, seen_b, strict=True)
            for ca, cb in zip(pa[:3], pb[:3], strict=True)
        ) / (3 * size_px**2)
        assert mean_diff > 20, f"{a} and {b} look alike at {size_px} px ({mean_diff:.1f})"
        shape_diff = sum(ga != gb for ga, gb in zip(glyph_mask(icons[a]), glyph_mask(icons[b]), strict=True))
        assert shape_diff >= 4, f"{a} and {b} have the same glyph at {size_px} px"


@pytest.mark.parametrize("size_px", TRAY_SIZES_PX)
def test_straight_strokes_land_on_whole_pixels(size_px: int) -> None:
    """Crisp at tray sizes: the "!" of the error icon has no half-white smeared pixels, and the
    running arrow's shaft is a solid white run through the middle row."""
    error = draw_icon(IconState.ERROR, size_px)
    smeared = [p for p in pixels(error) if p[3] == 255 and p != WHITE and min(p[:3]) >= 100]
    assert smeared == []

    running = draw_icon(IconState.RUNNING, size_px)
    row = [running.getpixel((x, size_px // 2)) for x in range(size_px)]
    longest = max(len(list(run)) for white, run in itertools.groupby(row, key=lambda p: p == WHITE) if white)
    assert longest >= size_px // 4


def test_drawing_the_same_icon_twice_gives_the_same_pixels() -> None:
    assert draw_icon("error", 24).tobytes() == draw_icon("error", 24).tobytes()


def test_generator_writes_the_same_bytes_on_every_run(tmp_path: Path) -> None:
    """Regenerating without a design change leaves git with nothing to commit."""
    make_icons = make_icons_module()
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in make_icons.generate(tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in make_icons.generate(tmp_path / "b")}
    assert first == second
    assert len(first) == len(make_icons.planned_outputs())


def test_committed_assets_are_what_the_generator_makes_today() -> None:
    """The committed PNG/.ico/.icns files match the drawing code: change ``icons.py``, run
    ``python assets/make_icons.py``, commit; this fails if the second step was forgotten. No
    leftover file of an older design lingers either."""
    make_icons = make_icons_module()
    assert make_icons.stale_files(ASSETS) == []
    planned = set(make_icons.planned_outputs())
    on_disk = {
        p.relative_to(ASSETS).as_posix()
        for p in ASSETS.rglob("*")
        if p.is_file() and p.suffix in {".png", ".ico", ".icns"}
    }
    assert on_disk == planned


def test_ico_and_icns_hold_every_size_drawn_at_that_size() -> None:
    """Windows and macOS pick the entry matching the place they show it; the small entries are
    drawn small (crisp), not the 256 px image scaled down."""
    make_icons = make_icons_module()
    with Image.open(ASSETS / "trayproxy.ico") as ico:
        assert sorted(ico.info["sizes"]) == [(s, s) for s in make_icons.ICO_SIZES_PX]
        ico.size = (16, 16)
        small = ico.convert("RGBA")
    assert small.tobytes() == draw_app_icon(16).tobytes()
    with Image.open(ASSETS / "trayproxy.icns") as icns:
        pixel_sizes = {w * scale for w, _h, scale in icns.info["sizes"]}
    assert pixel_sizes == set(make_icons.ICNS_SIZES_PX)


def test_make_icons_script_regenerates_and_check_names_a_stale_file(tmp_path: Path) -> None:
    """``python assets/make_icons.py`` runs from a checkout; ``--check`` passes on a fresh
    output and fails, naming the file, once one file is changed."""
    script = str(ASSETS / "make_icons.py")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, script, "--out", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    made = run()
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "tray" / "stopped-22.png").is_file()
    assert run("--check").returncode == 0
    (tmp_path / "tray" / "stopped-22.png").write_bytes(b"")
    checked = run("--check")
    assert checked.returncode == 1
    assert "tray/stopped-22.png" in checked.stderr
