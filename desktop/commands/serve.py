"""``trayproxy serve``: the proxy in the foreground, from the flags and the config file.

Run by ``desktop.cli`` (which holds the parser and ``serve``'s help) for the ``serve`` command,
and by the tray's start (``desktop.commands.tray``), which runs the proxy the same way with
every flag at its not-given value. Here: reading the flags (``--header`` with its ``{env:NAME}``
placeholders, the overrides on top of the file), making the controller that follows the file,
and running it until a stop signal. Imports nothing of the tray, so ``serve`` runs headless.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from desktop import __version__
from desktop.config import options
from desktop.config.model import ProxySettings, Secret, Target, header_problem, host_problem

if TYPE_CHECKING:
    from desktop.config.follow import Overrides
    from desktop.controller import ProxyController

__all__ = [
    "UsageError",
    "flag_overrides",
    "make_controller",
    "parse_header",
    "resolve_env_placeholders",
    "run_serve",
]

# The command line's logger, as before serve had a module of its own.
log = logging.getLogger("trayproxy.cli")

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# A header name (RFC 9110 §5.6.2 token) followed by what people type instead of the colon.
_LEADING_HEADER_NAME = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(\s*=\s*|\s+|\s*:\s*)")
_ENV_PLACEHOLDER = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
# host:port (a name, IPv4 or [IPv6] address, then a port), perhaps with a path: a --target URL
# without its scheme.
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}(/\S*)?$")


class UsageError(Exception):
    """A command-line value that cannot be used; the message says which and why."""


def parse_header(text: str) -> tuple[str, str]:
    """Split ``"Name: value"`` into its parts; raise ValueError when it is not a header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _HEADER_NAME.match(name):
        raise ValueError(f"expected 'Name: value', got {_name_part(text)}")
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"the value of {name} contains a line break")
    return name, value


def _name_part(text: str) -> str:
    """What of a malformed ``--header`` may be quoted back: the name it starts with, when a
    space, '=' or ':' follows (a colon left out: 'Authorization Bearer sk-...'); never the rest,
    which is usually the key. A text that starts with no name, or with a key, or is one word
    (a name, or a key pasted alone?), shows none of itself."""
    from desktop.redaction import MASK, mask_token_like, redact_text

    match = _LEADING_HEADER_NAME.match(text)
    name = match.group(1) if match else ""
    if match is None or redact_text(name) != name or mask_token_like(name) != name:
        return f"{len(text)} characters with no ':' after a header name (not shown)"
    shown = f"'{name}{match.group(2)}{MASK}' (the value is not shown)"
    return shown if ":" in match.group(2) else f"{shown}; write it as '{name}: ...'"


