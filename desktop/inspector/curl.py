"""An exchange's request as a cURL command a person can copy and send again through TrayProxy.

The URL is the proxy's own (``http://127.0.0.1:PORT/path``): sent there, the request gets the
target's key added as it did the first time, so the command needs none. Credential headers
keep their name and scheme with ``$TRAYPROXY_KEY`` for the key (in double quotes, so a shell
fills it in from the environment when set; the proxy replaces it anyway); every other value is
masked as the page shows it. Quoted for a POSIX shell (shlex.quote); a body that is not UTF-8
is piped in from printf's octal escapes, which POSIX printf reads.
"""

from __future__ import annotations

import re
import shlex

from desktop.inspector.masking import Masker, is_credential_header
from desktop.inspector.store import Exchange

__all__ = ["curl_command"]

PLACEHOLDER = "$TRAYPROXY_KEY"
# Not sent again: curl sets them itself (Host, Content-Length), they belong to the first
# connection (RFC 9110 §7.6.1), a compressed answer would print as bytes (Accept-Encoding), or
# they are credentials for something other than the target (the proxy's, cookies of localhost).
_LEFT_OUT = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "expect",
        "accept-encoding",
        "cookie",
        "proxy-authorization",
    }
)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Bytes printf may take as they are inside single quotes: printable ASCII but \ % and '.
_PRINTF_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("\\"), ord("%"), ord("'")}


def curl_command(exchange: Exchange, masker: Masker) -> str:
    """The request as a copyable ``curl -N`` command (lines joined with `` \\``)."""
    head = exchange.head
    body = exchange.request_body
    url = shlex.quote(f"http://127.0.0.1:{head.port}{masker.path(head.raw_path)}")
    words = [f"curl -N {url}"]
    if head.method != ("GET" if body is None else "POST"):  # what curl sends unless told
        words.append(f"-X {shlex.quote(head.method)}")
    for raw_name, raw_value in head.raw_headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("utf-8", "replace")
        if name.lower() in _LEFT_OUT:
            continue
        words.append("-H " + _header_word(name, value, masker))
    notes: list[str] = []
    piped = ""
    if body is not None:
        masked = masker.text(body.decode("latin-1")).encode("latin-1")
        try:
            words.append("--data-binary " + shlex.quote(masked.decode("utf-8")))
        except UnicodeDecodeError:
            piped = f"printf {_printf_format(masked)} | "
            words.append("--data-binary @-")
        if exchange.request_body_cut:
            notes.append("# the body was cut at its cap: only its start is here")
    elif _sent_a_body(exchange):
        notes.append("# the request body was not kept (bodies off, streamed, or evicted)")
    return "\n".join([piped + " \\\n  ".join(words), *notes])


def _header_word(name: str, value: str, masker: Masker) -> str:
    if not is_credential_header(name):
        return shlex.quote(f"{name}: {masker.header(name, value)}")
    scheme, space, credential = value.strip().partition(" ")
    shown = f"{scheme} {PLACEHOLDER}" if space and scheme.isalpha() and credential.strip() else PLACEHOLDER
    if _PLAIN_NAME.fullmatch(name):
        return f'"{name}: {shown}"'  # the shell fills the key in, when set
    return shlex.quote(f"{name}: {shown}")


def _printf_format(data: bytes) -> str:
    """``data`` as a printf format in single quotes: each byte as it is or as an octal escape."""
    return "'" + "".join(chr(b) if b in _PRINTF_PLAIN else f"\\{b:03o}" for b in data) + "'"


def _sent_a_body(exchange: Exchange) -> bool:
    for raw_name, raw_value in exchange.head.raw_headers:
        name = raw_name.lower()
        if name == b"transfer-encoding" or (
            name == b"content-length" and raw_value.strip() not in (b"", b"0")
        ):
            return True
    return False
