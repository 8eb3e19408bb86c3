"""Key sources: where a target's key comes from, read when the target is put to use.

Resolved values become :class:`Secret` at once and are never formatted into text. Sources:
``{ env = "NAME" }`` and a key written in the file work now; ``{ keyring = true }`` (the OS
keychain) and ``{ command = "..." }`` (re-run on 401) come with the rest of issue 4 and are
reported as unavailable until then. A key that cannot be read is not fatal: the target's
headers that use ``{key}`` are left out, so the client's own Authorization passes through,
and the caller is told why (apps started at login do not see variables set in a shell profile).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from desktop.config.model import Secret, Target
from desktop.config.parse import TargetSpec

__all__ = ["KeyUnavailable", "resolve_key", "resolve_target"]

KEY_PLACEHOLDER = "{key}"


class KeyUnavailable(Exception):
    """The key could not be read; the message says why without showing any part of it."""


def resolve_key(spec: TargetSpec, environ: Mapping[str, str] = os.environ) -> str | None:
    """The target's key, None when it has no key source; raise KeyUnavailable when unreadable."""
    if spec.key_source is None:
        return None
    kind, value = spec.key_source
    if kind == "env":
        found = environ.get(str(value), "")
        if not found:
            raise KeyUnavailable(f"the environment variable {value} is not set or empty")
        return found
    if kind == "value":
        return str(value)
    raise KeyUnavailable(f"key source '{kind}' is not supported yet")


def resolve_target(spec: TargetSpec, environ: Mapping[str, str] = os.environ) -> tuple[Target, str | None]:
    """The engine's Target for ``spec`` and, when its key could not be read, why."""
    warning = None
    try:
        key = resolve_key(spec, environ)
    except KeyUnavailable as exc:
        key = None
        warning = f"target '{spec.name}': {exc}; requests carry the client's own credentials"
    headers: list[tuple[str, Secret]] = []
    for name, template in spec.headers:
        if KEY_PLACEHOLDER in template:
            if key is None:
                continue
            template = template.replace(KEY_PLACEHOLDER, key)
        headers.append((name, Secret(template)))
    target = Target(
        url=spec.url,
        name=spec.name,
        add_headers=tuple(headers),
        strip_headers=spec.strip_headers,
        connect_timeout_s=spec.connect_timeout_s,
        read_timeout_s=spec.read_timeout_s,
        verify_tls=spec.verify_tls,
        ca_bundle=spec.ca_bundle,
        keep_host=spec.keep_host,
    )
    return target, warning
