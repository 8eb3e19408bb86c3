"""The controller with routes: what the status tells front ends about them.

A person sees the tray's Target menu and status line; both are drawn from the status. The routes
each target claims are there as soon as the file is read, a failover shows who failed and who
took over, a target that keeps failing shows as tried last, and Stop leaves no cool-down behind
for the next Start (its listeners begin with a clean record).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from aiohttp import web
from background import BackgroundServer

from desktop.controller import ConfigBinding, ProxyController, RouteClaim


def answering(status: int) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"status": status}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def test_the_status_shows_claims_failovers_and_cooldowns_and_stop_clears_them(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    with BackgroundServer(answering(503)) as failing, BackgroundServer(answering(200)) as spare:
        path = tmp_path / "config.toml"
        path.write_text(
            'active = "main"\n[listen]\nhosts = ["127.0.0.1"]\nport = 0\n'
            f'[targets.main]\nurl = "{spare.url}"\n'
            f'[targets.anthropic]\nurl = "{failing.url}"\nprefix = "/anthropic"\nmodels = ["claude-*"]\n'
            'fallbacks = ["spare"]\n'
            f'[targets.spare]\nurl = "{spare.url}"\n'
        )
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        status = controller.start()
        assert status.routes == (RouteClaim("anthropic", ("/anthropic",), ("claude-*",)),)
        assert status.routes[0].text == "/anthropic, claude-*"
        assert status.local_url is not None
        for _ in range(3):  # FAILURES_FOR_COOLDOWN
            answer = httpx.post(f"{status.local_url}/anthropic/v1/messages", json={"model": "claude-x"})
            assert answer.status_code == 200
        now = controller.status
        assert now.failover is not None
        assert (now.failover.failed, now.failover.cause) == ("anthropic", "503")
        assert [name for name, _ in now.cooling] == ["anthropic"]
        controller.stop()
        assert controller.status.cooling == ()
        controller.start()
        assert controller.status.cooling == ()
