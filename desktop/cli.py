"""The ``trayproxy`` command line: the parser with every command's help, and ``main``.

``trayproxy serve`` runs the proxy in the foreground with no UI; ``trayproxy`` alone starts the
tray (or, with no usable tray, serves without an icon). Each command, and the tray's start, runs
from its module in ``desktop.commands`` (``serve``, ``tray``, ``config``, ``env``, ``inspect``,
``cache``, ``install``), imported inside the branch that runs it, so ``serve`` never imports pystray and
runs on a machine with no display.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from desktop import __version__
from desktop.clients import SHELLS
from desktop.config import options

__all__ = ["main"]

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

def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trayproxy",
        description="One stable local address for the LLM APIs your tools use. Without a command,"
        " TrayProxy starts in the system tray.",
    )
    parser.add_argument("--version", action="version", version=f"TrayProxy {__version__}")
    parser.add_argument(
        "--config",
        dest="tray_config",
        metavar="PATH",
        help="the config file the tray, or the command after it, uses (default: $TRAYPROXY_CONFIG,"
        " else the user's config directory)",
    )
    commands = parser.add_subparsers(dest="command", metavar="[COMMAND]")
    serve = commands.add_parser(
        "serve",
        help="run the proxy in the foreground (no tray)",
        description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--target",
        metavar="URL|NAME",
        help="where requests go: a URL such as https://api.openai.com (a path is prefixed to every "
        "request) or the name of a target in the config file (default: the config's active target)",
    )
    serve.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $TRAYPROXY_CONFIG, else the user's config directory)",
    )
    # A flag left out is None (or empty): the config file's value, else the declared default, holds.
    serve.add_argument(*options.HOSTS.flags, action="append", metavar="ADDR", help=options.HOSTS.flag_text())
    serve.add_argument(*options.PORT.flags, type=int, help=options.PORT.flag_text())
    serve.add_argument(
        *options.HEADERS.flags,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help=options.HEADERS.flag_text(),
    )
    for timeout in (options.READ_TIMEOUT, options.CONNECT_TIMEOUT, options.STOP_GRACE):
        serve.add_argument(*timeout.flags, type=float, metavar="SECONDS", help=timeout.flag_text())
    for allowed, metavar in ((options.ALLOWED_HOSTS, "NAME"), (options.ALLOWED_ORIGINS, "ORIGIN")):
        serve.add_argument(*allowed.flags, action="append", default=[], metavar=metavar, help=allowed.flag_text())
    serve.add_argument(*options.CA_BUNDLE.flags, metavar="FILE", help=options.CA_BUNDLE.flag_text())
    serve.add_argument(
        *options.CACHE_MODE.flags,
        choices=options.CACHE_MODE.choices,
        metavar="MODE",
        help=options.CACHE_MODE.flag_text(),
    )
    for switch in (
        options.VERIFY_TLS,
        options.KEEP_HOST,
        options.ACCESS,
        options.LEVEL,
        options.INSPECT,
        options.INSPECT_BODIES,
    ):
        serve.add_argument(*switch.flags, action="store_true", help=switch.flag_text())
    config = commands.add_parser("config", help="find and check the config file")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for action, text in (
        ("path", "print where the config file is"),
        ("show", "print the config file with every key masked"),
        ("test", "send one cheap request (the model list) to a target and say how it went"),
        ("edit", "open the config file in $VISUAL / $EDITOR (created first if missing), then check it"),
        ("check", "check the config file and every key source; list each problem as path:line:col"),
        ("set-key", "store a target's key in the OS keychain (typed without echo, or read from stdin)"),
        ("token", "print the local access token clients send as their API key when require_token is on"),
    ):
        sub = config_commands.add_parser(action, help=text, description=text)
        if action == "test":
            sub.add_argument("target", nargs="?", help="the target's name (default: the active one)")
        if action == "set-key":
            sub.add_argument("target", help="the target's name, as in [targets.NAME]")
        if action == "token":
            sub.add_argument(
                "--rotate",
                action="store_true",
                help="make a new token; the old one stops working (a running TrayProxy follows within seconds)",
            )
        sub.add_argument(
            "--config",
            metavar="PATH",
            help="use this file (default: $TRAYPROXY_CONFIG, else the user's config directory)",
        )
    env = commands.add_parser(
        "env",
        help="print lines that point the OpenAI and Anthropic SDKs at TrayProxy",
        description=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env.add_argument(
        "--shell",
        choices=SHELLS,
        default="powershell" if os.name == "nt" else "posix",
        help="the shell the lines are for (default: %(default)s)",
    )
    env.add_argument(
        "--config",
        metavar="PATH",
        help="the config file (default: $TRAYPROXY_CONFIG, else the user's config directory)",
    )
    inspect = commands.add_parser(
        "inspect",
        help="open the running TrayProxy's inspector in a browser, or export what it holds",
        description=INSPECT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect_how = inspect.add_mutually_exclusive_group()
    inspect_how.add_argument(
        "--url",
        action="store_true",
        help="print a one-time link to the inspector instead of opening a browser",
    )
    inspect_how.add_argument(
        "--har", metavar="FILE", help="write every request it holds to FILE as HAR 1.2 ('-': stdout)"
    )
    inspect.add_argument(
        "--jsonl", metavar="FILE", help="write every request it holds to FILE as JSON lines ('-': stdout)"
    )
    _add_cache_command(commands)
    _add_launcher_commands(commands)
    return parser


INSPECT_HELP = """\
Open the inspector of the TrayProxy running for this user (the tray, or
trayproxy serve): a page listing every request as it passes, with timings,
tokens, the reassembled answer and tool calls.

