"""Agenda Distribuida: a calendar for people and groups that survives machine, process and link failures."""

from importlib import metadata

try:
    __version__ = metadata.version("agenda")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"


def print_version() -> None:
    """Console script `agenda-version`: prints the installed version (used by deployment checks)."""
    print(__version__)
