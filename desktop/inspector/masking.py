"""What of an exchange a person may see: every key masked, configured or the client's own.

The store keeps what passed as it passed, so the client's own credentials are in it (its
Authorization, x-api-key, a ``?key=`` of Gemini's). Everything the page, a push event, an
export or a copied cURL shows goes through one :class:`Masker` per exchange:

- a credential header's value (Authorization, x-api-key, api-key, x-goog-api-key,
  Proxy-Authorization, Cookie, Set-Cookie, any name ending ``-key`` or ``-token`` or named for
  a credential) is replaced, its scheme kept (``Bearer ***``, ``Bearer sk-***``: which kind of
  key it was, never the key);
- every credential value the client sent in a header or the query is masked wherever it shows
  up again (an upstream's error quoting it, a body), as the configured keys registered with
  desktop/redaction.py are;
- all else goes through the log's own masking (redaction.redact_text, redact_target for the
  path): key shapes, credential parameters, registered secrets.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import parse_qsl, unquote_plus

from desktop.engine.capture import RequestHead
from desktop.redaction import (
    MASK,
    SENSITIVE_HEADERS,
    is_credential_name,
    is_placeholder,
    redact_target,
    redact_text,
)

__all__ = ["Masker", "is_credential_header"]

# Shorter values are not masked verbatim (redaction.py's floor too): "abc" is no key, and
# masking it everywhere would shred the text.
MIN_SECRET_LEN = 6
# A key masked to its issuer's prefix and nothing else (redaction.py's key shapes).
_KIND_ONLY = re.compile(
    r"(?:sk-|tp-local-|gh[pousr]_|github_pat_|glpat-|AIza|xox[a-z]-|eyJ)" + re.escape(MASK)
)


@functools.lru_cache(maxsize=1024)  # asked for each header of each row shown; names repeat
def is_credential_header(name: str) -> bool:
    """True for a header whose value is a credential, whatever it holds."""
    lowered = name.lower()
    return lowered in SENSITIVE_HEADERS or lowered.endswith(("-key", "-token")) or is_credential_name(lowered)


class Masker:
    """Masks what one exchange shows: its client's credentials and every registered secret."""

    __slots__ = ("_body", "_found", "_secrets")

    def __init__(self, head: RequestHead, body: bytes | None = None) -> None:
        """``body``: the request body, whose members or form fields named like credentials
        (``"api_key": "..."``, ``password=...``) are masked wherever they show again. It is
        searched when a text is first masked, not before: a list row masks only its path."""
        self._body = body
        found: set[str] = set()
        for raw_name, raw_value in head.raw_headers:
            name = raw_name.decode("latin-1")
            if not is_credential_header(name):
                continue
            value = raw_value.decode("utf-8", "replace").strip()
            if name.lower() in ("cookie", "set-cookie"):
                found.update(part.partition("=")[2].strip() for part in value.split(";"))
            else:
                found.add(value)
                found.add(value.partition(" ")[2].strip())  # the key without its scheme
        query = head.raw_path.partition("?")[2]
        found.update(value for name, value in parse_qsl(query) if is_credential_name(name))
        self._found = found
        self._secrets: list[str] | None = None

    def _all_secrets(self) -> list[str]:
        if self._secrets is None:
            found = self._found
            if self._body:
                found = found | set(_body_credentials(self._body))
                self._body = None
            # Longest first, so a value holding another is masked whole.
            self._secrets = sorted((s for s in found if len(s) >= MIN_SECRET_LEN), key=len, reverse=True)
        return self._secrets

    def text(self, text: str) -> str:
        """``text`` (a body, an error, a header value) with every credential masked."""
        for secret in self._all_secrets():
            if secret in text:
                text = text.replace(secret, MASK)
        return redact_text(text)

    def path(self, raw_path: str) -> str:
        """A request target with its credentials masked, escapes kept (the request's own
        credentials only: a path holds no body member)."""
        masked = redact_target(raw_path)
        for secret in sorted(self._found, key=len, reverse=True):
            if len(secret) >= MIN_SECRET_LEN and secret in masked:
                masked = masked.replace(secret, MASK)
        return redact_text(masked)

    def header(self, name: str, value: str) -> str:
        """A header's value as shown: a credential's replaced (its scheme kept), others masked."""
        if not is_credential_header(name):
            return self.text(value)
        if is_placeholder(value):
            return value  # "Bearer {key}": says where the key goes, not the key
        scheme, space, credential = value.strip().partition(" ")
        if space and scheme.isalpha() and credential.strip():
            return f"{scheme} {_kind_kept(credential.strip())}"
        return _kind_kept(value.strip()) if name.lower() not in ("cookie", "set-cookie") else MASK

    def headers(self, pairs: list[tuple[str, str]]) -> list[list[str]]:
        return [[name, self.header(name, value)] for name, value in pairs]


def _kind_kept(credential: str) -> str:
    """``sk-***`` for a key of a known shape (the log keeps its prefix too), else ``***``."""
    shown = redact_text(credential)
    return shown if _KIND_ONLY.fullmatch(shown) else MASK


# A credential member of a JSON body (at any depth, duplicates, truncated or over-nested bodies
# alike: no parse), a form field, or a multipart field: its name and value.
_JSON_MEMBER = re.compile(r'"([A-Za-z0-9_.\-]{1,64})"\s*:\s*"((?:[^"\\]|\\.){1,4096})"')
_FORM_FIELD = re.compile(r"(?:^|&)([^=&\s]{1,64})=([^&\s]{1,4096})")
_MULTIPART_FIELD = re.compile(r'name="([^"]{1,64})"[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]{1,4096})')


def _body_credentials(body: bytes) -> list[str]:
    """The values of a request body's members named like credentials: JSON members (found by
    pattern, not parsed: an over-nested, truncated or duplicated body is read as well), form
    fields and multipart fields."""
    text = body.decode("utf-8", "replace")
    found = [value for name, value in _JSON_MEMBER.findall(text) if is_credential_name(name)]
    found += [value for name, value in _MULTIPART_FIELD.findall(text) if is_credential_name(name)]
    if "=" in text[:4096] and not text.lstrip().startswith(("{", "[")):
        found += [
            value
            for name, value in ((unquote_plus(n), unquote_plus(v)) for n, v in _FORM_FIELD.findall(text))
            if is_credential_name(name)
        ] + [value for name, value in _FORM_FIELD.findall(text) if is_credential_name(unquote_plus(name))]
    return found
