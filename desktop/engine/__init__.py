"""The proxy engine: aiohttp only; no UI, no OS glue, no file I/O.

Submodules are imported directly (``desktop.engine.service``); this package imports nothing so
that light users (the log redactor) do not pull in aiohttp.
"""
