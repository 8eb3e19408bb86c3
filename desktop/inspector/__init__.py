"""The inspector (issue 15): what passed through the proxy, for a person to read.

Its rooms, as they land: ``sse`` (an event stream read incrementally, as browsers read it),
``answer`` (what a model answered, whichever API), ``openai``, ``responses``, ``anthropic`` and
``ollama`` (a streamed Chat Completions, Responses, Messages or Ollama NDJSON answer put back
together). Row 4, beside the controller:
it reads what the engine's capture hands it and does no forwarding.
"""
