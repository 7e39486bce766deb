"""SWIM gossip membership with Lifeguard's refinements, as a pure protocol core.

Every member of the cluster runs one :class:`~agenda.gossip.protocol.Node`: it probes one member a second
(directly, then through ``k`` others), suspects the member that answers neither, and declares it dead when
the suspicion times out without a refutation. What a node learns it piggybacks on its next packets, each
update a bounded number of times; a periodic full-state exchange (push/pull) repairs whatever gossip lost.

The layout follows the other pure cores of the project (``agenda.vrrp.fsm``,
``agenda.redis_supervisor.decide``): no sockets, threads or clocks of its own.

* :mod:`~agenda.gossip.config`: the timers (HashiCorp memberlist's LAN defaults) and their formulas.
* :mod:`~agenda.gossip.member`: member records, metadata and the status a member can have.
* :mod:`~agenda.gossip.messages`: the message types and their strict JSON codec.
* :mod:`~agenda.gossip.keyring`: AES-GCM under a key ring, with a replay window and nonce cache.
* :mod:`~agenda.gossip.lifeguard`: the local-health multiplier and the shrinking suspicion timeout.
* :mod:`~agenda.gossip.broadcast`: the retransmit-limited queue of updates to piggyback.
* :mod:`~agenda.gossip.protocol`: the node: ``start``/``tick``/``receive``/``update``/``leave``.
* :mod:`~agenda.gossip.sim`: a deterministic in-memory network and clock that drive many nodes.
"""
