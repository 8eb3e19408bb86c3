"""What the routing decision costs per request (issue 14, "Done when"): the median of
``RouteTable.route`` in microseconds, by timeit, for

- a table with prefixes but no model routes (the body is never looked at), and
- a 4 KiB JSON chat body against ten model globs (the body is parsed, one glob matches),
  plus the same with a model_map rename (the body is rewritten).

Run: ``PYTHONPATH=. python tests/bench/routes_bench.py`` (prints one line per case).
"""

from __future__ import annotations

import json
import statistics
import timeit

from desktop.routing import RouteTable, TargetClaims

# timeit's repeat count and calls per repeat: 7 x 20 000 keeps each case near a second.
REPEATS = 7
CALLS = 20_000
BODY_BYTES = 4096


def chat_body(model: str) -> bytes:
    """An OpenAI chat request of BODY_BYTES bytes, the model first as SDKs send it."""
    document = {"model": model, "messages": [{"role": "user", "content": ""}], "stream": True}
    room = BODY_BYTES - len(json.dumps(document).encode())
    document["messages"][0]["content"] = "x" * room  # type: ignore[index]
    encoded = json.dumps(document).encode()
    assert len(encoded) == BODY_BYTES
    return encoded


def median_us(call: object) -> float:
    runs = timeit.repeat(call, repeat=REPEATS, number=CALLS)  # type: ignore[arg-type]
    return statistics.median(runs) / CALLS * 1e6


def main() -> None:
    plain = RouteTable.build(
        [
            TargetClaims("main"),
            TargetClaims("anthropic", prefixes=("/anthropic",)),
            TargetClaims("openai", prefixes=("/openai/v1",)),
        ],
        default="main",
    )
    globs = ("claude-*", "gpt-*", "o[0-9]*", "gemini-*", "mistral-*", "llama-*", "qwen*", "deepseek-*")
    ten = [
        TargetClaims("main"),
        TargetClaims("a", models=globs[:4]),
        TargetClaims("b", models=(*globs[4:], "grok-*", "command-*"), model_map={"grok-4": "x-ai/grok-4"}),
    ]
    models = RouteTable.build(ten, default="main")
    matched = chat_body("command-r-plus")  # the last of the ten globs
    renamed = chat_body("grok-4")
    body = chat_body("claude-sonnet-4-5")
    assert plain.route("/v1/chat/completions", "", body, upgrade=False).chosen_by == "default"
    assert models.route("/v1/chat/completions", "", matched, upgrade=False).chosen_by == "model:command-*"
    assert models.route("/v1/chat/completions", "", renamed, upgrade=False).body is not None
    cases = {
        "no model routes, 4 KiB body, no prefix matches": lambda: plain.route(
            "/v1/chat/completions", "", body, upgrade=False
        ),
        "no model routes, prefix match": lambda: plain.route(
            "/openai/v1/chat/completions", "", body, upgrade=False
        ),
        "ten globs, 4 KiB body, last glob matches": lambda: models.route(
            "/v1/chat/completions", "", matched, upgrade=False
        ),
        "ten globs, 4 KiB body, model_map rewrite": lambda: models.route(
            "/v1/chat/completions", "", renamed, upgrade=False
        ),
        "ten globs, no body (GET /v1/models)": lambda: models.route("/v1/models", "", None, upgrade=False),
    }
    for name, call in cases.items():
        print(f"{median_us(call):8.2f} us  {name}")


if __name__ == "__main__":
    main()
