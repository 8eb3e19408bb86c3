"""The event loop the proxy runs on: uvloop where it is installed, asyncio's own elsewhere.

uvloop (libuv under a Cython event loop) does the loop's own work (polling, callbacks, socket
reads and writes, timers) in C, which is a large share of a small proxied request's cost. It
has no Windows build and is an optional dependency, so its absence is normal: asyncio's loop
then runs the same code. ``TRAYPROXY_EVENT_LOOP=asyncio`` picks asyncio's loop even where
uvloop is installed, to compare the two or to rule uvloop out when troubleshooting.
"""

from __future__ import annotations

import asyncio
import logging
import os

__all__ = ["EVENT_LOOP_ENV", "new_event_loop"]

log = logging.getLogger("trayproxy.eventloop")

EVENT_LOOP_ENV = "TRAYPROXY_EVENT_LOOP"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for the proxy's thread: uvloop's if it can be had, else asyncio's."""
    if os.environ.get(EVENT_LOOP_ENV, "").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            log.debug("event loop: uvloop %s", uvloop.__version__)
            return uvloop.new_event_loop()
    log.debug("event loop: asyncio")
    return asyncio.new_event_loop()
