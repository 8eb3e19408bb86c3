"""Routes: which target a request goes to, and what it is sent as.

Pure: a request head (raw path, query, whether it asks for an upgrade) and the body when it is
held for replay go in; a ``Route`` comes out. No sockets, no aiohttp, no files: the service
decides what to hold and does the sending. Built once per plan as a ``RouteTable`` from each
target's claims:

- **prefix** ``/anthropic``: ``/anthropic/v1/messages`` goes to that target as ``/v1/messages``.
  Matched on whole segments of the raw path (``/anthropic`` never matches ``/anthropical``);
  percent-encoding is not decoded, so ``/anthrop%69c`` is not ``/anthropic``.
- **model** globs ``claude-*``, ``o[0-9]*`` (fnmatch syntax, case-sensitive): the model the
  request names goes to the target that claims a glob matching it; the first glob declared wins
  when two targets' globs both match (the same glob claimed twice is refused).
- **default**: everything else, unchanged.

Order: prefix, then model, then default. Where the model is read, first found wins, in the
order the APIs themselves read it: Gemini's ``/models/{model}:generateContent`` path, Azure's
``/deployments/{name}/`` path, the ``model`` query parameter of a WebSocket upgrade (OpenAI
Realtime), the top-level ``"model"`` string of a JSON object body. A ``model_map`` renames the
model for whichever target the request goes to, in the place it was read.

Nothing here imports aiohttp or anything of ``desktop``: the config checks claims with
:func:`claim_problems` (each at its line in the file), the plan carries the built table, the
engine routes with it.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from urllib.parse import parse_qsl, quote, unquote_plus

__all__ = [
    "MAX_MODEL_BODY_BYTES",
    "RESERVED_PATH",
    "ClaimProblem",
    "Route",
    "RouteTable",
    "TargetClaims",
    "claim_problems",
    "glob_problem",
    "prefix_problem",
]

# Only a body the service already holds for replay is looked into: the same 1 MiB bound
# (issue 14, "bodies already held for replay (<= 1 MiB with a Content-Length)"), so reading a
# model never makes the proxy collect a body it would otherwise stream.
MAX_MODEL_BODY_BYTES = 1024 * 1024
# The proxy's own pages (addresses.RESERVED_PREFIX without its slash): never a target's prefix.
RESERVED_PATH = "/__trayproxy"

# Gemini: POST /v1beta/models/gemini-2.0-flash:generateContent (also :streamGenerateContent,
# :countTokens, :embedContent...); the method is any name after the colon of the last segment.
_GEMINI_MODEL = re.compile(r"/models/([^/:]+):[A-Za-z]+\Z")
# Azure OpenAI: /openai/deployments/{deployment-name}/chat/completions; the deployment is what
# Azure serves, whatever the body's "model" says.
_AZURE_DEPLOYMENT = re.compile(r"/deployments/([^/]+)/")
_DECODER = json.JSONDecoder()
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class TargetClaims:
    """What one target claims on the main port. ``prefixes``: whole-segment raw paths such as
    ``/anthropic`` (default none); ``models``: fnmatch globs (default none); ``model_map``: exact
    model name -> the name this target knows it by (default none); ``fallbacks``: target names
    tried in order when this one fails before any byte reached the client (default none)."""

    name: str
    prefixes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    model_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes. ``path``: the raw path to send (prefix stripped, query kept, never
    empty); ``chosen_by``: ``prefix:/x``, ``model:claude-*`` or ``default``; ``model``: the model
    read from the request (None when none was looked for or found); ``send_model``: the name sent
    instead, after ``model_map`` (None when unchanged); ``body``: the rewritten body when the
    model was renamed in it (None: send the held body as it is)."""

    target: str
    path: str
    chosen_by: str
    model: str | None = None
    send_model: str | None = None
    body: bytes | None = None
    fallbacks: tuple[str, ...] = ()
    # The prefix cut off the path ("" unless a prefix chose the target): a Location put back.
    prefix: str = ""


