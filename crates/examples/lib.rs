//! Nothing to use: this package exists for its examples (`nine_regions`, `embed`), which build without
//! the root package's test-only dependencies.
