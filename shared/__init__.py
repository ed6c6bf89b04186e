"""Partner Center product upgrades: the function app's and the command line's package."""

#: The release (pyproject.toml reads it from here; CHANGELOG.md says what changed).
__version__ = "0.2.0"
