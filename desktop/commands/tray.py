"""The tray's start: ``trayproxy`` with no command.

Run by ``desktop.cli`` when no command is given. It takes the tray's single-instance lock and
runs the tray with the proxy on the config file's active target; with no usable tray (no
display, no tray host, no menu-capable backend) it says why and serves without an icon, as
``trayproxy serve`` would. The tray takes none of ``serve``'s flags: :func:`tray_args` gives
each its not-given value. An unexpected error is logged and shown in an alert that names only
its type. pystray and ``desktop.tray`` are imported here only once a tray is to run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

__all__ = ["run_tray", "start_tray", "tray_args"]

# The command line's logger, as before the tray's start had a module of its own.
log = logging.getLogger("trayproxy.cli")


def tray_args(config: str | None) -> argparse.Namespace:
    """What the tray runs the proxy with: the config file ``config`` (None: the default one)
    and every flag of ``serve`` at the value it has when not given, since the tray takes none.
    No command: messages then point to the file, never to a flag such as --port."""
    return argparse.Namespace(
        command=None,
        config=config,
        target=None,
        host=None,
        port=None,
        header=[],
        upstream_timeout=None,
        connect_timeout=None,
        stop_grace=None,
        allow_host=[],
        allow_origin=[],
        ca_bundle=None,
        insecure=False,
        keep_host=False,
        quiet=False,
        verbose=False,
        no_inspector=False,
        no_inspector_bodies=False,
        cache=None,
    )


def run_tray(args: argparse.Namespace) -> int:
    """No command: the tray, with the proxy on the config's active target. Without a usable
    tray (no display, no tray host, no menu-capable backend) it says why and serves headless."""
    from desktop.logs import setup_logging

    setup_logging(to_file=True)
    try:
        return start_tray(args)
    except Exception as exc:
        # Double-clicked apps have no terminal: the reason must be in the log file, and the
        # person must learn that it stopped. The alert names the error's type only: its text
        # could quote a header or a config line holding a key.
        log.critical("TrayProxy stopped because of an unexpected error", exc_info=True)
        _alert_crash(exc)
        return 1


def _alert_crash(exc: Exception) -> None:
    from desktop import platforms
    from desktop.logs import LOG_FILE_NAME, log_dir

    message = (
        f"TrayProxy stopped because of an unexpected error ({exc.__class__.__name__}). "
        f"The details are in {log_dir() / LOG_FILE_NAME}."
    )
    shown, how = platforms.alert("TrayProxy stopped", message)
    if not shown:
        log.warning("could not show the crash alert: %s", how)


def start_tray(args: argparse.Namespace) -> int:
    """The tray, or the no-icon fallback, under the one-per-user lock; 0 when another copy runs."""
    from desktop.commands.serve import UsageError, make_controller, run_serve
    from desktop.platforms import instance
    from desktop.tray.backend import check_tray

    report = check_tray()
    if report.problem:
        # No desktop session or no tray host: the fallback below is what TrayProxy does there.
        (log.warning if report.expected else log.error)("%s", report.problem)
        # One TrayProxy per user here too: a second start (at login and from the menu) would
        # only fail on the taken port, and `trayproxy uninstall` asks this lock what runs.
        headless_lock = instance.acquire(lambda: log.info("TrayProxy was started again; this one keeps serving"))
        if headless_lock is None:
            print("TrayProxy is already running.", file=sys.stderr)
            return 0
        try:
            log.warning("running without a tray icon; the proxy works as with 'trayproxy serve'")
            # Still into the log file: started from a menu or at login, nobody sees stderr.
            return run_serve(args, logging_ready=True)
        finally:
            headless_lock.release()
    holder: list[Callable[[str], None]] = []
    lock = instance.acquire(lambda: holder[0]("TrayProxy is already running") if holder else None)
    if lock is None:
        print("TrayProxy is already running: its icon is in the tray.", file=sys.stderr)
        return 0
    try:
        try:
            controller = make_controller(args, save_choice=True)
        except UsageError as exc:
            log.error("%s", exc)
            return 2
        from desktop.logs import log_dir
        from desktop.tray.app import TrayApp

        app = TrayApp(controller, log_dir=log_dir())
        holder.append(app.notify)
        app.act("toggle")  # start, off the UI thread; a taken port shows in the tray
        try:
            app.run(report.summary())
        finally:
            controller.close(0)
        return 0
    finally:
        lock.release()
