"""Where the config file lives, and reading it.

Order: ``--config PATH``, then ``TRAYPROXY_CONFIG``, then ``config.toml`` in the user's config
directory (platformdirs, app name TrayProxy: ``~/.config/TrayProxy`` on Linux,
``~/Library/Application Support/TrayProxy`` on macOS, ``%LOCALAPPDATA%\\TrayProxy`` on Windows).
On first run the file is created from :data:`DEFAULT_CONFIG`, commented defaults that work at
once. Comment-keeping writes of single settings and the reload watch come with issue 4.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from desktop.config.parse import ConfigError, ConfigFile, Problem, parse_config
from desktop.engine.redact import redact_text

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "config_path",
    "ensure_config",
    "load_config",
    "show_redacted",
    "write_atomically",
]

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


DEFAULT_CONFIG = """\
# TrayProxy configuration. Edit freely; check it with:  trayproxy config check

# The target new requests go to: one of the [targets.*] tables below.
active = "openai"

[listen]
# Both loopback families, so tools that resolve "localhost" to ::1 reach it too.
hosts = ["127.0.0.1", "::1"]
port = 8000

[security]
# Host names (besides 127.0.0.1, localhost and [::1]) and web-page origins (besides pages
# served from this machine and editor webviews) allowed to use the proxy and its keys.
allowed_hosts = []
allowed_origins = []

[targets.openai]
url = "https://api.openai.com"
# The key comes from OPENAI_API_KEY when it is set; otherwise your tool's own key passes.
key = { env = "OPENAI_API_KEY" }
headers = { Authorization = "Bearer {key}" }

[targets.anthropic]
url = "https://api.anthropic.com"
key = { env = "ANTHROPIC_API_KEY" }
headers = { x-api-key = "{key}" }

[targets.ollama]
url = "http://127.0.0.1:11434"

# Azure OpenAI: uncomment, put in your resource name, and set AZURE_OPENAI_API_KEY.
# [targets.azure]
# url = "https://YOUR-RESOURCE.openai.azure.com/openai"
# key = { env = "AZURE_OPENAI_API_KEY" }
# headers = { api-key = "{key}" }
"""


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def ensure_config(path: Path) -> bool:
    """Create ``path`` from the commented defaults if it does not exist; True if created."""
    if path.exists():
        return False
    write_atomically(path, DEFAULT_CONFIG)
    return True


# ``key = "..."`` (a key written in the file) and ``value = "..."`` inside ``key = { ... }``.
_IN_FILE_KEY = re.compile(r"""(?m)^(\s*(?:key|value)\s*=\s*)("[^"\n]*"|'[^'\n]*')""")
_INLINE_VALUE = re.compile(r"""(\bvalue\s*=\s*)("[^"\n]*"|'[^'\n]*')""")


def show_redacted(text: str) -> str:
    """The config text with every key masked: in-file keys, credential headers, key shapes."""
    text = _IN_FILE_KEY.sub(lambda m: m.group(1) + '"***"', text)
    text = _INLINE_VALUE.sub(lambda m: m.group(1) + '"***"', text)
    return redact_text(text)