The browser gets a local file that sends it to a one-time link (it works once,
for 2 minutes), so the link appears in no process list. --url prints the link
instead, for a browser of your choice.
--har and --jsonl write what the inspector holds to a file, keys masked.

examples:
  trayproxy inspect
  trayproxy inspect --url
  trayproxy inspect --har session.har --jsonl session.jsonl
"""


ENV_HELP = """\
Print the environment variables that point the OpenAI and Anthropic SDKs at
TrayProxy, for the config file as it is: the same lines as the tray's
Copy environment. Each SDK gets the port of the target made for it (a target
whose headers set x-api-key, on a port of its own, gets ANTHROPIC_BASE_URL).
When TrayProxy adds a target's key, the SDK gets a placeholder key; with
require_token on, the local access token. The keys are not read: 'trayproxy
config check' says whether they can be.

examples:
  eval "$(trayproxy env)"                          # bash, zsh
  trayproxy env --shell fish | source
  trayproxy env --shell powershell | Invoke-Expression
"""


DESKTOP_ENTRY_HELP = """\
Put TrayProxy in the application menu (Linux), for people running it from a
source checkout or a pip/pipx install.

'install' writes trayproxy.desktop into $XDG_DATA_HOME/applications (default
~/.local/share/applications), starting this copy of TrayProxy the way you
started this command, and copies the icon into your icon theme. 'remove'
deletes both. Run 'install' again after moving the checkout or the venv.
"""

UNINSTALL_HELP = """\
Remove what TrayProxy put outside its own folder: the start-at-login entry,
the application-menu entry and its icon, and with --keys the OS keychain
entries of the targets in the config file that read their key from it.

