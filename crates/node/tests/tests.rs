//! Integration tests of `peerfleet-node`, one test binary (faster to link than one per file).

mod binary;
mod roles;
