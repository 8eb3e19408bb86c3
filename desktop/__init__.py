"""TrayProxy: one stable local address for every LLM API a developer uses.

Only the version lives here so that ``import desktop`` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
