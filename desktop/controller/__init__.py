"""The controller: the one owner of the proxy's thread and loop, and the verbs front ends use.

Its rooms: ``proxy`` (ProxyController, the verbs), ``binding`` (how it follows a file), ``status`` (the snapshot handed out and the
board that hands it), ``trouble`` (what to say when a listener cannot open or move),
``loopthread`` (the loop in its thread), ``watch`` (the thread following the config file).
"""

from desktop.config.follow import KEY_REFRESH_MIN_INTERVAL_S, Overrides
from desktop.controller.binding import PORT_RETRY_S, ConfigBinding
from desktop.controller.proxy import ListenError, ProxyController
from desktop.controller.status import FailoverNotice, ProxyStatus, RouteClaim, TargetPort

__all__ = [
    "KEY_REFRESH_MIN_INTERVAL_S",
    "PORT_RETRY_S",
    "ConfigBinding",
    "FailoverNotice",
    "ListenError",
    "Overrides",
    "ProxyController",
    "ProxyStatus",
    "RouteClaim",
    "TargetPort",
]
