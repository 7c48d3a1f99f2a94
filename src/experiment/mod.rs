//! Experiments (in progress).
