//! Engine tests against the machine's real Docker engine (no registry: images are built from binaries
//! compiled here). Without an engine every test prints `SKIPPED: no Docker engine` and returns; under CI
//! (`CI` set) it fails instead. `scripts/setup-docker-tests.sh` installs what they need (socat).

mod containers;
mod images;
mod local_nodes;
mod mutual_tls;
mod support;
