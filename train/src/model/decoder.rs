//! `BranchFPNHead` (SPEC 1.3): one scale head per backbone level (conv-BN-ReLU blocks and x2
//! bilinear upsamplings, no lateral or top-down path), summed at stride 4, then `conv_seg`; and
//! the parameter-free semantic branch that sums the upsampled stage priors.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, activation::relu};

use super::Taps;
use super::layers::{BatchNorm2d, Conv2d, ConvInit, Dropout};

/// Bilinear resize with half-pixel centres (`align_corners=False`).
pub fn resize(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size(size),
    )
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
