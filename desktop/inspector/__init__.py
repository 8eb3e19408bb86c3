"""The inspector (issue 15): what passed through the proxy, for a person to read.

Its rooms, as they land: ``sse`` (an event stream read incrementally, as browsers read it),
``answer`` (what a model answered, whichever API), ``openai``, ``responses``, ``anthropic`` and
``ollama`` (a Chat Completions, Responses, Messages or Ollama answer put back together, streamed
or whole), ``encoding`` (a body's gzip or deflate undone), ``outputs`` (which API an answer
speaks, which of its events carry output), ``streams`` (a stream's events with the time of the
first output: whole, or head and tail for facts) and ``readback`` (an ended exchange's answer, time to
first token and facts: the store's read_back), ``views`` (an exchange as the page shows it,
every key masked by ``masking``; its request as a cURL command: ``curl``), ``har`` and
``jsonl`` (the exports), ``access`` (who may read it: the session cookie, one-time codes, the
session and opener files) and ``web`` (the page, its API and push stream, served from ``page/``).
Row 4, beside the controller:
it reads what the engine's capture hands it and does no forwarding.
"""
