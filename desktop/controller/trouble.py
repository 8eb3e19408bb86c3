"""What to tell a person when a listener cannot open or move: which port, who holds it, where
to choose another, and where the proxy still listens. Worded here from a reconcile's report;
logged once per trouble, not at every retry. Also the warnings about where it listens: a host
beyond loopback, an allowed host browsers do not mark."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from desktop.config.follow import Plan
from desktop.config.model import ProxySettings
from desktop.controller.status import where
from desktop.engine.addresses import ListenError
from desktop.engine.guard import unmarked_host_warnings
from desktop.engine.listeners import Outcome, Report
from desktop.engine.upstream import is_loopback

__all__ = ["ListenTrouble", "warn_if_exposed", "warn_of_unmarked_hosts"]

log = logging.getLogger("trayproxy.controller")


class ListenTrouble:
    """Words the errors of listeners; knows the front end's advice and who holds a port."""

    def __init__(
        self,
        *,
        port_holder: Callable[[int], str | None] | None = None,
        port_advice: Callable[[str | None], str] | None = None,
    ) -> None:
        """``port_holder(port)`` names the program holding a taken port (the OS glue lives in
        ``desktop.platforms.ports``; the front end hands it in). ``port_advice(target)`` says
        where to choose another port, for the main listener (``target`` None) or a target's
        own: a command-line flag, a setting in the file; only the front end knows which."""
        self._port_holder = port_holder
        self._port_advice = port_advice

    def explain(self, error: BaseException | None, port: int, target: str | None = None) -> str:
        """The message for a listener (the main one, or ``target``'s own) that could not open,
        saying where to choose another port when it is taken and naming who holds it."""
        if not isinstance(error, ListenError):
            return f"could not start: {error!r}"
        message = str(error)
        if error.port_taken and self._port_advice is not None:
            message += f" ({self._port_advice(target)})"
        cause = error.__cause__
        if self._port_holder is not None and isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            try:
                holder = self._port_holder(port)
            except Exception:  # best effort: the message is worth more than the detail
                log.debug("could not tell who holds port %d", port, exc_info=True)
                holder = None
            if holder:
                message += f" — held by {holder}"
        return message

    def move_failed(self, outcome: Outcome, own: str | None) -> str:
        """Why ``outcome``'s listener is not where its plan says, naming the port, who holds it
        and where it still listens."""
        settings = outcome.wanted.settings
        wanted = where([(host, settings.port) for host in settings.hosts])
        message = f"could not move to {wanted}: {self.explain(outcome.error, settings.port, own)}"
        if outcome.addresses:
            message += f"; still listening on {where(outcome.addresses)}"
        return message

    def own_port_errors(self, plan: Plan, report: Report, said: dict[str, str]) -> dict[str, str]:
        """Why each target on a port of its own is not listening where ``plan`` says, logged
        when it is new (not in ``said``, what the last report gave), so a retry says nothing."""
        errors: dict[str, str] = {}
        for listener in plan.own_ports:
            name = listener.own
            outcome = report.outcomes.get(name)
            if name is None or outcome is None or outcome.error is None:
                continue
            port = listener.settings.port
            if outcome.move_failed:
                errors[name] = message = self.move_failed(outcome, name)
                if name not in said:
                    log.error("target %s %s", name, message)
            else:
                errors[name] = message = self.explain(outcome.error, port, name)
                if name not in said:
                    log.error("target %s is not served on port %d: %s", name, port, message)
        return errors


def warn_if_exposed(hosts: tuple[str, ...]) -> None:
    """Say, for each host beyond loopback, that other machines can spend the keys."""
    for host in hosts:
        if not is_loopback(host):
            log.warning("listening on %s: other machines that can reach it can use the keys this proxy adds", host)


def warn_of_unmarked_hosts(settings: ProxySettings) -> None:
    """Say, for each allowed host browsers do not mark, that only the User-Agent guards it."""
    for warning in unmarked_host_warnings(settings.allowed_hosts, require_token=settings.require_token):
        log.warning("%s", warning)
