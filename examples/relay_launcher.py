"""Set up and run a relay for a chain: tokens for each store, an admin token.

    python examples/relay_launcher.py --dir relay-data --tenant acme \\
        --store caja-1 --store caja-2 [--port 8765]

Creates ``relay-data/relay.db`` (if new), prints and saves the tokens to
``relay-data/tokens.json`` (keep it secret: it holds credentials), then runs
the relay in the foreground until Ctrl-C.  Equivalent to calling
``tiendasync relay token add`` for each store and ``tiendasync relay``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def tiendasync(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tiendasync", *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="relay-data", help="where the relay keeps its files")
    parser.add_argument("--tenant", default="acme", help="the retail chain")
    parser.add_argument("--store", action="append", default=[], help="a store (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    home = Path(args.dir)
    home.mkdir(parents=True, exist_ok=True)
    db = str(home / "relay.db")
    tokens_file = home / "tokens.json"
    tokens = json.loads(tokens_file.read_text()) if tokens_file.exists() else {}
    if "admin" not in tokens:
        tokens["admin"] = tiendasync("relay", "token", "add", "--db", db, "--admin")
    for store in args.store:
        if store not in tokens:
            tokens[store] = tiendasync(
                "relay", "token", "add", "--db", db, "--tenant", args.tenant, "--replica", store
            )
    tokens_file.write_text(json.dumps(tokens, indent=2))
    os.chmod(tokens_file, 0o600)
    print(f"tokens saved in {tokens_file} (secret)")
    for name, token in tokens.items():
        print(f"  {name:<12} {token}")
    print(
        f"relay: ws://{args.host}:{args.port}   admin API and console: "
        f"http://{args.host}:{args.port + 1}/"
    )
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiendasync",
            "relay",
            "--db",
            db,
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
    )
    # Ctrl-C or SIGTERM here stops the relay cleanly (it commits and closes sessions).
    signal.signal(signal.SIGTERM, lambda *_: relay.terminate())
    try:
        return relay.wait()
    except KeyboardInterrupt:
        relay.terminate()
        return relay.wait()


if __name__ == "__main__":
    raise SystemExit(main())
