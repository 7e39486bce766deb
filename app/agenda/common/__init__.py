"""Code every Agenda service shares: configuration, logging, TLS, HTTP errors and an HTTP client.

Nothing is re-exported here on purpose: importing `agenda.common` must stay free of side effects and
cheap, and callers name the submodule they need (`from agenda.common import config, logs, tls`).
The logging module is called `logs` rather than `logging` so that `from agenda.common import logs`
never shadows the standard library's `logging` at a call site.
"""
