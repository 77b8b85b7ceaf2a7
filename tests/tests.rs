//! Integration tests of the `peerfleet` binary and library (one test binary, modules by area).

// A failed unwrap in a test is a failed test with its location: exactly what a test wants.
#![allow(clippy::unwrap_used)]

mod cli;
mod clouds;
mod crash;
mod first_hour;
mod heal;
mod hostile;
mod local;
mod node;
mod secrets;
mod support;
mod team;
