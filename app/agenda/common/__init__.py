"""Code every Agenda service shares: configuration, logging, TLS, HTTP errors and an HTTP client, the
strict JSON body parser (`jsonbody`), access tokens (`tokens`), what the gateway and the backends agree
on over HTTP (`web`), what every backend shares (`backend`) and how a service is run (`service`).

Nothing is re-exported here on purpose: importing `agenda.common` must stay free of side effects and
cheap, and callers name the submodule they need (`from agenda.common import config, logs, tls`).
The logging module is called `logs` rather than `logging` so that `from agenda.common import logs`
never shadows the standard library's `logging` at a call site.
"""
