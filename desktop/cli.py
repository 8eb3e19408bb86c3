"""The ``trayproxy`` command line.

``trayproxy serve`` runs the proxy in the foreground with no UI; ``trayproxy`` alone will start
the tray (issue 5). Front ends are imported inside the function that needs them, so ``serve``
never imports pystray and runs on a machine with no display.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from desktop import __version__
from desktop.config.model import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_ALLOWED_ORIGINS,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_PORT,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_STOP_GRACE_S,
    LOOPBACK_HOSTS,
    ProxySettings,
    Secret,
    Target,
)

__all__ = ["main", "parse_header", "resolve_env_placeholders"]

log = logging.getLogger("trayproxy.cli")

SERVE_HELP = """\
Run the proxy in the foreground, without the tray.

Every request sent to the local address is forwarded to --target, with the
headers given by --header added. Press Ctrl+C (or send SIGTERM) to stop: open
requests get --stop-grace seconds to finish.

examples:
  trayproxy serve --target https://api.openai.com \\
      --header 'Authorization: Bearer {env:OPENAI_API_KEY}'
  trayproxy serve --target http://127.0.0.1:11434 --port 8001

A header value may name an environment variable as {env:NAME}; the key then
stays out of the process list and your shell history.
"""

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_PLACEHOLDER = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class UsageError(Exception):
    """A command-line value that cannot be used; the message says which and why."""


def parse_header(text: str) -> tuple[str, str]:
    """Split ``"Name: value"`` into its parts; raise ValueError when it is not a header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _HEADER_NAME.match(name):
        raise ValueError(f"expected 'Name: value', got {text.split(':', 1)[0]!r}...")
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"the value of {name} contains a line break")
    return name, value


def resolve_env_placeholders(value: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """Replace each ``{env:NAME}`` in ``value``; raise KeyError(NAME) when one is unset."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        found = environ.get(name)
        if not found:
            raise KeyError(name)
        return found

    return _ENV_PLACEHOLDER.sub(lookup, value)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trayproxy",
        description="One stable local address for the LLM APIs your tools use.",
    )
    parser.add_argument("--version", action="version", version=f"TrayProxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the proxy in the foreground (no tray)",
        description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--target",
        required=True,
        metavar="URL",
        help="where requests go, e.g. https://api.openai.com (a path is prefixed to every request)",
    )
    serve.add_argument(
        "--host",
        action="append",
        metavar="ADDR",
        help="address to listen on; repeat for several (default: 127.0.0.1 and ::1)",
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})"
    )
    serve.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add or replace a header on every upstream request; repeatable; {env:NAME} reads a variable",
    )
    serve.add_argument(
        "--upstream-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_S,
        metavar="SECONDS",
        help=f"time to response headers and longest pause in a response (default: {DEFAULT_READ_TIMEOUT_S:g})",
    )
    serve.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"time to connect to the target (default: {DEFAULT_CONNECT_TIMEOUT_S:g})",
    )
    serve.add_argument(
        "--stop-grace",
        type=float,
        default=DEFAULT_STOP_GRACE_S,
        metavar="SECONDS",
        help=f"time open requests get to finish on stop (default: {DEFAULT_STOP_GRACE_S:g})",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept requests whose Host is NAME (default: only this machine's names)",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept requests from web pages of ORIGIN, e.g. https://app.example",
    )
    serve.add_argument("--ca-bundle", metavar="FILE", help="trust the CAs in FILE instead of the system's")
    serve.add_argument("--insecure", action="store_true", help="do not verify the target's TLS certificate")
    serve.add_argument(
        "--keep-host", action="store_true", help="send the client's Host header instead of the target's"
    )
    serve.add_argument("-q", "--quiet", action="store_true", help="do not log one line per request")
    serve.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    config = commands.add_parser("config", help="find and check the config file")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for action, text in (
        ("path", "print where the config file is"),
        ("check", "check the config file; list every problem as path:line:col"),
    ):
        sub = config_commands.add_parser(action, help=text, description=text)
        sub.add_argument(
            "--config",
            metavar="PATH",
            help="use this file (default: $TRAYPROXY_CONFIG, else the user's config directory)",
        )
    return parser


def _target_from_args(args: argparse.Namespace) -> Target:
    headers: list[tuple[str, Secret]] = []
    for text in args.header:
        try:
            name, value = parse_header(text)
        except ValueError as exc:
            raise UsageError(f"--header: {exc}") from None
        try:
            value = resolve_env_placeholders(value, os.environ)
        except KeyError as exc:
            raise UsageError(
                f"--header {name}: the environment variable {exc.args[0]} is not set or empty"
            ) from None
        headers.append((name, Secret(value)))
    try:
        return Target(
            url=args.target,
            name=args.target,
            add_headers=tuple(headers),
            connect_timeout_s=args.connect_timeout,
            read_timeout_s=args.upstream_timeout,
            verify_tls=not args.insecure,
            ca_bundle=args.ca_bundle,
            keep_host=args.keep_host,
        )
    except ValueError as exc:
        raise UsageError(f"--target: {exc}") from None


def _settings_from_args(args: argparse.Namespace) -> ProxySettings:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port: {args.port} is not a port number")
    hosts = tuple(args.host) if args.host else LOOPBACK_HOSTS
    return ProxySettings(
        hosts=hosts,
        port=args.port,
        allowed_hosts=DEFAULT_ALLOWED_HOSTS + tuple(args.allow_host),
        allowed_origins=DEFAULT_ALLOWED_ORIGINS + tuple(args.allow_origin),
        stop_grace_s=args.stop_grace,
        access_log=not args.quiet,
    )


def _serve(args: argparse.Namespace) -> int:
    from desktop.controller import ListenError, ProxyController
    from desktop.engine.service import is_loopback
    from desktop.logs import setup_logging

    setup_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        target = _target_from_args(args)
        settings = _settings_from_args(args)
    except UsageError as exc:
        print(f"trayproxy serve: {exc}", file=sys.stderr)
        return 2
    for host in settings.hosts:
        if not is_loopback(host):
            log.warning(
                "listening on %s: other machines that can reach it can use the keys this proxy adds",
                host,
            )

    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop_requested.is_set():
            log.warning("second stop signal: cutting open requests now")
            os._exit(0)
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    controller = ProxyController(settings, target)
    try:
        try:
            status = controller.start()
        except ListenError as exc:
            log.error("%s", exc)
            return 1
        log.info("TrayProxy %s: %s -> %s (Ctrl+C stops)", __version__, status.local_url, target.url)
        # Wake now and then: on Windows a blocked wait would not see Ctrl+C.
        while not stop_requested.wait(0.5):
            pass
        log.info("stopping: open requests get up to %gs to finish", settings.stop_grace_s)
        controller.stop()
        log.info("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _config(args: argparse.Namespace) -> int:
    from desktop.config.parse import ConfigError
    from desktop.config.store import config_path, load_config

    path = config_path(args.config)
    if args.config_command == "path":
        print(path)
        return 0
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{path}: OK, {len(config.targets)} target(s), active: {config.active}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "config":
        return _config(args)
    # TODO(#5): no command starts the tray.
    parser.print_help(sys.stderr)
    print("\nThe tray arrives in a later version; use 'trayproxy serve' for now.", file=sys.stderr)
    return 2
