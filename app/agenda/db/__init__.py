"""DB Service: a 5-node Raft cluster exposing an etcd-v3-style key-value API over HTTP.

Client side (what the services import): ``agenda.db.client`` (the HTTP client) and ``agenda.db.txn``
(command and transaction builders), over ``agenda.db.commands`` (the command format: limits, validation,
parsing) and ``agenda.db.errors``. None of them loads the server side.

Server side: ``agenda.db.state`` holds the pure, deterministic replicated state machine (keys with
revisions, leases, transactions, watch history), with its records in ``agenda.db.records`` and its
snapshot encoding in ``agenda.db.snapshot``. It is kept free of I/O, clocks and pysyncobj so that
identical logs provably yield identical state on every node and so it can be tested exhaustively without
a cluster. ``agenda.db.node`` runs it under Raft (pysyncobj) with ``durability``, ``transport``, ``dump``,
``tick`` and ``peers``; every pysyncobj internal it needs is confined to ``agenda.db.pysyncobj_adapter``.
``agenda.db.api`` is the HTTP API (Flask blueprints) and ``agenda.db.cli`` the ``agenda-db`` command.

For tests and tools: ``agenda.db.memory`` is a ``DBClient`` over a state machine in the same process (no
Raft, no HTTP), with injectable races, unknown outcomes and outages. It is server side: no service
imports it.
"""
