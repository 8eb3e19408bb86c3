"""The environment a test, and each process it starts, runs in: nothing from the developer's
shell that changes what the proxy or the SDKs do, and a HOME with XDG dirs of its own."""

from __future__ import annotations

from pathlib import Path

__all__ = ["home_environ", "is_scrubbed"]

# Variables that change how the proxy or the SDKs behave; a developer's shell must not leak
# into a test (httpx's tests scrub the same way).
_SCRUBBED_SUFFIXES = ("_PROXY", "_API_KEY", "_BASE_URL", "_API_BASE")
_SCRUBBED_NAMES = frozenset({"TRAYPROXY_CONFIG", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"})
# Each XDG variable and its folder under HOME.
_XDG_DIRS = (
    ("XDG_CONFIG_HOME", "config"),
    ("XDG_STATE_HOME", "state"),
    ("XDG_CACHE_HOME", "cache"),
    ("XDG_DATA_HOME", "data"),
    ("XDG_RUNTIME_DIR", "runtime"),
)


def is_scrubbed(name: str) -> bool:
    """Whether the variable ``name`` is kept out of tests."""
    upper = name.upper()
    return upper.endswith(_SCRUBBED_SUFFIXES) or upper in _SCRUBBED_NAMES


def home_environ(home: Path) -> dict[str, str]:
    """HOME and the XDG variables pointing into it, their folders made (0700: the runtime dir
    must be private, and platformdirs' others may hold keys)."""
    environ = {"HOME": str(home)}
    for var, sub in _XDG_DIRS:
        (home / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        environ[var] = str(home / sub)
    return environ
