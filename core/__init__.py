"""CrateSense: a local music-library agent and the catalog it shares derived data with."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cratesense")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
