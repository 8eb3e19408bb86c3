"""The command line's commands and the tray's start, one module each; ``desktop.cli`` keeps the
parser and their help, and imports a module only when its command runs."""