def _with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be claimed, in words, or None when it can."""
    if not prefix.startswith("/"):
        return f"prefix {prefix!r} must start with '/'"
    if prefix.endswith("/"):
        return f"prefix {prefix!r} must not end with '/'"
    if any(ch in prefix for ch in "?#") or not prefix.isprintable() or " " in prefix:
        return f"prefix {prefix!r} must be a path: no '?', '#', spaces or control characters"
    segments = prefix[1:].split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return f"prefix {prefix!r} must be whole path segments (no empty, '.' or '..' segment)"
    if prefix == RESERVED_PATH or prefix.startswith(RESERVED_PATH + "/"):
        return f"prefix {prefix!r} is the proxy's own ({RESERVED_PATH} cannot be claimed)"
    return None


def glob_problem(glob: str) -> str | None:
    """Why ``glob`` is not a model glob, or None. fnmatch reads an unclosed ``[`` as a literal
    bracket, which is almost surely a typo in a model name, so it is refused here."""
    if not glob or glob != glob.strip():
        return f"model glob {glob!r} must be a non-empty name without surrounding spaces"
    depth = 0
    for ch in glob:
        if ch == "[":
            depth = 1
        elif ch == "]":
            depth = 0
    if depth:
        return f"model glob {glob!r} has a '[' without its ']'"
    return None


def _overlap(first: str, second: str) -> bool:
    """One prefix equals the other or is a whole-segment prefix of it."""
    return first == second or second.startswith(first + "/") or first.startswith(second + "/")


@dataclass(frozen=True, slots=True)
class ClaimProblem:
    """Why one claim cannot stand: in ``target``'s ``key`` (``prefix``, ``models``, ``model_map``
    or ``fallbacks``), at ``item`` (the list index, or the model_map name), for a person to read
    beside where it is written."""

    target: str
    key: str
    item: int | str
    message: str


def _covers(earlier: str, later: str) -> bool:
    """Whether matching ``later``'s text against ``earlier`` tells that ``earlier`` takes every
    model ``later`` names: ``later`` has no wildcard, or neither has any but '*' (each '*'-free
    piece of ``earlier`` then lies within a '*'-free piece of ``later``, in order)."""
    if not any(char in later for char in "*?["):
        return True
    return not any(char in pattern for pattern in (earlier, later) for char in "?[")


def claim_problems(claims: Iterable[TargetClaims]) -> list[ClaimProblem]:
    """Every problem of ``claims`` taken together, in declaration order: a prefix or glob that
    cannot be one, a prefix overlapping an earlier one, a glob claimed twice, an empty model_map
    name, a fallback that is not another target (with the closest name, if one is close)."""
    claimed = list(claims)
    names = [claim.name for claim in claimed]
    problems: list[ClaimProblem] = []
    prefixes: list[tuple[str, str]] = []
    globs: list[tuple[str, str]] = []
    for claim in claimed:
        for index, prefix in enumerate(claim.prefixes):
            problem = prefix_problem(prefix)
            clash = next((item for item in prefixes if _overlap(item[0], prefix)), None)
            if problem is None and clash is not None:
                problem = f"prefix {prefix!r} overlaps prefix {clash[0]!r} of target {clash[1]!r}"
            if problem is not None:
                problems.append(ClaimProblem(claim.name, "prefix", index, problem))
            else:
                prefixes.append((prefix, claim.name))
        for index, glob in enumerate(claim.models):
            problem = glob_problem(glob)
            owner = next((name for other, name in globs if other == glob), None)
            if problem is None and owner is not None:
                problem = f"model glob {glob!r} is claimed by both target {owner!r} and target {claim.name!r}"
            # A claim an earlier glob of another target takes whole could never match (gpt-4o
            # or gpt-4o* after gpt-*). Told by matching this glob's text against the earlier one
            # only where that is sound: this one an exact name, or both written with '*' alone
            # (with '?' or '[...]' it is not: "gpt-[!3]*" matches the text "gpt-*", yet
            # gpt-3.5 is left for it).
            shadow = next(
                (
                    (other, name)
                    for other, name in globs
                    if name != claim.name and _covers(other, glob) and fnmatch.fnmatchcase(glob, other)
                ),
                None,
            )
            if problem is None and shadow is not None:
                problem = (
                    f"model glob {glob!r} never matches: {shadow[0]!r} of target {shadow[1]!r} is declared "
                    f"first and takes those models; put [targets.{claim.name}] before [targets.{shadow[1]}]"
                    f" or narrow {shadow[0]!r}"
                )
            if problem is not None:
                problems.append(ClaimProblem(claim.name, "models", index, problem))
            else:
                globs.append((glob, claim.name))
        for source, sent in claim.model_map.items():
            if not source or not sent:
                problems.append(
                    ClaimProblem(claim.name, "model_map", source, "model_map names must not be empty")
                )
        for index, fallback in enumerate(claim.fallbacks):
            if fallback == claim.name:
                message = f"fallback {fallback!r} is this target itself"
            elif fallback in claim.fallbacks[:index]:
                message = f"fallback {fallback!r} is named twice"
            elif fallback not in names:
                close = difflib.get_close_matches(fallback, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; the targets are {', '.join(names)}"
                message = f"fallback {fallback!r} is not a target{hint}"
            else:
                continue
            problems.append(ClaimProblem(claim.name, "fallbacks", index, message))
    return problems


@dataclass(frozen=True, slots=True)
class RouteTable:
    """The routes of one plan, checked and compiled once by ``build``; ``route`` per request."""

    default: str
    prefixes: tuple[tuple[str, str], ...]  # (prefix, target), in declaration order
    globs: tuple[tuple[str, str], ...]  # (glob, target); group gI of glob_pattern is globs[I]
    glob_pattern: re.Pattern[str] | None
    model_maps: Mapping[str, Mapping[str, str]]  # target -> its renames; only targets with some
    fallbacks: Mapping[str, tuple[str, ...]]

    @classmethod
    def build(cls, claims: Iterable[TargetClaims], *, default: str) -> RouteTable:
        """Check every claim and compile the globs; ValueError with the first of
        :func:`claim_problems` (naming both sides of a clash)."""
        claimed = list(claims)
        names = [claim.name for claim in claimed]
        if default not in names:
            raise ValueError(f"default target {default!r} is not among the targets {names}")
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"target {name!r} is listed twice")
        problems = claim_problems(claimed)
        if problems:
            raise ValueError(f"target {problems[0].target!r}: {problems[0].message}")
        prefixes = [(prefix, claim.name) for claim in claimed for prefix in claim.prefixes]
        globs = [(glob, claim.name) for claim in claimed for glob in claim.models]
        # One alternation, each glob its own named group, so one match finds the first glob
        # declared that fits (``lastgroup``: the outer group closes last) instead of one match per
        # glob. Named, not numbered: a future translate() may add capturing groups of its own.
        pattern = (
            re.compile(
                "|".join(f"(?P<g{index}>{fnmatch.translate(glob)})" for index, (glob, _) in enumerate(globs))
            )
            if globs
            else None
        )
        return cls(
            default=default,
            prefixes=tuple(prefixes),
            globs=tuple(globs),
            glob_pattern=pattern,
            model_maps=MappingProxyType(
                {c.name: MappingProxyType(dict(c.model_map)) for c in claimed if c.model_map}
            ),
            fallbacks=MappingProxyType({c.name: tuple(c.fallbacks) for c in claimed}),
        )

    @property
    def reads_models(self) -> bool:
        """Whether any request's model is ever looked at (a glob or a model_map is claimed)."""
        return self.glob_pattern is not None or bool(self.model_maps)

    def route(self, raw_path: str, query: str, body: bytes | None, *, upgrade: bool) -> Route:
        """Pick the target for one request: prefix, then model, then the default."""
        for prefix, target in self.prefixes:
            if raw_path.startswith(prefix) and (len(raw_path) == len(prefix) or raw_path[len(prefix)] == "/"):
                stripped = raw_path[len(prefix) :] or "/"
                return replace(
                    self._renamed(target, f"prefix:{prefix}", stripped, query, body, upgrade), prefix=prefix
                )
        if self.glob_pattern is not None:
            found = _read_model(raw_path, query, body, upgrade=upgrade)
            if found is not None:
                match = self.glob_pattern.match(found[0])
                if match is not None and match.lastgroup is not None:
                    glob, target = self.globs[int(match.lastgroup[1:])]
                    return self._send(target, f"model:{glob}", raw_path, query, body, found)
            return self._send(self.default, "default", raw_path, query, body, found)
        return self._renamed(self.default, "default", raw_path, query, body, upgrade)

    def attempts(self, raw_path: str, query: str, body: bytes | None, *, upgrade: bool) -> tuple[Route, ...]:
        """The route (see :meth:`route`), then one per fallback of its target, in order, each
        with that target's own rename of the model: what failover tries, first to last."""
        first = self.route(raw_path, query, body, upgrade=upgrade)
        if not first.fallbacks:
            return (first,)
        path = raw_path[len(first.prefix) :] or "/"
        return (
            first,
            *(
                replace(
                    self._renamed(name, first.chosen_by, path, query, body, upgrade),
                    fallbacks=(),
                    prefix=first.prefix,
                )
                for name in first.fallbacks
            ),
        )

    def _renamed(
        self, target: str, chosen_by: str, path: str, query: str, body: bytes | None, upgrade: bool
    ) -> Route:
        """A route picked without reading the model: read it only if this target renames."""
        found = None
        if target in self.model_maps:
            found = _read_model(path, query, body, upgrade=upgrade)
        return self._send(target, chosen_by, path, query, body, found)

    def _send(
        self,
        target: str,
        chosen_by: str,
        path: str,
        query: str,
        body: bytes | None,
        found: tuple[str, _Place] | None,
    ) -> Route:
        """The route to ``target``, with the model renamed where it was read if the map says so."""
        fallbacks = self.fallbacks[target]
        if found is None:
            return Route(target, _with_query(path, query), chosen_by, fallbacks=fallbacks)
        model, place = found
        renames = self.model_maps.get(target)
        sent = renames.get(model) if renames else None
        if sent is None or sent == model:
            return Route(target, _with_query(path, query), chosen_by, model, fallbacks=fallbacks)
        new_body = None
        if place.kind == "path":
            # Percent-encoded as the query's is: a "/" or a space in the name must not change
            # the path's shape or break the request line.
            path = path[: place.start] + quote(sent, safe="") + path[place.end :]
        elif place.kind == "query":
            query = _replace_query_model(query, sent)
        else:
            assert body is not None  # a model read from the body came from a body
            new_body = replace_model(body, sent)
            if new_body is None:  # not a body the rename can keep faithful: sent as it is
                return Route(target, _with_query(path, query), chosen_by, model, fallbacks=fallbacks)
        return Route(target, _with_query(path, query), chosen_by, model, sent, new_body, fallbacks)


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a model was read: ``path`` (characters start:end of the raw path), ``query``
    (the ``model`` parameter) or ``body`` (the top-level "model" member)."""

    kind: str
    start: int = 0
    end: int = 0


_IN_QUERY = _Place("query")
_IN_BODY = _Place("body")


def _read_model(raw_path: str, query: str, body: bytes | None, *, upgrade: bool) -> tuple[str, _Place] | None:
    """The model a request names and where, or None; never raises on what a client sent."""
    found = _GEMINI_MODEL.search(raw_path) or _AZURE_DEPLOYMENT.search(raw_path)
    if found is not None:
        return found.group(1), _Place("path", found.start(1), found.end(1))
    if upgrade and query:
        # Form-decoded, as the server reading ?model= sees it; the last one wins, as in
        # most frameworks' single-value lookups.
        models = [value for name, value in parse_qsl(query, keep_blank_values=True) if name == "model"]
        if models and models[-1]:
            return models[-1], _IN_QUERY
    if body is not None and 0 < len(body) <= MAX_MODEL_BODY_BYTES:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
            return None
        if isinstance(document, dict):
            model = document.get("model")
            if isinstance(model, str):
                return model, _IN_BODY
    return None


def _replace_query_model(query: str, sent: str) -> str:
    """``query`` with its last ``model`` parameter's value replaced, every other byte kept."""
    parts = query.split("&")
    for index in range(len(parts) - 1, -1, -1):
        # Decoded as parse_qsl decodes it when the model is read (mod%65l, +), so the parameter
        # renamed is the one read.
        name = unquote_plus(parts[index].split("=", 1)[0])
        if name == "model":
            parts[index] = "model=" + quote(sent, safe="")
            break
    return "&".join(parts)


