"""The command line's command groups, one module each; ``desktop.cli`` keeps the parser, their
help, ``serve`` and the tray's start, and imports a group only when its command runs."""
