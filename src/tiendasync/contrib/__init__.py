"""Integrations with other frameworks, on the public API only; nothing imports them.

Each subpackage needs its framework installed (an extra); ``import tiendasync``
never imports any of them.
"""