def resolve_env_placeholders(value: str, environ: Mapping[str, str]) -> str:
    """Replace each ``{env:NAME}`` in ``value``; raise KeyError(NAME) when one is unset."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        found = environ.get(name)
        if not found:
            raise KeyError(name)
        return found

    return _ENV_PLACEHOLDER.sub(lookup, value)



def _header_flags(args: argparse.Namespace) -> list[tuple[str, Secret]]:
    headers: list[tuple[str, Secret]] = []
    for text in args.header:
        try:
            name, value = parse_header(text)
        except ValueError as exc:
            raise UsageError(f"--header: {exc}") from None
        try:
            value = resolve_env_placeholders(value, os.environ)
        except KeyError as exc:
            from desktop.redaction import looks_like_key

            if looks_like_key(exc.args[0]):
                raise UsageError(
                    f"--header {name}: {{env:...}} holds what looks like a key, not a variable name (not shown);"
                    " write {env:NAME} with the name of the variable that holds the key"
                ) from None
            raise UsageError(
                f"--header {name}: the environment variable {exc.args[0]} is not set or empty"
            ) from None
        # What {env:NAME} filled in, too: a variable's value may end in a line break.
        problem = header_problem(name, value)
        if problem:
            raise UsageError(f"--header {name}: {problem}")
        headers.append((name, Secret(value)))
    return headers


def flag_overrides(args: argparse.Namespace) -> Overrides:
    """What ``serve``'s flags set on top of the file; raise UsageError for a flag that cannot be used."""
    from desktop.config.follow import Overrides

    port = args.port
    if port is not None and not 0 <= port <= 65535:
        raise UsageError(f"--port: {port} is not a port number")
    for host in args.host or ():
        problem = host_problem(host)
        if problem:
            raise UsageError(f"--host {host!r} {problem}")
    for option, seconds in (
        (options.CONNECT_TIMEOUT, args.connect_timeout),
        (options.READ_TIMEOUT, args.upstream_timeout),
        (options.STOP_GRACE, args.stop_grace),
    ):
        seconds_problem = None if seconds is None else option.problem(seconds)
        if seconds_problem:
            raise UsageError(f"{option.flags[0]} {seconds_problem}")
    return Overrides(
        hosts=tuple(args.host or ()),
        port=port,
        allowed_hosts=tuple(args.allow_host),
        allowed_origins=tuple(args.allow_origin),
        stop_grace_s=args.stop_grace,
        access_log=not args.quiet,
        headers=tuple(_header_flags(args)),
        connect_timeout_s=args.connect_timeout,
        read_timeout_s=args.upstream_timeout,
        insecure=args.insecure,
        ca_bundle=args.ca_bundle,
        keep_host=args.keep_host,
        no_inspector=args.no_inspector,
        no_inspector_bodies=args.no_inspector_bodies,
        cache=args.cache,
    )


def _target_with(overrides: Overrides, base: Target | str) -> Target:
    """``base`` (a target, or ``--target``'s URL) with the flags applied; a UsageError when
    they make it invalid."""
    try:
        return overrides.target(Target(url=base, name=base) if isinstance(base, str) else base)
    except ValueError as exc:
        from desktop.redaction import redact_text

        # Printed, not logged through the redacting handler: the URL may carry a key= or a password.
        raise UsageError(f"--target: {redact_text(str(exc))}") from None


def make_controller(args: argparse.Namespace, *, save_choice: bool = False) -> ProxyController:
    """The controller for `serve`: from the flags and the config file, which it then follows.

    ``--target URL`` works without a config file (one that exists still gives the listener
    settings); a target name, or no --target, needs the file (created with the defaults on
    first run), which is re-read when it changes. Flags apply on top of the file.
    """
    from desktop.config.cabundle import ca_bundle_problem
    from desktop.config.follow import listener_settings, read_config, tend_files
    from desktop.config.model import Inspection, LogSettings, Recording
    from desktop.config.parse import ConfigError
    from desktop.config.store import config_path, ensure_config, load_config
    from desktop.controller import ConfigBinding, ProxyController, ProxyStatus
    from desktop.logs import apply_log_settings
    from desktop.platforms.instance import instance_dir
    from desktop.platforms.ports import port_holder

    applied: list[LogSettings] = []

    def apply_log(settings: LogSettings) -> None:
        if applied != [settings]:  # a status changes often; the log settings seldom
            applied[:] = [settings]
            apply_log_settings(settings, verbose=args.verbose, quiet=args.quiet)

    path = config_path(args.config)
    if args.ca_bundle and not args.insecure:
        problem = ca_bundle_problem(args.ca_bundle)
        if problem:
            raise UsageError(f"--ca-bundle {args.ca_bundle} {problem}")
    overrides = flag_overrides(args)
    if args.target and "://" in args.target:
        settings = ProxySettings()
        inspection = Inspection()
        recording = Recording()
        if path.exists():
            try:
                config = load_config(path)
            except ConfigError as exc:
                raise UsageError(f"the config file has problems:\n{exc}") from None
            apply_log(config.log)  # first, so what follows is logged as the file says
            for notice in tend_files(path, config):  # the writes, as serve from the file takes them
                log.warning("%s", notice)
            settings = listener_settings(config, path)
            inspection = config.inspector
            recording = config.cache
        url_controller = ProxyController(
            overrides.settings(settings),
            _target_with(overrides, args.target),
            inspection=overrides.inspection(inspection),
            recording=recording,
            port_holder=port_holder,
            port_advice=_port_advice(args, None),
        )
        url_controller.inspector.session_dir = instance_dir()[0]  # for `trayproxy inspect`
        return url_controller

    if ensure_config(path):
        log.info("created the config file %s with the default targets", path)
    _target_with(overrides, Target(url="http://127.0.0.1"))  # flag errors now, not on reload
    binding = ConfigBinding(path, pinned_target=args.target, overrides=overrides, save_choice=save_choice)
    try:
        config = read_config(path, overrides, chosen=args.target)
    except ConfigError as exc:
        raise UsageError(f"the config file has problems:\n{exc}") from None
    except KeyError as exc:
        known = ", ".join(exc.args[1])
        # "127.0.0.1:11434" is an address typed without its scheme, not a misspelt name.
        hint = f"; for a URL, write its scheme: --target http://{args.target}" if _HOST_PORT.match(args.target) else ""
        raise UsageError(
            f"--target: no target named '{args.target}' in {path} (targets: {known}){hint}"
        ) from None

    # The file's [log] settings before the controller says anything, and at every reload after.
    apply_log(config.log)
    controller = ProxyController.from_config(
        binding, port_holder=port_holder, port_advice=_port_advice(args, path), config=config
    )

    controller.inspector.session_dir = instance_dir()[0]  # where `trayproxy inspect` finds it

    def follow_log(status: ProxyStatus) -> None:
        apply_log(status.log)

    controller.add_listener(follow_log)
    follow_log(controller.status)
    return controller


