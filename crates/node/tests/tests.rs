//! Integration tests of `peerfleet-node`, one test binary (faster to link than one per file). The
//! binary's own tests live with the package that ships it (the root's `tests/node`).

mod roles;
