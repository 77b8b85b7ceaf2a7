#!/usr/bin/env bash
# Makes cloud-init's own schema validator runnable, so tests check generated user data with the real
# thing rather than a hand-written schema.
#
# Debian's `cloud-init` package is downloaded (not installed: installing it would hook into this
# machine's boot) and unpacked into `.ci-cache/cloud-init/`; its Python dependencies go into the
# repository's virtualenv `.venv`. The result is one executable,
#
#     .ci-cache/cloud-init/cloud-init-schema --config-file FILE
#
# which is `cloud-init schema` from the package. Tests find it there, or wherever
# PEERFLEET_CLOUD_INIT_SCHEMA points. Idempotent: every step is skipped when its result exists.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
cache="$repo_root/.ci-cache/cloud-init"
root="$cache/root"
validator="$cache/cloud-init-schema"

# What `cloudinit.cmd.main schema` imports (Debian's package depends on these as python3-* packages).
python_deps=(PyYAML jsonschema jinja2 configobj requests jsonpatch)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

mkdir -p "$cache"

if ! ls "$cache"/cloud-init_*.deb >/dev/null 2>&1; then
    if ! apt-cache policy cloud-init 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        as_root apt-get update -qq
    fi
    # Sandbox user root: the `_apt` user may not be able to write into the repository.
    (cd "$cache" && apt-get download -qq -o APT::Sandbox::User=root cloud-init)
fi

deb="$(ls "$cache"/cloud-init_*.deb | head -n 1)"
if [ ! -d "$root/usr/lib/python3/dist-packages/cloudinit" ]; then
    rm -rf "$root"
    dpkg -x "$deb" "$root"
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import yaml, jsonschema, jinja2, configobj, requests, jsonpatch' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${python_deps[@]}"
fi

cat > "$validator" <<WRAPPER
#!/bin/sh
# cloud-init's schema validator from $(basename "$deb"), run from the repository's venv.
PYTHONPATH="$root/usr/lib/python3/dist-packages" exec "$venv/bin/python" -m cloudinit.cmd.main schema "\$@"
WRAPPER
chmod +x "$validator"

# Prove it runs before telling anyone to use it.
probe="$cache/probe.yaml"
printf '#cloud-config\npackages: [docker.io]\n' > "$probe"
"$validator" --config-file "$probe" >/dev/null

echo "cloud-init schema validator ready ($(basename "$deb")). Validate user data with:"
echo "    $validator --config-file FILE"
echo "tests find it there, or at PEERFLEET_CLOUD_INIT_SCHEMA=<that executable>"
