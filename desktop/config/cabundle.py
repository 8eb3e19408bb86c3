"""Whether a target's CA bundle can be loaded, asked before the target is put to use.

The engine builds a target's TLS context when the target becomes active
(``engine/upstream.py``: ``build_ssl_context``, which calls ``ssl.create_default_context``
with the file). A file that is missing, unreadable or not PEM is then an exception deep in the
event loop. The file is loaded here the same way first, so ``config check``, ``serve`` and a
reload can name the file and the reason instead. A file removed between this check and the
engine's use of it still fails there; the check narrows that window, it cannot close it.
"""

from __future__ import annotations

import ssl

from desktop.config.model import Target

__all__ = ["ca_bundle_problem", "target_ca_bundle_problem"]


def ca_bundle_problem(path: str) -> str | None:
    """Why ``path`` cannot serve as a CA bundle ("cannot be read: No such file or directory"),
    or None when TLS can load it."""
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:  # before OSError, which it subclasses: the file was read
        why = (exc.reason or "unreadable").lower().replace("_", " ")
        return f"holds no certificate TLS can use ({why}); it must be a PEM file of CA certificates"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or type(exc).__name__}"
    return None


def target_ca_bundle_problem(target: Target) -> str | None:
    """``ca_bundle PATH cannot be read: ...`` when ``target`` names a CA bundle TLS cannot load;
    None when it can, or when the target uses none (or does not verify TLS, so never loads it)."""
    if not target.verify_tls or not target.ca_bundle:
        return None
    problem = ca_bundle_problem(target.ca_bundle)
    return f"ca_bundle {target.ca_bundle} {problem}" if problem else None
