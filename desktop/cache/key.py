"""The key a recorded answer is found by: which requests count as "the same request".

Exact on purpose (this is a recording, not an RFC 9111 cache): the base key is the sha256 of a
canonical JSON array of

    [KEY_VERSION, first target, method, path, query, body, [[name, value], ...]]

- the query as sent (raw, escapes kept) with credential parameters dropped (``key``,
  ``api_key``, ``access_token``...: redaction.is_credential_name), so a Gemini key in the URL
  neither splits the recording nor lands in it;
- the body canonicalised when it is JSON (parsed, dumped with sorted keys, no whitespace, not
  ASCII-escaped: key order and spacing do not matter, every value does, the model as the client
  named it included; a whole number is one however written: 1, 1.0 and 1e0 alike); any other body by the sha256 of its bytes; no body: "";
- the values of KEY_HEADERS, lower-cased names, sorted by name (HTTP gives the order of
  different fields no meaning, and clients differ in it); one name's values in the order sent.

An answer's ``Vary`` names more request headers: the entry keeps their names and the request's
values (vary_of), and a lookup compares them across the entries of one base (matches_vary).
Credential headers (Authorization, x-api-key, Cookie...) are never part of either.

Pure functions: no I/O, nothing kept. Imports only the redactor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import unquote_plus

from desktop.redaction import SENSITIVE_HEADERS, is_credential_name, redact_text

__all__ = [
    "KEY_HEADERS",
    "KEY_VERSION",
    "RequestHeaders",
    "base_key",
    "canonical_body",
    "is_key_header",
    "key_headers",
    "matches_vary",
    "query_without_credentials",
    "request_headers",
    "vary_names",
    "vary_of",
]

# Bumped when what goes into the key changes: a store's old keys then simply miss (an export
# keeps no key; import recomputes it, so exported recordings survive a bump).
KEY_VERSION = 2  # 2: key headers sorted by name, whole numbers one form
# The request headers that change the answer of an LLM API whatever the answer says
# (API version and beta features; what the client accepts, a stream or JSON, compressed or not).
KEY_HEADERS: tuple[str, ...] = (
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    # Which organization and project an OpenAI key acts for: their files, batches and
    # fine-tunes differ (attacker trial: org B got org A's answer).
    "openai-organization",
    "openai-project",
    "accept",
    "accept-encoding",
)
_KEY_HEADER_SET = frozenset(KEY_HEADERS)

# A request's headers as the key reads them: lower-cased names, values decoded as HTTP sends
# them (ISO-8859-1, RFC 9110 §5.5), in the order sent.
RequestHeaders = tuple[tuple[str, str], ...]


def is_key_header(name: str) -> bool:
    """True when ``name`` (any case) is one of KEY_HEADERS."""
    return name.lower() in _KEY_HEADER_SET


def is_credential_header(name: str) -> bool:
    """True when a header called ``name`` may carry a credential: never keyed, never kept."""
    lowered = name.lower()
    return lowered in SENSITIVE_HEADERS or is_credential_name(lowered)


def request_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
    """The client's raw headers as the key reads them, credential headers left out."""
    out: list[tuple[str, str]] = []
    for raw_name, raw_value in raw_headers:
        name = raw_name.decode("latin-1").lower()
        if not is_credential_header(name):
            out.append((name, raw_value.decode("latin-1")))
    return tuple(out)


def key_headers(headers: RequestHeaders) -> RequestHeaders:
    """The KEY_HEADERS among ``headers``, in the order sent."""
    return tuple((name, value) for name, value in headers if name in _KEY_HEADER_SET)


# Names the log's rule takes for credentials (any name ending in key or token...) that choose
# the answer instead: dropping them gave every page of a listing the first page's answer.
_NOT_CREDENTIALS = frozenset(
    {
        "next_token", "page_token", "next_page_token", "continuation_token", "pagination_token",
        "nexttoken", "pagetoken", "nextpagetoken", "continuationtoken", "max_tokens", "sort_key",
        "sortkey", "partition_key", "partitionkey", "idempotency_key", "cache_key", "row_key",
        "start_key", "end_key", "last_key", "exclusive_start_key",
    }
)  # fmt: skip