def _port_advice(args: argparse.Namespace, path: Path | None) -> Callable[[str | None], str]:
    """Where the person chooses a port instead of a taken one: for the main listener (None),
    ``serve --port`` when given or when there is no file, else the file's [listen] port (and
    --port, for serve); for a target, the port in its table."""
    port_flag = getattr(args, "port", None)
    serving = args.command == "serve"

    def advice(target: str | None) -> str:
        if target is not None:
            return f"set port under [targets.{target}] in {path}"
        if path is None or port_flag is not None:
            return "start with another --port"
        return f"set port under [listen] in {path}" + (", or start with --port" if serving else "")

    return advice


def run_serve(args: argparse.Namespace, *, logging_ready: bool = False) -> int:
    """Run the proxy until a stop signal; ``logging_ready``: the caller (the tray falling back
    to no icon) has set up logging, its log file included, which must stay."""
    from desktop.controller import ListenError
    from desktop.logs import setup_logging

    if not logging_ready:
        setup_logging(verbose=args.verbose, quiet=args.quiet)
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop_requested.is_set():
            log.warning("second stop signal: cutting open requests now")
            os._exit(0)
        stop_requested.set()

    # Before the controller is made: a stop asked for while it reads the file and its keys
    # (and logs what it finds) still ends in a clean stop, not death by the signal.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            controller = make_controller(args)
        except UsageError as exc:
            print(f"trayproxy serve: {exc}", file=sys.stderr)
            return 2
        try:
            status = controller.start()
        except ListenError as exc:
            log.error("%s", exc)
            controller.close()
            return 1
        # The cache mode too: an offline CI run's log must not read as if it went online.
        cache = f", recorded answers: {status.cache_mode}" if status.cache_mode != "off" else ""
        log.info(
            "TrayProxy %s: %s -> %s%s (Ctrl+C stops)", __version__, status.local_url, status.target_url, cache
        )
        # Wake now and then: on Windows a blocked wait would not see Ctrl+C.
        while not stop_requested.wait(0.5):
            pass
        log.info("stopping: open requests get up to %gs to finish", controller.settings.stop_grace_s)
        controller.close()
        log.info("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
