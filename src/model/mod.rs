//! Layers, presets, parameter layout (in progress).
