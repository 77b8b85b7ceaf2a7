#!/usr/bin/env bash
# Installs what the Docker engine tests (crates/docker/tests) need besides the engine itself:
# - socat, which terminates mutual TLS in front of the engine's socket in the TLS tests;
# - ldd (libc-bin), which lists the libraries the node image must carry (present on any Debian system).
#
# Idempotent: apt-get runs only when something is missing, and then updates its lists first.
# The engine is not installed here: the tests use the one DOCKER_HOST (or /var/run/docker.sock) names,
# and report themselves SKIPPED without it (or fail when CI is set).
set -euo pipefail

missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v ldd >/dev/null 2>&1 || missing+=(libc-bin)

if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

echo "docker test tools ready: $(command -v socat), $(command -v ldd)"
