"""How a controller follows a config file: which file, the target the command line pins, the
command line's settings on top of the file's, whether a choice is saved and the file watched, and
the timings of the watch, of a key command run again and of a taken port tried again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from desktop.config.follow import KEY_REFRESH_MIN_INTERVAL_S, Overrides
from desktop.controller.watch import CONFIG_POLL_S

__all__ = ["PORT_RETRY_S", "ConfigBinding"]

# A listener that could not be opened or moved (its port taken by another program) is tried
# again this often, so it opens soon after the other program lets go, without a save or Reload.
PORT_RETRY_S = 5.0


@dataclass(frozen=True)
class ConfigBinding:
    """How a controller follows a config file."""

    path: Path
    # A target name that stays chosen whatever ``active`` says (``serve --target NAME``).
    pinned_target: str | None = None
    # Command-line settings on top of the file's, for every target and the listeners.
    overrides: Overrides = field(default_factory=Overrides)
    # Save choose_target's choice as ``active`` in the file.
    save_choice: bool = True
    # Re-read the file when it changes, looking this often.
    watch: bool = True
    poll_s: float = CONFIG_POLL_S
    # How often a key command may run again after a 401, and a taken port be tried again.
    key_refresh_interval_s: float = KEY_REFRESH_MIN_INTERVAL_S
    port_retry_s: float = PORT_RETRY_S
