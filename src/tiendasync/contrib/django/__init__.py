"""``tiendasync.contrib.django``: the seed's Django surface over a :class:`~tiendasync.Replica`.

Add ``"tiendasync.contrib.django"`` to ``INSTALLED_APPS``, a ``TIENDASYNC``
settings dict (see :mod:`tiendasync.contrib.django.conf`), and
``path("api/sincronizacion/", include("tiendasync.contrib.django.urls"))``
to the URLconf.  It gives the ``sincronizar`` management command, the
seed's REST API, signals and the ``modo_offline`` context processor.

Everything goes through the public Replica API; nothing here reads or
writes the store file's tables.
"""
