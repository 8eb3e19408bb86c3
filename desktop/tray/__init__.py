"""The system-tray front end: the tray app and its menu, the state icons, and which pystray
backend loaded (with what to install when it has no menu).

Nothing here is imported by ``desktop.engine``, ``desktop.controller`` or ``trayproxy serve``;
this package may import Pillow and pystray, never ``aiohttp`` or ``asyncio``.
"""
