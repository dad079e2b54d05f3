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
    pub(crate) global: bool,
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

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, TensorData};

    use super::*;

    /// The same weights as a windowed and as a global (SPEC 2.4) layer, with gamma = 1 and
    /// unit-scale weights (not Swin's 0.02) so that the attention shows in the output.
    fn layers(device: &Device) -> (SemanticLayer, SemanticLayer) {
        let mut windowed = SemanticLayer::new(8, 5, false, device);
        let attention = &mut windowed.class_injection[0];
        attention.gamma = Param::from_tensor(Tensor::from_data(TensorData::from([1.0f32]), device));
        for linear in
            [&mut attention.mlp_cls_q, &mut attention.mlp_cls_k, &mut attention.mlp_v, &mut attention.mlp_res]
        {
            let shape = linear.weight.dims();
            linear.weight = Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 1.0), device));
        }
        let global = SemanticLayer { global: true, ..windowed.clone() };
        (windowed, global)
    }

    fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        a.sub(b).abs().max().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn global_block_attends_over_the_whole_image() {
        let device = crate::cpu();
        let (windowed, global) = layers(&device);
        // One 7x7 window, no padding: windowed and global attention are the same computation.
        let x = Tensor::<3>::random([2, 49, 8], Distribution::Normal(0.0, 1.0), &device);
        let (u_w, s_w) = windowed.forward(x.clone(), 7, 7);
        let (u_g, s_g) = global.forward(x, 7, 7);
        assert!(max_diff(u_w, u_g) < 1e-5);
        assert!(max_diff(s_w, s_g) < 1e-5);
        // Two windows (and padding): tokens now see the other window only in the global block.
        let x = Tensor::<3>::random([1, 14 * 9, 8], Distribution::Normal(0.0, 1.0), &device);
        let (u_w, s_w) = windowed.forward(x.clone(), 14, 9);
        let (u_g, s_g) = global.forward(x, 14, 9);
        assert!(max_diff(u_w, u_g) > 1e-3, "global block computed windowed attention");
        // The class prior is a per-token projection: the same either way.
        assert!(max_diff(s_w, s_g) < 1e-5);
    }
}
