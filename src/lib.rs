//! peerfleet facade
