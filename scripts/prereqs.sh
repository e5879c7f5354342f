#!/bin/sh
# What `make test` needs beyond Python: Chromium for the console test
# (tests/e2e/test_console.py), Node and npm for the Yjs test (tests/e2e/test_yjs_node.py)
# and that test's npm packages (pinned in tests/e2e/node/package-lock.json), and
# PostgreSQL's server binaries for the store-of-record tests (tests/relay/test_store_contract.py
# starts a throwaway server of its own: tests/support/postgres.py; Debian's package).
#
#   scripts/prereqs.sh           check; install what is missing when that needs no password
#                                (root, or sudo without one, on Debian/Ubuntu), else fail at
#                                once naming the one command to run
#   scripts/prereqs.sh install   install the system packages (may ask for a sudo password)
#
# Environment: TIENDASYNC_CHROMIUM (the browser binary, default /usr/bin/chromium),
# TIENDASYNC_NODE_DIR (the npm project, default tests/e2e/node), TIENDASYNC_PG_BINDIR
# (PostgreSQL's initdb/pg_ctl/postgres, default any /usr/lib/postgresql/N/bin).
set -eu
chromium=${TIENDASYNC_CHROMIUM:-/usr/bin/chromium}
node_dir=${TIENDASYNC_NODE_DIR:-tests/e2e/node}

missing=""
[ -x "$chromium" ] || missing="$missing chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
pg_found=no
for bindir in ${TIENDASYNC_PG_BINDIR:-/usr/lib/postgresql/*/bin}; do
    if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && [ -x "$bindir/postgres" ]; then
        pg_found=yes
    fi
done
[ "$pg_found" = yes ] || missing="$missing postgresql"
missing=${missing# }

if [ -n "$missing" ]; then
    sudo=""
    can_install=no
    if command -v apt-get >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ]; then
            can_install=yes
        elif command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
            if [ "${1:-}" = install ] || sudo -n true 2>/dev/null; then can_install=yes; fi
        fi
    fi
    if [ "$can_install" = yes ]; then
        echo "installing $missing (apt-get) for the browser, Node and PostgreSQL tests" >&2
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq >/dev/null
        # shellcheck disable=SC2086  # one word per package
        $sudo apt-get install -y -qq $missing >/dev/null
    else
        echo "make test: missing $missing (the console test drives Chromium, the Yjs test runs Node, the store tests start PostgreSQL)." >&2
        echo "Run this once, then make test again:  sudo apt-get install -y $missing" >&2
        echo "(elsewhere: install them with your package manager; TIENDASYNC_CHROMIUM=/path/to/chromium, TIENDASYNC_PG_BINDIR=/path/to/postgresql/bin if they live elsewhere)" >&2
        exit 1
    fi
fi

# The npm packages: installed (npm ci) when missing or older than the lock file.
stamp="$node_dir/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$node_dir/package-lock.json" -nt "$stamp" ]; then
    echo "installing the npm packages of $node_dir (npm ci)" >&2
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >&2
fi
