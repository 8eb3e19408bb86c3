"""``trayproxy env``: the lines that point the OpenAI and Anthropic SDKs at TrayProxy, the same
as the tray's Copy environment, for the config file as it is.

Run by ``desktop.cli`` (which holds the parser and the help) for the ``env`` command only. It
reads the file and the local access token, never a target's key: a key command must not run
to print these lines. The token is made first when the file requires one and has none yet, as
an explicit step (``config.follow.tend_files``) before the reading, which writes nothing.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["run_env"]


def run_env(args: argparse.Namespace) -> int:
    """Print the Copy environment lines for the config file's listeners."""
    from desktop.clients import Endpoint, RoutedTarget, environment_lines
    from desktop.config.follow import listener_settings, tend_files
    from desktop.config.parse import ConfigError, TargetSpec
    from desktop.config.store import config_path, load_config
    from desktop.engine.addresses import host_port
    from desktop.redaction import CREDENTIAL_HEADERS

    path = config_path(args.config)
    if not path.exists():
        print(f"{path}: the file does not exist yet; run 'trayproxy serve' once to create it", file=sys.stderr)
        return 1
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    # The writes the file calls for (the token made when required and missing), then a pure read.
    for notice in tend_files(path, config):
        print(f"{path}: note: {notice}", file=sys.stderr)
    settings = listener_settings(config, path)
    # Where tools connect: the first listen address; a wildcard one is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.hosts[0], settings.hosts[0])

    def endpoint(spec: TargetSpec, port: int) -> Endpoint:
        # The entry as written, the key not read (a key command must not run for this): it
        # adds a key when a credential header is written out or filled from a key source.
        credentials = [(name.lower(), value) for name, value in spec.headers if name.lower() in CREDENTIAL_HEADERS]
        adds_key = any("{key}" not in value or spec.key_source is not None for _, value in credentials)
        return Endpoint(
            "http://" + host_port(host, port), frozenset(name for name, _ in credentials), adds_key, spec.name
        )

    own_ports = config.target_ports()
    endpoints = [endpoint(config.targets[config.active], settings.port)]
    endpoints += [endpoint(config.targets[name], port) for name, port in own_ports.items()]
    # The main port's routes, as the status has them (controller.status.route_claims): every
    # target claiming a prefix or models, in file order.
    routes = []
    for name, spec in config.targets.items():
        if spec.routes:
            written = endpoint(spec, 0)
            routes.append(RoutedTarget(name, spec.prefixes, spec.models, written.key_headers, written.adds_key))
    portless = {
        name: endpoint(spec, 0).key_headers
        for name, spec in config.targets.items()
        if name != config.active and name not in own_ports and not spec.routes
    }
    token = settings.local_token.reveal() if settings.local_token else None
    lines = environment_lines(endpoints, shell=args.shell, local_token=token, portless=portless, routes=routes)
    print(lines, end="")
    return 0
