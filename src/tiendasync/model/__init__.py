"""The bottom layer: what every other layer agrees on.

Document names and data types (one table), names and integers, the hybrid
logical clock, the per-store sync config and the conflict resolution actions
(one table the store, the CLI, the admin API and the console all read).
Nothing here does I/O.
"""
