"""The system-tray front end: state icons, backend detection, and (issue 5) the tray app and menu.

Nothing here is imported by ``desktop.engine``, ``desktop.controller`` or ``trayproxy serve``;
this package may import Pillow and pystray, never ``aiohttp`` or ``asyncio``.
"""
