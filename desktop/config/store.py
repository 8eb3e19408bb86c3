"""Where the config file lives, and reading it.

Order: ``--config PATH``, then ``TRAYPROXY_CONFIG``, then ``config.toml`` in the user's config
directory (platformdirs, app name TrayProxy: ``~/.config/TrayProxy`` on Linux,
``~/Library/Application Support/TrayProxy`` on macOS, ``%LOCALAPPDATA%\\TrayProxy`` on Windows).
First-run template, atomic comment-keeping writes and the reload watch come with issue 4.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from desktop.config.parse import ConfigError, ConfigFile, Problem, parse_config

__all__ = ["APP_NAME", "CONFIG_ENV", "config_path", "load_config"]

APP_NAME = "TrayProxy"
CONFIG_ENV = "TRAYPROXY_CONFIG"
CONFIG_FILE_NAME = "config.toml"


def config_path(explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: ``explicit``, else $TRAYPROXY_CONFIG, else the user's default."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / CONFIG_FILE_NAME


def load_config(path: Path) -> ConfigFile:
    """Read and parse ``path``; every failure, unreadable file included, is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem(1, 1, "the file does not exist")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Problem(1, 1, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [Problem(1, 1, f"cannot read it: {exc.strerror}")]) from None
    return parse_config(text, path=str(path))
