"""What a POS process embeds: the :class:`~tiendasync.store.replica.Replica`.

The facade (``replica.py``) sits over an explicit core (``core.py``: lock,
documents, clock, storage, local writes, remote merges).  Each facet
(catalog, inventory, locations, sales, queue, sync log, conflicts) receives
the core, never the facade.  ``sync_session.py`` is the sans-I/O sync logic
and ``client.py`` pumps it over a websocket.
"""