def is_credential_parameter(name: str, value: str = "") -> bool:
    """True when a query parameter ``name=value`` (both percent-decoded) carries a credential:
    its name is one by the log's rule (redaction.is_credential_name; array forms too: ``key[]``,
    ``creds[token]``) and is not one of those that choose a page, or its value has a known
    key's shape (``sk-...``, ``AIza...``)."""
    # PHP and Rails array forms (key[]=, creds[token]=) name the credential inside brackets too.
    words = [word for word in name.replace("]", "[").split("[") if word]
    named = any(
        is_credential_name(word) and word.lower().replace("-", "_") not in _NOT_CREDENTIALS for word in words
    )
    return named or (bool(value) and redact_text(value) != value)


def query_without_credentials(query: str) -> str:
    """``query`` (raw, no "?") with each parameter carrying a credential dropped; the rest
    keeps its bytes and order."""
    if not query:
        return ""
    kept = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if not is_credential_parameter(unquote_plus(name), unquote_plus(value)):
            kept.append(part)
    return "&".join(kept)


def _number(text: str) -> float | int:
    """A JSON number with a fraction or exponent: as an int when it is a whole one a double
    holds exactly (1.0 -> 1), so it keys as the same number written without them."""
    value = float(text)
    if value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def canonical_body(body: bytes) -> str:
    """The body as the key reads it: canonical JSON, or ``sha256:<hex>`` of bytes that are not
    JSON in UTF-8; "" for no body."""
    if not body:
        return ""
    try:
        parsed = json.loads(body.decode("utf-8"), parse_float=_number)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):
        return "sha256:" + hashlib.sha256(body).hexdigest()


def base_key(
    target: str, method: str, path: str, query: str, body: bytes, headers: Sequence[tuple[str, str]]
) -> str:
    """The hex sha256 every entry of one request is stored under (see the module docstring).
    ``headers`` may be all of a request's (key_headers picks) or only its key headers."""
    picked = sorted(
        ([name.lower(), value] for name, value in headers if name.lower() in _KEY_HEADER_SET),
        key=lambda pair: pair[0],  # stable: one name's values keep their order
    )
    text = json.dumps(
        [KEY_VERSION, target, method, path, query_without_credentials(query), canonical_body(body), picked],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def vary_names(response_headers: Iterable[tuple[str, str]]) -> tuple[str, ...] | None:
    """The request headers an answer's ``Vary`` names (lower-cased, sorted, credentials and
    KEY_HEADERS left out: those are never keyed or keyed already); None for ``Vary: *``
    (RFC 9110 §12.5.5: the answer depends on more than headers, so it is never kept)."""
    names: set[str] = set()
    for name, value in response_headers:
        if name.lower() != "vary":
            continue
        for item in value.split(","):
            item = item.strip().lower()
            if item == "*":
                return None
            if item and item not in _KEY_HEADER_SET and not is_credential_header(item):
                names.add(item)
    return tuple(sorted(names))


def header_value(headers: RequestHeaders, name: str) -> str | None:
    """The value of ``name`` (lower-case) in ``headers``, repeats joined with ", " (RFC 9110
    §5.3); None when it was not sent."""
    values = [value for header, value in headers if header == name]
    return ", ".join(values) if values else None


def vary_of(names: Iterable[str], headers: RequestHeaders) -> tuple[tuple[str, str | None], ...]:
    """Each of ``names`` with the request's value of it (None: not sent), sorted by name."""
    return tuple((name, header_value(headers, name)) for name in sorted(names))


def matches_vary(
    vary: Mapping[str, str | None] | Iterable[tuple[str, str | None]], headers: RequestHeaders
) -> bool:
    """True when the request sent the same values of the names an entry's ``vary`` holds."""
    pairs = vary.items() if isinstance(vary, Mapping) else vary
    return all(header_value(headers, name) == value for name, value in pairs)
