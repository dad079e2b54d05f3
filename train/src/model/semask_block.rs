//! The SeMask block of each stage (SPEC section 2): a LayerNorm, then semantic attention in
//! non-shifted 7x7 windows (or over the whole image for the ADE20K-style "large" variant of
//! SPEC 2.4), which both predicts a per-token class prior and mixes class context back in.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use super::layers::{Dropout, LayerNorm, Linear};
use super::swin::{pad_hw, padded, window_partition, window_reverse};

/// One semantic attention (`class_injection.N`).
#[derive(Module, Debug)]
pub struct SemanticAttention {
    /// The residual weight (lambda of the paper); starts at 0.
    pub gamma: Param<Tensor<1>>,
    pub mlp_cls_q: Linear,
    pub mlp_cls_k: Linear,
    pub mlp_v: Linear,
    pub mlp_res: Linear,
    pub drop: Dropout,
}

impl SemanticAttention {
    pub fn new(dim: usize, classes: usize, device: &Device) -> Self {
        SemanticAttention {
            gamma: Param::from_tensor(Tensor::zeros([1], device)),
            mlp_cls_q: Linear::new(dim, classes, true, device),
            mlp_cls_k: Linear::new(dim, classes, true, device),
            mlp_v: Linear::new(dim, dim, true, device),
            mlp_res: Linear::new(dim, dim, true, device),
            drop: Dropout::new(0.1),
        }
    }

    /// `u`: `[N, T, C]` (T tokens attend to each other) → (prior `[N, T, K]`, `[N, T, C]`).
    pub fn forward(&self, u: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let s = self.mlp_cls_q.forward(u.clone());
        let kc = self.mlp_cls_k.forward(u.clone());
        let v = self.mlp_v.forward(u.clone());
        // No 1/sqrt(d) scaling, one head, no bias or mask.
        let a = softmax(s.clone().matmul(kc.swap_dims(1, 2)), 2);
        let f = self.drop.forward(self.mlp_res.forward(a.matmul(v)));
        let gamma = self.gamma.val().unsqueeze_dim::<2>(0).unsqueeze_dim::<3>(0);
        (s, f.mul(gamma).add(u))
    }
}

/// `semantic_layer` of a stage: `SWSeMaskBlock` (windowed) or `SeMaskBlock` (global).
#[derive(Module, Debug)]
pub struct SemanticLayer {
    pub norm1: LayerNorm,
    pub class_injection: Vec<SemanticAttention>,
    #[module(skip)]
    global: bool,
}

impl SemanticLayer {
    pub fn new(dim: usize, classes: usize, global: bool, device: &Device) -> Self {
        SemanticLayer {
            norm1: LayerNorm::new(dim, device),
            class_injection: vec![SemanticAttention::new(dim, classes, device)],
            global,
        }
    }

    /// `x`: `[B, H*W, C]` → (new stream `[B, H*W, C]`, prior `[B, H*W, K]`). The stream is
    /// replaced by the block's output (no skip to the pre-norm input).
    pub fn forward(&self, x: Tensor<3>, h: usize, w: usize) -> (Tensor<3>, Tensor<3>) {
        let [b, l, c] = x.dims();
        let u = self.norm1.forward(x);
        if self.global {
            let mut u = u;
            let mut s = None;
            for block in &self.class_injection {
                let (prior, next) = block.forward(u);
                s = Some(prior);
                u = next;
            }
            return (u, s.expect("at least one semantic attention"));
        }
        let (hp, wp) = (padded(h), padded(w));
        let mut u = window_partition(pad_hw(u.reshape([b, h, w, c]), hp, wp));
        let mut s = None;
        for block in &self.class_injection {
            let (prior, next) = block.forward(u);
            s = Some(prior);
            u = next;
        }
        let s = s.expect("at least one semantic attention");
        let k = s.dims()[2];
        let u = window_reverse(u, b, hp, wp).slice([0..b, 0..h, 0..w, 0..c]).reshape([b, l, c]);
        let s = window_reverse(s, b, hp, wp).slice([0..b, 0..h, 0..w, 0..k]).reshape([b, l, k]);
        (u, s)
    }
}
