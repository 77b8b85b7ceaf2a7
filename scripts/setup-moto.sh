#!/usr/bin/env bash
# Installs the EC2 stand-in (moto's server mode) into the repository's virtualenv `.venv`.
#
# Idempotent: creates the venv only when missing and installs moto only when the pinned version is not
# already there, so the test command can run it every time. The tests start moto themselves (one server
# per test binary, on a free loopback port); this script only makes `.venv/bin/moto_server` exist.
set -euo pipefail

MOTO_VERSION="5.2.5"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi

installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
if [ "$installed" != "$MOTO_VERSION" ] || [ ! -x "$venv/bin/moto_server" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

echo "moto $MOTO_VERSION ready: $venv/bin/moto_server"
echo "tests find it there, or at PEERFLEET_MOTO=<path to moto_server>"
