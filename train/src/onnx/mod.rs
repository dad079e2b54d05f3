//! ONNX files: writing graphs ([`graph`]), the model's export ([`export`]), and its fp16 form
//! ([`fp16`]).

pub mod export;
pub mod fp16;
pub mod graph;
