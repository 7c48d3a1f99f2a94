//! Models: layer lists ([`ModelSpec`]), the notebook's presets and the modern ones (`vgg`,
//! `compact`), and the resolved [`Plan`] (every op's shape, every parameter's offset in the
//! one flat parameter buffer, and every running statistic's offset in the second, untrained
//! buffer).
//!
//! - `spec.rs`: what a model is (layers, presets, model files);
//! - `plan.rs`: a model resolved at a batch size, and what a batch needs in memory;
//! - `builder.rs`: the one walk over the layers that builds a plan;
//! - `limits.rs`: how large a model this machine can train, checked by that walk.
//!
//! The network itself ([`network::Network`]) is generic over the backend.

mod builder;
mod limits;
pub mod network;
mod plan;
mod spec;

pub use limits::{ModelLimits, HOST_FLOATS_PER_PARAM};
pub use plan::{Op, ParamTensor, Plan};
pub use spec::{LayerSpec, ModelSpec, Padding};
