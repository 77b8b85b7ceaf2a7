//! Integration tests of the `peerfleet` binary and library (one test binary, modules by area).

mod cli;
mod local;
mod support;
