//! A network that costs (almost) nothing and allocates nothing, for measuring everything but
//! the network: the allocation test (`tests/alloc.rs`) and the browser-view bench
//! (`benches/browser.rs`) include this file with `#[path]`.

use semask_edge::backend::{Backend, BackendError, BackendKind};
use semask_edge::model::OnnxModel;
use semask_edge::pipeline::{Segmenter, SegmenterOptions};
use semask_edge::postprocess::Upsample;

/// A network that allocates nothing: logits from a few input values (so labels vary).
pub struct StandIn {
    input: Vec<f32>,
    logits: Vec<f32>,
    shape: [usize; 4],
    logits_shape: [usize; 4],
}

impl Backend for StandIn {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn describe(&self) -> String {
        "stand-in".into()
    }
    fn input_shape(&self) -> [usize; 4] {
        self.shape
    }
    fn logits_shape(&self) -> [usize; 4] {
        self.logits_shape
    }
    fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }
    fn run(&mut self) -> Result<(), BackendError> {
        let [_, k, h, w] = self.logits_shape;
        let (ih, iw) = (self.shape[2], self.shape[3]);
        for c in 0..k {
            for y in 0..h {
                for x in 0..w {
                    let v = self.input[((c % 3) * ih + 4 * y) * iw + 4 * x];
                    self.logits[(c * h + y) * w + x] = v * (c as f32 - 9.0);
                }
            }
        }
        Ok(())
    }
    fn logits(&self) -> &[f32] {
        &self.logits
    }
}

/// A segmenter for `model`'s input size, classes and normalisation around a [`StandIn`] network,
/// with exact upsampling.
pub fn stand_in_segmenter(model: &OnnxModel) -> Segmenter {
    let (h, w) = model.input_size(None, &Default::default()).unwrap();
    let stand_in = StandIn {
        input: vec![0.0; 3 * h * w],
        logits: vec![0.0; 19 * (h / 4) * (w / 4)],
        shape: [1, 3, h, w],
        logits_shape: [1, 19, h / 4, w / 4],
    };
    let options = SegmenterOptions { upsample: Upsample::Exact, ..Default::default() };
    Segmenter::with_backend(model, Box::new(stand_in), &options).unwrap()
}