def replace_model(body: bytes, sent: str) -> bytes | None:
    """The JSON object ``body`` with its top-level "model" value replaced by ``sent``, byte for
    byte elsewhere; None when that cannot be done faithfully.

    Only a UTF-8 body is renamed (RFC 8259 §8.1: JSON exchanged between systems must be
    UTF-8; a byte-order mark before it is kept): its members are walked with the decoder's ``raw_decode``
    and every top-level "model" value's characters are swapped (all of them: servers differ
    on which of duplicate names they read). Re-encoding any other body would change what it
    says (numbers rounded, an encoding the Content-Type does not name), so it goes unrenamed.
    """
    encoded = json.dumps(sent, ensure_ascii=False)
    # A UTF-8 byte-order mark (which RFC 8259 §8.1 lets a reader ignore) stays where it is.
    mark = _UTF8_BOM if body.startswith(_UTF8_BOM) else b""
    try:
        text = body[len(mark) :].decode("utf-8")
        spans = _model_spans(text)
    except (UnicodeDecodeError, ValueError):
        return None
    if not spans:
        return None
    for start, end in reversed(spans):
        text = text[:start] + encoded + text[end:]
    return mark + text.encode("utf-8")


def _skip_space(text: str, index: int) -> int:
    """The index of the first non-whitespace character at or after ``index``."""
    while index < len(text) and text[index] in " \t\n\r":  # RFC 8259 §2: insignificant whitespace
        index += 1
    return index


def _model_spans(text: str) -> list[tuple[int, int]]:
    """Where the top-level "model" values of the JSON object ``text`` lie; [] for none or for
    text that is not one JSON object."""
    index = _skip_space(text, 0)
    if text[index : index + 1] != "{":
        return []
    index = _skip_space(text, index + 1)
    spans: list[tuple[int, int]] = []
    if text[index : index + 1] == "}":
        return []
    while True:
        name, index = _DECODER.raw_decode(text, index)
        index = _skip_space(text, index)
        if text[index : index + 1] != ":":
            return []
        index = _skip_space(text, index + 1)
        _, end = _DECODER.raw_decode(text, index)
        if name == "model":
            spans.append((index, end))
        index = _skip_space(text, end)
        if text[index : index + 1] == "}":
            return spans if _skip_space(text, index + 1) == len(text) else []
        if text[index : index + 1] != ",":
            return []
        index = _skip_space(text, index + 1)
