"""Secret redaction for log lines, error bodies and request targets.

Two layers, because either alone misses something:

* shapes: credential headers (``Authorization: ...``, ``api-key=...``), ``key=`` and
  ``token=`` query parameters, the password in a URL's ``user:password@``, bearer tokens, and
  the keys of well-known services by their prefix (OpenAI and Anthropic ``sk-``, GitHub
  ``ghp_``, GitLab ``glpat-``, Google ``AIza``, Slack ``xoxb-``, JWTs, TrayProxy's own
  ``tp-local-``) are masked wherever they appear, so a key the proxy never saw (a client's
  own) is masked too;
* values: every configured secret is registered here and masked verbatim, so a key in an
  unusual place (an exception message, a header with a custom name) is masked as well.

Everything that may print a request detail goes through :func:`redact_text`; the log handlers
installed by ``desktop.logs`` apply it to every formatted record, aiohttp's own included. A
request target (the access line's path and query) goes through :func:`redact_target` first,
which also finds keys a client percent-encoded (``?auth=Bearer%20sk-...``, ``%253D``).

The ground floor (STYLE.md section 1, row 1): the engine, the config readers, the log handlers,
the controller and the CLI all mask through this one module, so it imports nothing of
``desktop``; what it is handed (a target to name) it knows only by the attributes it reads.
"""

from __future__ import annotations

import logging
import re
import string
import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import unquote, urlsplit

__all__ = [
    "MASK",
    "SENSITIVE_HEADERS",
    "Named",
    "RedactingFormatter",
    "display_target",
    "holds_registered_secret",
    "is_credential_name",
    "is_placeholder",
    "looks_like_key",
    "mask_token_like",
    "redact_target",
    "redact_text",
    "redact_url",
    "register_secrets",
]

MASK = "***"
# Lower-case names of the headers that carry an API key: OpenAI-style Bearer, Anthropic's
# x-api-key, Azure's api-key, Google's x-goog-api-key. Declared here, the one module every row
# may import, and read by the config parser (keep_headers), the local token check (where SDKs
# put their key), the header rules and the controller. When a target adds one of these, the
# client's others are placeholders or keys meant for someone else ("Authorization: Bearer
# unused" beside the target's x-api-key), and a target given two credentials may check the
# wrong one, or log it; so they stay behind unless the target keeps them (``keep_headers``).
# Each name holds "key" or "auth": the quick test for a text with nothing to mask
# (_may_hold_shape) looks for those words; a name without them must be added there.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
# Lower-case names of headers whose values are never shown: the API key headers, and also
# credentials that are no API key a target takes (so no keep_headers choice, nor a place for
# the token): a proxy's password (RFC 9110 §11.7.2) and session cookies (RFC 6265).
_OTHER_CREDENTIAL_HEADERS = frozenset({"proxy-authorization"})
_COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})
SENSITIVE_HEADERS = CREDENTIAL_HEADERS | _OTHER_CREDENTIAL_HEADERS | _COOKIE_HEADERS
# Shorter values are not registered for verbatim masking: masking "abc" everywhere would
# shred log lines without protecting anything worth protecting.
MIN_SECRET_LEN = 6


def _alternation(names: frozenset[str]) -> str:
    """A regex alternation of ``names``, longest first (so none stops at a shorter one)."""
    return "|".join(re.escape(name) for name in sorted(names, key=lambda name: (-len(name), name)))


