//! ONNX files: writing graphs ([`graph`]), the model's export ([`export`]).

pub mod export;
pub mod graph;
