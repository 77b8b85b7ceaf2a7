//! Nothing to use: this package exists for its examples (`nine_regions`, `embed`). They build the
//! `peerfleet` library without its cloud providers (unless `--features cloud`) and without the root
//! package's test-only dependencies, so a fresh clone's first `cargo run --example nine_regions` compiles
//! only what a local network needs.