_HEADER_SHAPE = re.compile(
    # Not right after "?", "&" or ";", nor inside a longer name (after "-"): there the name is a
    # query parameter's, whose value ends at the next "&" (_QUERY_SHAPE masks it), not at the
    # end of the line. (Cookies have no such rule: "set-cookie" holds "cookie" after a "-".)
    rf"(?i)\b((?<![?&;-])(?:{_alternation(CREDENTIAL_HEADERS | _OTHER_CREDENTIAL_HEADERS)})"
    rf"|{_alternation(_COOKIE_HEADERS)})"
    # A quote may close the name and open the value: dict, JSON and CIMultiDict reprs; a b
    # before the opening quote is a bytes repr (not the B of "Bearer").
    r"(['\"]?\s*[:=]\s*(?:b(?=['\"]))?['\"]?)([^\r\n'\"\\]*)"
)
# A header value that is only a placeholder ("Bearer {key}", "{env:OPENAI_API_KEY}", as config
# files and serve's --header write them) holds no secret: shown as written, it says which header
# gets the key without giving it. The word before it must be an auth scheme people use (RFC 9110
# §11.1; Token, Bot, ApiKey by convention), not any word: "s3cret {key}" is masked.
_TEMPLATE_VALUE = re.compile(
    r"(?i)\s*(?:(?:bearer|basic|token|bot|apikey|key|oauth|digest|negotiate)\s+)?"
    r"\{(?:key|env:[A-Za-z_][A-Za-z0-9_]*)\}\s*"
)
# Query parameters named for a credential: a name whose last word is one of _CREDENTIAL_WORDS,
# alone or after words joined by -, _ or . (Gemini's ``key``, ``api_key``, ``x-goog-api-key``,
# Azure API Management's ``subscription-key``, OAuth's ``access_token`` (RFC 6750 §2.3) and
# ``client_secret`` (RFC 6749 §2.3.1), S3's ``X-Amz-Signature`` and ``X-Amz-Security-Token``,
# Azure SAS's ``sig``), or run together after a word of _CREDENTIAL_PREFIXES (``apikey``,
# ``accessKey``, ``clientSecret``); and Azure Functions' ``code``, alone (``zip_code`` is no
# credential). A whole last word, so ``monkey``, ``keys`` and ``max_tokens`` stay; and a
# pagination cursor (``page_token``, ``next_page_token``: Google's list APIs) is no credential.
_CREDENTIAL_WORDS = "key|token|secret|password|passwd|pwd|signature|sig|auth|authorization|credentials?"
_CREDENTIAL_PREFIXES = "api|access|secret|client|subscription|session|refresh|private|app|master|account|auth|id"
_CREDENTIAL_NAME = (
    rf"(?:(?:[a-z0-9]+[-_.])*(?:{_CREDENTIAL_PREFIXES})?(?<!page[-_.])(?:{_CREDENTIAL_WORDS})|code)"
)
# The array forms of PHP and Rails name one too: key[]=, token[0]=, creds[key]=.
_QUERY_SHAPE = re.compile(
    rf"(?i)([?&;](?:[a-z0-9_.-]*\[)*{_CREDENTIAL_NAME}\]*(?:\[[^\]=&;#\s]*\])*=)([^&;#\s'\"]*)"
)
_CREDENTIAL_NAME_ONLY = re.compile(rf"(?i){_CREDENTIAL_NAME}")
# In a URL the space after "Bearer" may be a form-encoded "+".
_BEARER_SHAPE = re.compile(r"(?i)\b(bearer)([\s+]+)([A-Za-z0-9._~+/=-]{6,})")
# Keys of well-known services, by the prefix they are issued with; the prefix stays, to say
# which kind of key it was: OpenAI and Anthropic (sk-, sk-proj-, sk-ant-), TrayProxy's own local
# access tokens (config.model.LOCAL_TOKEN_PREFIX; even one rotated out before this process
# registered it), GitHub (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_), GitLab (glpat-), Google
# (AIza), Slack (xoxb-, xoxp-, ...), and JWTs: three base64url parts, the first a JSON object, so
# "eyJ". Not after a letter or digit ("task-1234567" holds no key).
_KEY_SHAPE = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(sk-|tp-local-)[A-Za-z0-9_-]{6,}"
    r"|(gh[pousr]_|github_pat_|glpat-|AIza|xox[a-z]-)[A-Za-z0-9_-]{10,}"
    r"|(eyJ)[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"
    r")"
)
# ``scheme://user:password@host``: the password goes (RFC 3986 §3.2.1 deprecates it in URLs, but
# proxy URLs carry one, and a person may paste one as a target).
_USERINFO_SHAPE = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]*:)([^/\s@'\"]+)@")

# Every shape above but the URL password's contains one of these words (any case): a text with
# none of them, and no registered secret, has nothing else to mask, and one search for them
# costs less than four passes. (In this alternation, "://...@" cost an access line 2 to 9 %.)
# "key" stands for api-key and key=, "auth" for authorization and auth=; GitHub's prefixes
# are looked for only in a text with an underscore (see _may_hold_shape).
_SHAPE_WORDS = ("key", "auth", "token", "cookie", "bearer", "sk-", "tp-local-", "glpat-", "aiza", "xox", "eyj")
# The other credential parameter names hold one of these (sig for signature, pass for passwd
# and password, credential for credentials); looked for only in a text with a "?", "&" or ";".
_PARAMETER_WORDS = ("secret", "pass", "pwd", "sig", "credential", "code=")
_GITHUB_WORDS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")
_ANY_SHAPE = re.compile(
    "(?i)" + "|".join(re.escape(word) for word in _SHAPE_WORDS + _GITHUB_WORDS + _PARAMETER_WORDS)
)

_lock = threading.Lock()
_known_secrets: tuple[str, ...] = ()


def register_secrets(values: Iterable[str]) -> None:
    """Mask these exact values from now on (configured keys, resolved header values)."""
    global _known_secrets
    fresh = {v for v in values if len(v) >= MIN_SECRET_LEN}
    with _lock:
        # Longest first, so a value that contains another is masked whole.
        merged = set(_known_secrets) | fresh
        _known_secrets = tuple(sorted(merged, key=len, reverse=True))


def holds_registered_secret(data: str | bytes) -> bool:
    """True when ``data`` holds one of the registered secrets verbatim (bytes: their UTF-8).
    What must never be written to disk (the recording of answers) is checked with this."""
    if isinstance(data, bytes):
        return any(secret.encode("utf-8", "surrogatepass") in data for secret in _known_secrets)
    return any(secret in data for secret in _known_secrets)


def redact_text(text: str) -> str:
    """Return ``text`` with every credential shape and registered secret masked."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _USERINFO_SHAPE.sub(lambda m: m.group(1) + MASK + "@", text)
    if not _may_hold_shape(text):
        return text
    text = _HEADER_SHAPE.sub(_mask_header_value, text)
    text = _QUERY_SHAPE.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER_SHAPE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return _KEY_SHAPE.sub(_mask_key, text)


def _mask_key(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2) or match.group(3)) + MASK


# A run like a token: 20+ letters, digits and -_./+= with both letters and digits (a GitLab
# token, a JWT, a session id). Too broad for log lines (request ids, hashes would go); right
# for the few texts that are about credentials: a failing key command's error, its command line.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-.+/=]{20,}")


def mask_token_like(text: str) -> str:
    """``text`` with every token-like run masked (see _TOKEN_LIKE); plain words stay."""

    def mask(match: re.Match[str]) -> str:
        run = match.group(0)
        has_letter = any(c.isalpha() for c in run)
        has_digit = any(c.isdigit() for c in run)
        return MASK if has_letter and has_digit else run

    return _TOKEN_LIKE.sub(mask, text)


def is_credential_name(name: str) -> bool:
    """True when a setting or parameter called ``name`` holds a credential: its last word is
    key, token, secret, password, signature, auth... (see _QUERY_SHAPE), any case."""
    return _CREDENTIAL_NAME_ONLY.fullmatch(name) is not None


# A word of a key rather than of a name: keys are long random runs of letters and digits;
# names are words (OPENAI_API_KEY, AZURE_OPENAI_KEY_2024), none of 16 characters with both.
_KEY_WORD_CHARS = 16
_ENV_PLACEHOLDER_NAME = re.compile(r"\{env:([^{}]*)\}")


def looks_like_key(text: str) -> bool:
    """True when ``text``, written where a name belongs (an environment variable's, a keychain
    entry's), is more likely a key pasted there: a known key shape, or a word (between -, _
    and .) of 16 or more letters and digits with both (lower-case hex, base64 runs)."""
    if redact_text(text) != text:
        return True
    return any(
        len(word) >= _KEY_WORD_CHARS and any(c.isalpha() for c in word) and any(c.isdigit() for c in word)
        for word in re.split(r"[-_.\s]+", text)
    )


def is_placeholder(value: str) -> bool:
    """True when a header value is only a placeholder, shown as written ("Bearer {key}",
    "{env:OPENAI_API_KEY}"), and the variable it names does not look like a key itself."""
    if _TEMPLATE_VALUE.fullmatch(value) is None:
        return False
    return not any(looks_like_key(name) for name in _ENV_PLACEHOLDER_NAME.findall(value))


def _may_hold_shape(text: str) -> bool:
    # For ASCII text (every access line but a rare one), lower() and a few substring searches
    # give the same answer as the case-insensitive search, about 10 times sooner (0.6 against
    # 7 µs for an access line); Unicode case rules (the dotless i) are left to the regex.
    if not text.isascii():
        return _ANY_SHAPE.search(text) is not None
    lowered = text.lower()
    # Written out, not a loop over _SHAPE_WORDS: a third of the cost, on every access line. Four
    # words hold a "k", which few request lines do.
    return (
        ("k" in lowered and ("key" in lowered or "token" in lowered or "cookie" in lowered or "sk-" in lowered))
        or "auth" in lowered
        or "bearer" in lowered
        or "tp-local-" in lowered
        or "glpat-" in lowered
        or "aiza" in lowered
        or "xox" in lowered
        or "eyj" in lowered
        or ("_" in lowered and any(word in lowered for word in _GITHUB_WORDS))
        # The other credential parameters: only after a "?", "&" or ";", as _QUERY_SHAPE needs.
        or (
            ("?" in lowered or "&" in lowered or ";" in lowered)
            and (
                "sig" in lowered
                or "pass" in lowered
                or "secret" in lowered
                or "pwd" in lowered
                or "credential" in lowered
                or "code=" in lowered
            )
        )
    )


def _mask_header_value(match: re.Match[str]) -> str:
    value = match.group(3)
    if is_placeholder(value):
        return match.group(0)
    return match.group(1) + match.group(2) + MASK


# Percent-decoding rounds a request target gets before its shapes are looked for: a key
# encoded twice (%2520, %253D: a client that encodes an already encoded URL) is still found;
# a key encoded more often than that is not (nor would a target read it as a key). Bounded,
# since each round costs a pass over up to 16 KiB a client chooses.
DECODE_ROUNDS = 3
# "2F", "2f", "e9"... -> the character of that code.
_ESCAPED = {a + b: chr(int(a + b, 16)) for a in string.hexdigits for b in string.hexdigits}


def redact_target(target: str) -> str:
    """``target`` (a request's path and query, as sent) with every credential masked: the
    shapes of :func:`redact_text` anywhere in the path or the query, whatever the parameter is
    called, as sent and percent-decoded (and decoded again), and registered secrets once
    decoded (as sent, the line's redact_text masks them). The rest keeps its bytes, escapes
    included; a target with nothing to mask comes back as it is."""
    if target[:1] != "/" and "@" in target:
        target = _authority_userinfo_masked(target)
    if "%" not in target:
        if not _may_hold_shape(target):
            return target
        return _masked(target, _secret_spans(target))
    decoded, rounds = _percent_decoded(target)
    spans = [(start, start + len(secret)) for secret in _known_secrets for start in _find_all(decoded, secret)]
    if _may_hold_shape(decoded):
        spans += _secret_spans(decoded)
    if not spans:
        return target
    for escapes in reversed(rounds):
        # Each escape before a position in the decoded text stood for 3 characters, not 1.
        spans = [(a + 2 * bisect_left(escapes, a), b + 2 * bisect_left(escapes, b)) for a, b in spans]
    return _masked(target, spans)


def _authority_userinfo_masked(target: str) -> str:
    """A request target in authority form (``CONNECT user:password@host:443``, refused but
    logged) with its password masked as :func:`redact_url` masks one; other forms unchanged."""
    head, slash, tail = target.partition("/")
    if "://" in target or "@" not in head:
        return target
    userinfo, host = head.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    return (f"{user}:{MASK}" if colon else MASK) + "@" + host + slash + tail


def url_secrets(url: str) -> tuple[str, ...]:
    """The keys written into ``url`` itself: its ``user:password@`` password and each path
    segment that looks like a key (a gateway's ``/gw/KEY/``), to register with the others."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    for segment in parts.path.split("/"):
        # As written and percent-decoded: an answer may echo either.
        found.extend({form for form in (segment, unquote(segment)) if looks_like_key(form)})
    return tuple(found)


def redact_url(url: str) -> str:
    """``url`` as it may be shown to a person: its scheme and host as written, the password of
    ``user:password@`` masked (a lone ``user@``, or a key-like user, whole), a path segment
    that looks like a key of no known shape masked whole (:func:`looks_like_key`), and the
    path and query masked as an access line's target (key shapes anywhere, credential
    parameters, registered secrets, also percent-encoded)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return redact_text(redact_target(url))
    host_end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if 0 <= found < host_end:
            host_end = found
    authority, tail = rest[:host_end], rest[host_end:]
    if "@" in authority:
        # user:password@ keeps the user name (it says whose account); a lone user@ is more
        # often a token (https://TOKEN@host), so it goes whole.
        userinfo, host = authority.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:{MASK}@{host}" if colon and not looks_like_key(user) else f"{MASK}@{host}"
    path, question, query = tail.partition("?")
    # A gateway's /gw/9f8e7d6c...: a base URL names places, and a run of 16 letters and digits
    # names none a person reads. (A known shape keeps its prefix: redact_target masks it.)
    path = "/".join(
        MASK if looks_like_key(segment) and redact_text(segment) == segment else segment
        for segment in path.split("/")
    )
    return redact_text(f"{scheme}://{authority}{redact_target(path + question + query)}")


class Named(Protocol):
    """What :func:`display_target` reads of a target (``config.model.Target`` is one)."""

    @property
    def display_name(self) -> str: ...


def display_target(target: Named) -> str:
    """How a target is named wherever a person sees it (error answers, the health document,
    the tray's status and notifications): its name, or its URL when it has none, masked as
    :func:`redact_url` does, so a key written into the target URL's path never shows."""
    return redact_url(target.display_name)


def _percent_decoded(text: str) -> tuple[str, list[list[int]]]:
    """``text`` percent-decoded up to DECODE_ROUNDS times (each byte to the character of the
    same code: the shapes are ASCII), and per round the decoded positions of its escapes."""
    rounds: list[list[int]] = []
    for _ in range(DECODE_ROUNDS):
        if "%" not in text:
            break
        # Split on "%" and look the two characters after each up: three times quicker than a
        # regex with a callback, for the usual one or two escapes.
        first, *rest = text.split("%")
        out = [first]
        size = len(first)
        escapes: list[int] = []
        for part in rest:
            char = _ESCAPED.get(part[:2])
            if char is None:
                out += ("%", part)
                size += 1 + len(part)
            else:
                escapes.append(size)
                out += (char, part[2:])
                size += len(part) - 1
        if not escapes:
            break
        text = "".join(out)
        rounds.append(escapes)
    return text, rounds


def _find_all(text: str, part: str) -> Iterable[int]:
    start = text.find(part)
    while start >= 0:
        yield start
        start = text.find(part, start + len(part))


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """Where in ``text`` the shapes' secret parts are (what redact_text would mask)."""
    spans = [m.span(3) for m in _HEADER_SHAPE.finditer(text) if not is_placeholder(m.group(3))]
    spans += [m.span(2) for m in _QUERY_SHAPE.finditer(text)]
    spans += [m.span(3) for m in _BEARER_SHAPE.finditer(text)]
    for m in _KEY_SHAPE.finditer(text):
        prefix = next(group for group in (1, 2, 3) if m.group(group) is not None)
        spans.append((m.end(prefix), m.end()))
    return spans


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of ``spans`` (overlapping or not) replaced by one MASK."""
    out: list[str] = []
    kept_to = 0
    for start, end in sorted(set(spans)):
        if start < kept_to or (start == end == kept_to and out):
            # Overlaps (or ends at) the span masked last: that MASK covers it.
            kept_to = max(kept_to, end)
            continue
        out += (text[kept_to:start], MASK)
        kept_to = end
    out.append(text[kept_to:])
    return "".join(out)


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output, traceback included, is passed through redact_text."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))
