//! Generated faces (in progress).
