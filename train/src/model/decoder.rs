//! `BranchFPNHead` (SPEC 1.3): one scale head per backbone level (conv-BN-ReLU blocks and x2
//! bilinear upsamplings, no lateral or top-down path), summed at stride 4, then `conv_seg`; and
//! the parameter-free semantic branch that sums the upsampled stage priors.

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, activation::relu};
use burn::tensor::{Tensor, TensorData};

use super::Taps;
use super::layers::{BatchNorm2d, Conv2d, ConvInit, Dropout};

/// Bilinear resize with half-pixel centres (`align_corners=False`).
///
/// burn's GPU backends (cubecl: wgpu, CUDA) have no backward for bilinear interpolation (burn
/// 0.22: "Bilinear interpolation backward is not supported by JIT backend"), and a training
/// step needs one for every upsampling of the decoder and the loss. Where gradients flow on
/// such a device the resize is computed as [`resize_by_products`], the same weights as two
/// matrix products, whose backward every backend has; elsewhere with burn's own kernel.
pub fn resize(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    let device = x.device();
    if device.is_autodiff() && device.clone().inner() != crate::cpu() {
        return resize_by_products(x, size);
    }
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size(size),
    )
}

/// [`resize`] as `A_h · x · A_wᵀ`, where `A` holds PyTorch's bilinear weights (half-pixel
/// centres, sources clamped at 0 and at the last row or column): two products per image.
pub fn resize_by_products(x: Tensor<4>, [out_h, out_w]: [usize; 2]) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let rows = Tensor::<2>::from_data(TensorData::new(bilinear_weights(h, out_h), [out_h, h]), &device);
    let cols = Tensor::<2>::from_data(TensorData::new(bilinear_weights(w, out_w), [out_w, w]), &device);
    let x = x.reshape([b * c, h, w]);
    let x = rows.unsqueeze_dim::<3>(0).expand([b * c, out_h, h]).matmul(x);
    let x = x.matmul(cols.transpose().unsqueeze_dim::<3>(0).expand([b * c, w, out_w]));
    x.reshape([b, c, out_h, out_w])
}

/// Row-major `[out, len]`: output `o` of a bilinear resize from `len` to `out` samples, as
/// PyTorch's `upsample_bilinear2d` with `align_corners=False` weights its two sources.
pub fn bilinear_weights(len: usize, out: usize) -> Vec<f32> {
    let mut a = vec![0.0f32; out * len];
    let scale = len as f64 / out as f64;
    for o in 0..out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(len - 1);
        let i1 = (i0 + 1).min(len - 1);
        let l1 = (src - i0 as f64) as f32;
        a[o * len + i0] += 1.0 - l1;
        a[o * len + i1] += l1;
    }
    a
}

/// x2 bilinear upsampling (mmseg's `Upsample(scale_factor=2)`).
pub fn up2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    resize(x, [2 * h, 2 * w])
}

/// conv3x3 (no bias) → BN → ReLU (mmcv's `ConvModule`).
#[derive(Module, Debug)]
pub struct ConvModule {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvModule {
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        ConvModule {
            conv: Conv2d::new(d_in, d_out, 3, 1, 1, false, ConvInit::KaimingFanOut, device),
            bn: BatchNorm2d::new(d_out, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// The decode head. `scale_heads.i` is stored as the ConvModules of that level, at the indices
/// of the official `nn.Sequential` (0, 2, 4: the upsamplings in between have no parameters).
#[derive(Module, Debug)]
pub struct BranchFpnHead {
    pub conv_seg: Conv2d,
    pub scale_heads: Vec<Vec<Option<ConvModule>>>,
    pub dropout: Dropout,
}

impl BranchFpnHead {
    pub fn new(in_channels: &[usize], channels: usize, classes: usize, device: &Device) -> Self {
        let scale_heads = in_channels
            .iter()
            .enumerate()
            .map(|(i, &c_in)| {
                // Level i: i conv modules (at least one), each followed by Up2 when i > 0.
                (0..i.max(1))
                    .flat_map(|k| {
                        let conv =
                            Some(ConvModule::new(if k == 0 { c_in } else { channels }, channels, device));
                        if i > 0 { vec![conv, None] } else { vec![conv] }
                    })
                    .collect()
            })
            .collect();
        BranchFpnHead {
            conv_seg: Conv2d::new(channels, classes, 1, 1, 0, true, ConvInit::Normal(0.01), device),
            scale_heads,
            dropout: Dropout::new(0.1),
        }
    }

    /// (logits `[B, K, H/4, W/4]`, semantic logits `[B, K, H/4, W/4]`).
    pub fn forward(
        &self,
        feats: Vec<Tensor<4>>,
        sems: Vec<Tensor<4>>,
        taps: &mut Taps,
    ) -> (Tensor<4>, Tensor<4>) {
        let mut fused: Option<Tensor<4>> = None;
        for (i, (feat, head)) in feats.into_iter().zip(&self.scale_heads).enumerate() {
            let mut y = feat;
            for step in head {
                y = match step {
                    Some(conv) => conv.forward(y),
                    None => up2(y),
                };
            }
            taps.record(|| format!("decode_head.scale_heads.{i}.out"), &y);
            fused = Some(match fused {
                None => y,
                Some(acc) => {
                    let [_, _, h, w] = acc.dims();
                    acc.add(resize(y, [h, w]))
                }
            });
        }
        let fused = fused.expect("four levels");
        taps.record(|| "decode_head.conv_seg.in".into(), &fused);
        let logits = self.conv_seg.forward(self.dropout.forward_channels(fused));

        let mut sem_logits: Option<Tensor<4>> = None;
        for (i, sem) in sems.into_iter().enumerate() {
            let mut s = sem;
            for _ in 0..i {
                s = up2(s);
            }
            sem_logits = Some(match sem_logits {
                None => s,
                Some(acc) => {
                    let [_, _, h, w] = acc.dims();
                    acc.add(resize(s, [h, w]))
                }
            });
        }
        (logits, sem_logits.expect("four levels"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// The product form computes burn's (PyTorch's) bilinear resize, values and gradients, for
    /// up- and downsampling, odd sizes, and x4 as the loss uses it.
    #[test]
    fn resize_by_products_is_bilinear_resize_with_its_gradient() {
        let device = crate::cpu().autodiff();
        for (from, to) in [([3, 5], [12, 20]), ([7, 9], [14, 18]), ([16, 16], [5, 7]), ([4, 6], [4, 13])] {
            let shape = [2, 3, from[0], from[1]];
            let weights = random([2, 3, to[0], to[1]], &device);
            let x = random(shape, &device).require_grad();
            let direct = interpolate(
                x.clone(),
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size(to),
            );
            let grads = direct.clone().mul(weights.clone()).sum().backward();
            let direct_grad = x.grad(&grads).unwrap();
            let x2 = random(shape, &device).require_grad();
            let products = resize_by_products(x2.clone(), to);
            let grads = products.clone().mul(weights).sum().backward();
            let products_grad = x2.grad(&grads).unwrap();
            let diff = max_diff(&values(direct.inner()), &values(products.inner()));
            assert!(diff < 1e-5, "{from:?} -> {to:?}: values differ by {diff}");
            let diff = max_diff(&values(direct_grad), &values(products_grad));
            assert!(diff < 1e-5, "{from:?} -> {to:?}: gradients differ by {diff}");
        }
    }
}
