"""What each target claims on the main port, as the file writes it, and what is wrong with it.

A target's table may hold::

    prefix = "/anthropic"                 # or a list: ["/anthropic", "/claude"]
    models = ["claude-*"]                 # fnmatch globs, case-sensitive
    model_map = { "claude-sonnet-4-5" = "anthropic/claude-sonnet-4.5" }
    fallbacks = ["openrouter"]            # other targets, tried in order

:func:`read_claims` reads one table's (each item that is not a string at its own line and
column); :func:`check_claims` checks every target's together with
:func:`desktop.routing.claim_problems`, the very rules the route table is built by, so what
``config check`` passes the proxy can route: a problem is placed at its item (the list
element, the ``model_map`` name, the ``fallbacks`` entry), not at the setting.

Row 2: called by ``parse.py``; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from desktop.config import options
from desktop.config.checks import Checker, type_name
from desktop.routing import TargetClaims, claim_problems

__all__ = ["check_claims", "read_claims"]

# ClaimProblem.key -> the setting it is written as.
_SETTING_OF = {
    "prefix": options.PREFIX.key,
    "models": options.MODELS.key,
    "model_map": options.MODEL_MAP.key,
    "fallbacks": options.FALLBACKS.key,
}


def read_claims(check: Checker, name: str, table: dict[str, Any]) -> TargetClaims:
    """The claims of target ``name`` (its ``table``); what cannot be used is a problem and left out."""
    path = ("targets", name)
    prefix = check.typed(table, options.PREFIX.key, options.PREFIX.types, path, ())
    prefixes = _strings(check, (*path, options.PREFIX.key), [prefix] if isinstance(prefix, str) else prefix)
    models = _strings(
        check, (*path, options.MODELS.key), check.typed(table, options.MODELS.key, options.MODELS.types, path, ())
    )
    fallbacks = _strings(
        check,
        (*path, options.FALLBACKS.key),
        check.typed(table, options.FALLBACKS.key, options.FALLBACKS.types, path, ()),
    )
    model_map: dict[str, str] = {}
    where = (*path, options.MODEL_MAP.key)
    for model, sent in check.typed(table, options.MODEL_MAP.key, options.MODEL_MAP.types, path, {}).items():
        if isinstance(sent, str):
            model_map[model] = sent
        elif isinstance(sent, dict):
            # `gpt-4.1 = "x"` is a dotted key: a table `gpt-4` holding `1`.
            check.item_problem(
                where,
                model,
                f"'{'.'.join(where)}': '{model}' is a table, not a model name;"
                ' a name with a dot needs quotes, as in "gpt-4.1" = "openai/gpt-4.1"',
            )
        else:
            check.item_problem(
                where, model, f"'{'.'.join(where)}': the name sent for '{model}' must be a string, not {type_name(sent)}"
            )
    return TargetClaims(
        name=name,
        prefixes=prefixes,
        models=models,
        model_map=MappingProxyType(model_map),
        fallbacks=fallbacks,
    )


def _strings(check: Checker, where: tuple[str, ...], values: Iterable[Any]) -> tuple[str, ...]:
    """The strings of ``values``; each other item is a problem at its place."""
    kept = []
    for index, value in enumerate(values):
        if isinstance(value, str):
            kept.append(value)
        else:
            check.item_problem(where, index, f"'{'.'.join(where)}' must hold strings only, not {type_name(value)}")
    return tuple(kept)


def check_claims(check: Checker, claims: Iterable[TargetClaims]) -> None:
    """Every problem of the targets' claims taken together, each at the item it is about."""
    for problem in claim_problems(claims):
        where = ("targets", problem.target, _SETTING_OF[problem.key])
        check.item_problem(where, problem.item, f"target '{problem.target}': {problem.message}")
