"""DB Service: a 5-node Raft cluster exposing an etcd-v3-style key-value API over HTTP.

``agenda.db.state`` holds the pure, deterministic replicated state machine (keys with revisions, leases,
transactions, watch history, snapshots) that every node applies committed Raft log entries to. It is kept
free of I/O, clocks and pysyncobj so that identical logs provably yield identical state on every node and
so it can be tested exhaustively without a cluster.
"""
