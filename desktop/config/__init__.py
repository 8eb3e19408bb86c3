"""Configuration: the model (no I/O) and, later, parsing and storage."""
