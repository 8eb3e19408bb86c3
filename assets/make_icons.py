"""Write TrayProxy's icon files from ``desktop/tray/icons.py``.

    python assets/make_icons.py            # regenerate everything under assets/
    python assets/make_icons.py --check    # exit 1 if a committed file differs (CI)

Outputs (all deterministic: the same bytes on every run, so git shows a change only when the
design changed):

    assets/icons/trayproxy-<N>.png    app icon, N in APP_SIZES_PX (Linux .desktop, README)
    assets/trayproxy.ico              Windows: one file, ICO_SIZES_PX inside (PyInstaller EXE icon)
    assets/trayproxy.icns             macOS: ICNS_SIZES_PX inside (PyInstaller BUNDLE icon)
    assets/tray/<state>-<N>.png       tray state icons, N in TRAY_SIZES_PX (docs, screenshots)

The running app draws its tray icon at run time with the same function; these files are for
installers, bundles and documentation. Imports only Pillow and ``desktop.tray.icons``.
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image

ASSETS = Path(__file__).resolve().parent
sys.path.insert(0, str(ASSETS.parent))  # run as a script from a checkout: find `desktop`

from desktop.tray.icons import IconState, draw_app_icon, draw_icon  # noqa: E402

# Freedesktop hicolor sizes plus 512 for high-DPI launchers and stores.
APP_SIZES_PX = (16, 24, 32, 48, 64, 128, 256, 512)
# Windows picks from these for the title bar, taskbar, Alt-Tab and Explorer views; 256 is the
# largest an ICO entry can be.
ICO_SIZES_PX = (16, 24, 32, 48, 64, 128, 256)
# The PNG entries Pillow writes into an ICNS: 16..512 pt at 1x and @2x (1024 is 512 pt @2x).
# 16 and 32 px at 1x exist only in legacy formats Pillow does not write; macOS scales down.
ICNS_SIZES_PX = (32, 64, 128, 256, 512, 1024)
# Tray slot heights seen on Windows (16, 24, 32 at 100-200 %), GNOME/KDE (22, 24, 48) and
# macOS (22 pt, 44 px @2x is drawn at run time); 64 for documentation.
TRAY_SIZES_PX = (16, 22, 24, 32, 48, 64)

Writer = Callable[[], bytes]


def png_bytes(image: Image.Image) -> bytes:
    """PNG without text or time chunks: identical bytes for identical pixels."""
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def ico_bytes() -> bytes:
    """A multi-size .ico with every size drawn at its own size (not scaled from the largest)."""
    images = [draw_app_icon(size) for size in ICO_SIZES_PX]
    out = io.BytesIO()
    images[-1].save(
        out,
        format="ICO",
        sizes=[image.size for image in images],
        append_images=images[:-1],
    )
    return out.getvalue()


def icns_bytes() -> bytes:
    """A .icns with every size drawn at its own size."""
    images = [draw_app_icon(size) for size in ICNS_SIZES_PX]
    out = io.BytesIO()
    images[-1].save(out, format="ICNS", append_images=images[:-1])
    return out.getvalue()


def planned_outputs() -> dict[str, Writer]:
    """Every generated file, as a path relative to ``assets/`` and a function making its bytes."""
    plan: dict[str, Writer] = {}
    for size in APP_SIZES_PX:
        plan[f"icons/trayproxy-{size}.png"] = functools.partial(_app_png, size)
    plan["trayproxy.ico"] = ico_bytes
    plan["trayproxy.icns"] = icns_bytes
    for state in IconState:
        for size in TRAY_SIZES_PX:
            plan[f"tray/{state.value}-{size}.png"] = functools.partial(_tray_png, state, size)
    return plan


def _app_png(size_px: int) -> bytes:
    return png_bytes(draw_app_icon(size_px))


def _tray_png(state: IconState, size_px: int) -> bytes:
    return png_bytes(draw_icon(state, size_px))


def generate(out_dir: Path) -> list[Path]:
    """Write every icon file under ``out_dir``; return the paths written."""
    written = []
    for relative, make in planned_outputs().items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
        written.append(path)
    return written


def stale_files(out_dir: Path) -> list[str]:
    """Relative paths under ``out_dir`` that are missing or differ from a fresh generation."""
    return sorted(
        relative
        for relative, make in planned_outputs().items()
        if not (out_dir / relative).is_file() or (out_dir / relative).read_bytes() != make()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=ASSETS, help="output directory (default: assets/)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for relative in stale:
            print(f"out of date: {relative} (run: python assets/make_icons.py)", file=sys.stderr)
        return 1 if stale else 0
    paths = generate(args.out)
    print(f"wrote {len(paths)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
