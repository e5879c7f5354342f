"""Reproducible benchmarks of tiendasync against physical limits and a peer relay.

Run ``python -m benchmarks.run --quick`` (about a minute) or ``--full``
(writes ``benchmarks/results.json`` and the plots under ``docs/img/``).
Every figure is measured next to its baseline in the same run and reported
as a ratio, because the machines these run on are shared and noisy.
"""
