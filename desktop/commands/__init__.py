"""The command line's commands, one module each (``serve`` among them); ``desktop.cli`` keeps
the parser, their help and the tray's start, and imports a module only when its command runs."""
