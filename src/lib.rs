//! semask-edge: run a SeMask-T FPN semantic-segmentation model on camera frames, recorded drives
//! and benchmarks.
//!
//! The crate is a library with a thin binary (`src/main.rs`, `src/cli/`). A frame travels
//! through the same stages wherever it comes from:
//!
//! ```text
//! Source ──▶ Preprocess ──▶ Backend ──▶ Postprocess ──▶ Sinks
//! (files,     (resize,       (tract CPU;   (argmax +       (label / colour /
//!  camera…)    normalise)     TensorRT…)    upsample,       overlay PNGs…)
//!                                           colour, overlay)
//! ```
//!
//! Map of the modules:
//! - [`frame`]: the one [`Frame`](frame::Frame) type that carries pixels, results and timings.
//! - [`timing`]: the pipeline stages, per-frame stage timings and latency statistics.
//! - [`model`]: reading an ONNX file, its `semask.*` metadata and the class table.
//! - [`preprocess`]: resize + normalise into the network's NCHW input ([`preprocess::PreprocSpec`]).
//! - [`resample`]: the bilinear / nearest sampling plans shared by pre- and post-processing.
//! - [`backend`]: the inference engines behind one trait (tract on CPU today).
//! - [`calibration`]: the int8 artifacts of a model (Q/DQ and QOperator ONNX, TensorRT
//!   calibration cache, calibration tensors) and which one a backend runs.
//! - [`postprocess`]: logits → label map (fast or exact upsampling), palette colours, overlays.
//! - [`source`]: where frames come from, chosen by a URI-like `--input`.
//! - [`sink`]: where results go (PNG directories today).
//! - [`pipeline`]: [`Segmenter`](pipeline::Segmenter) (one frame in, labels out) and the
//!   three-thread streaming pipeline that ties sources, segmenter and sinks together.
//! - [`ring`]: the bounded SPSC queues between pipeline threads.
//! - [`profile`]: device profiles (`targets/*.toml`): the defaults of a Jetson model, an NVIDIA
//!   desktop, a CPU; detected from the device tree.
//!
//! And the rules every part follows with hostile input:
//! - [`limits`]: how big declared sizes and rates may be, checked before allocating.
//! - [`files`]: inputs are regular files read with a bound; outputs never replace inputs and
//!   are written under `.partial` names until whole.
//! - [`guard`]: third-party code that can panic on bad data runs under [`guard::catch_panic`].

pub mod backend;
pub mod calibration;
pub mod files;
pub mod frame;
pub mod fuzz;
pub mod guard;
pub mod heap;
pub mod limits;
pub mod model;
pub mod named;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod profile;
pub mod progress;
pub mod resample;
pub mod ring;
pub mod sink;
pub mod source;
pub mod timing;
