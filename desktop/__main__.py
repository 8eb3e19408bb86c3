"""Entry point for ``python -m desktop`` and for PyInstaller's frozen app."""

import sys

from desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
