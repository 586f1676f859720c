"""The package version: one place, read by pyproject.toml, the CLI and /version."""

__version__ = "0.1.0"
