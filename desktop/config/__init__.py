"""Configuration: the model (no I/O), parsing, the file and its writes, the key sources and the
local access token."""
