//! GPU backend (in progress).