Your config file and the log files are kept; the command says where they are,
so you can delete them yourself. Then delete the app's folder (or run
'pipx uninstall trayproxy').
"""


CACHE_HELP = """\
The answers TrayProxy recorded for targets whose cache mode is record, replay
or offline (the tray's Cache menu, or cache = "..." in a target's table). They
hold your prompts and the answers, never keys, in one file in your user cache
folder. These commands work while TrayProxy runs.

  stats    how many, how much room against [cache] max_mib, per target, and where
  clear    delete them (--target NAME: only that target's)
  export   write them as JSON lines (docs/recordings.md), to -o FILE or stdout
  import   check a file of them, then add its answers (nothing if a line is bad)

examples:
  trayproxy cache stats
  trayproxy cache export -o tests/recorded-answers.jsonl
  trayproxy cache import tests/recorded-answers.jsonl   # then serve --cache offline
  trayproxy cache clear --target openai
"""


def _add_cache_command(commands: _Subcommands) -> None:
    """The `cache` command and its actions."""
    cache = commands.add_parser(
        "cache",
        help="see, clear, export or import the recorded answers",
        description=CACHE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="how many answers are recorded, per target, and where")
    clear = actions.add_parser("clear", help="delete the recorded answers (of one target with --target)")
    export = actions.add_parser("export", help="write the recorded answers as JSON lines")
    imports = actions.add_parser("import", help="check an exported file, then add its answers")
    for action in (clear, export):
        action.add_argument("--target", metavar="NAME", help="only the answers of this target")
    export.add_argument(
        "-o", "--output", metavar="FILE", default="-", help="the file to write ('-', the default: stdout)"
    )
    imports.add_argument("file", metavar="FILE", help="a file 'trayproxy cache export' wrote ('-': stdin)")
    for action in (stats, clear, export, imports):
        action.add_argument(
            "--config",
            metavar="PATH",
            help="the config file, for [cache] max_mib and, before an import, the keys a recording must"
            " not hold (default: $TRAYPROXY_CONFIG, else the user's config directory)",
        )


class _Subcommands(Protocol):
    """What ``ArgumentParser.add_subparsers`` returns, as far as this module uses it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def _add_launcher_commands(commands: _Subcommands) -> None:
    """The `desktop-entry` and `uninstall` subcommands."""
    entry = commands.add_parser(
        "desktop-entry",
        help="add TrayProxy to the application menu, or take it out (Linux)",
        description=DESKTOP_ENTRY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    entry.add_argument("entry_action", choices=("install", "remove"), metavar="install|remove")
    uninstall = commands.add_parser(
        "uninstall",
        help="remove the login entry, the menu entry and (with --keys) the keychain entries",
        description=UNINSTALL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    uninstall.add_argument(
        "--keys",
        action="store_true",
        help="also delete the keys the config's targets keep in the OS keychain",
    )
    uninstall.add_argument(
        "--config",
        metavar="PATH",
        help="the config file whose keychain entries --keys deletes (default: $TRAYPROXY_CONFIG,"
        " else the user's config directory)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # A windowed frozen build (and pythonw.exe) has no stdout or stderr: they are None, and a
    # print would crash the app. Messages then reach the person through the log and the tray.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.tray_config and args.command is not None:
        # `trayproxy --config PATH serve` means the same as `trayproxy serve --config PATH`.
        if not hasattr(args, "config"):
            parser.error(f"--config: '{args.command}' uses no config file; leave --config out")
        if args.config is None:
            args.config = args.tray_config
        elif Path(args.config).expanduser() != Path(args.tray_config).expanduser():
            parser.error(f"--config is given twice, as {args.tray_config} and {args.config}; give it once")
    if args.command == "serve":
        from desktop.commands.serve import run_serve

        return run_serve(args)
    if args.command == "config":
        from desktop.commands.config import run_config

        return run_config(args)
    if args.command == "env":
        from desktop.commands.env import run_env

        return run_env(args)
    if args.command == "cache":
        from desktop.commands.cache import run_cache

        return run_cache(args)
    if args.command == "inspect":
        from desktop.commands.inspect import run_inspect

        if args.url and args.jsonl is not None:
            parser.error("--url: give it alone, or --har/--jsonl alone")
        return run_inspect(args)
    if args.command == "desktop-entry":
        from desktop.commands.install import run_desktop_entry

        return run_desktop_entry(args)
    if args.command == "uninstall":
        from desktop.commands.install import run_uninstall

        return run_uninstall(args)
    from desktop.commands.tray import run_tray, tray_args

    return run_tray(tray_args(args.tray_config))
