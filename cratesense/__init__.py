"""CrateSense: a local music-library agent and the catalog it shares derived data with."""

# The one place the version is written (pyproject.toml reads it from here): a literal, because
# importlib.metadata costs ~150 ms at every start of the CLI (issue #20).
__version__ = "0.2.0"
