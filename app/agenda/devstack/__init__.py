"""The whole Agenda stack on loopback for development and integration tests (``make dev``).

:class:`DevStack` is the library (the integration suite builds its stacks with it); ``agenda-dev`` /
``python -m agenda.devstack`` is the command line (:mod:`agenda.devstack.cli`).
"""

from agenda.devstack.stack import DevStack, DevStackError, Interrupted, SetupError, free_ports

__all__ = ["DevStack", "DevStackError", "Interrupted", "SetupError", "free_ports"]
