//! SeMask-T FPN in burn, faithful to the official model (`../shared/semask/SPEC.md`).
//!
//! - [`ArchConfig`]: the architecture as JSON (`embed_dim`, `depths`, `num_heads`,
//!   `window_size`, `num_classes`, `decoder_channels`, `num_sem_blocks`), with the presets
//!   `semask-t` (Cityscapes) and `tiny` (the fixtures').
//! - [`SeMaskFpn`]: the model; its parameter paths are the official `state_dict` keys.
//! - [`Taps`]: optional capture of intermediate tensors under the fixtures' tap names, to find
//!   the first layer where a port drifts.
//!
//! Files: `layers.rs` (PyTorch-layout building blocks), `swin.rs` (backbone),
//! `semask_block.rs` (semantic attention), `decoder.rs` (BranchFPN head).

pub mod decoder;
pub mod layers;
pub mod semask_block;
pub mod swin;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use decoder::BranchFpnHead;
pub use swin::Backbone;

/// The architecture of a SeMask-FPN model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchConfig {
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub num_classes: usize,
    pub decoder_channels: usize,
    pub num_sem_blocks: Vec<usize>,
}

/// Why an architecture cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("architecture {source_name}: {reason}")]
pub struct ArchError {
    pub source_name: String,
    pub reason: String,
}

impl ArchConfig {
    /// The Cityscapes SeMask-T FPN (34,243,753 parameters).
    pub fn semask_t() -> Self {
        ArchConfig {
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: 7,
            num_classes: 19,
            decoder_channels: 256,
            num_sem_blocks: vec![1, 1, 1, 1],
        }
    }

    /// The reference fixtures' configuration (2,644,285 parameters).
    pub fn tiny() -> Self {
        ArchConfig {
            embed_dim: 32,
            depths: vec![2, 2, 2, 2],
            num_heads: vec![1, 2, 4, 8],
            window_size: 7,
            num_classes: 19,
            decoder_channels: 32,
            num_sem_blocks: vec![1, 1, 1, 1],
        }
    }

    /// A preset by name (`semask-t`, `tiny`).
    pub fn preset(name: &str) -> Result<Self, ArchError> {
        match name {
            "semask-t" => Ok(Self::semask_t()),
            "tiny" => Ok(Self::tiny()),
            other => Err(ArchError {
                source_name: other.into(),
                reason: "unknown preset; use semask-t or tiny, or --arch-config FILE".into(),
            }),
        }
    }

    /// Reads and checks a JSON architecture file.
    pub fn from_file(path: &Path) -> Result<Self, ArchError> {
        let err = |reason: String| ArchError { source_name: path.display().to_string(), reason };
        let text = fs_err::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let config: ArchConfig = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "{e}; expected {{\"embed_dim\", \"depths\", \"num_heads\", \"window_size\", \"num_classes\", \
                 \"decoder_channels\", \"num_sem_blocks\"}}"
            ))
        })?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// What this implementation supports (4 stages, 7x7 windows, one semantic attention per stage).
    pub fn validate(&self) -> Result<(), String> {
        if self.depths.len() != 4 || self.num_heads.len() != 4 || self.num_sem_blocks.len() != 4 {
            return Err("depths, num_heads and num_sem_blocks need 4 entries (4 stages)".into());
        }
        if self.window_size != 7 {
            return Err(format!("window_size {} is not supported (7 only)", self.window_size));
        }
        if self.num_sem_blocks.iter().any(|&n| n != 1) {
            return Err("num_sem_blocks other than 1 per stage is not supported".into());
        }
        for (i, &heads) in self.num_heads.iter().enumerate() {
            let dim = self.embed_dim << i;
            if heads == 0 || !dim.is_multiple_of(heads) {
                return Err(format!("stage {i}: {dim} channels do not split into {heads} heads"));
            }
        }
        if self.depths.contains(&0) || self.num_classes == 0 || self.decoder_channels == 0 {
            return Err("depths, num_classes and decoder_channels must be positive".into());
        }
        Ok(())
    }

    /// SPEC 2.4: with embed_dim 96 or 192 and more than 19 classes, stages 2 and 3 use the
    /// global (non-windowed) SeMask block.
    pub fn global_semask(&self, stage: usize) -> bool {
        matches!(self.embed_dim, 96 | 192) && self.num_classes > 19 && stage >= 2
    }

    /// Channels of the 4 backbone stages.
    pub fn stage_channels(&self) -> Vec<usize> {
        (0..4).map(|i| self.embed_dim << i).collect()
    }
}

/// Shape and f32 values of a tensor (read back from the device).
pub fn to_vec<const D: usize>(tensor: &Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let data = tensor.clone().into_data().convert::<f32>();
    let shape = data.shape().to_vec();
    (shape, data.try_to_vec::<f32>().unwrap_or_default())
}

/// Intermediate tensors captured during a forward pass, in computation order, under the tap
/// names of the reference fixtures (`backbone.layers.0.blocks.1.out`, …). Disabled taps cost
/// nothing.
#[derive(Debug, Default)]
pub struct Taps {
    enabled: bool,
    pub entries: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Taps {
    pub fn enabled() -> Self {
        Taps { enabled: true, entries: Vec::new() }
    }

    pub fn disabled() -> Self {
        Taps::default()
    }

    pub fn record<const D: usize>(&mut self, name: impl FnOnce() -> String, tensor: &Tensor<D>) {
        if !self.enabled {
            return;
        }
        let (shape, values) = to_vec(tensor);
        self.entries.push((name(), shape, values));
    }
}

/// What the model computes for a batch.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Main logits `[B, K, H/4, W/4]`.
    pub logits: Tensor<4>,
    /// Semantic-prior logits `[B, K, H/4, W/4]` (training loss only).
    pub sem_logits: Tensor<4>,
}

/// SeMask-FPN: backbone + decode head. Parameter paths equal the official state_dict keys.
#[derive(Module, Debug)]
pub struct SeMaskFpn {
    pub backbone: Backbone,
    pub decode_head: BranchFpnHead,
}

impl SeMaskFpn {
    /// A freshly initialised model (the official initialisation, SPEC section 3).
    pub fn new(arch: &ArchConfig, device: &Device) -> Self {
        SeMaskFpn {
            backbone: Backbone::new(arch, device),
            decode_head: BranchFpnHead::new(
                &arch.stage_channels(),
                arch.decoder_channels,
                arch.num_classes,
                device,
            ),
        }
    }

    /// `x`: normalised images `[B, 3, H, W]`.
    /// The classes it predicts: the output channels of `conv_seg`.
    pub fn num_classes(&self) -> usize {
        self.decode_head.conv_seg.weight.val().dims()[0]
    }

    pub fn forward(&self, x: Tensor<4>) -> Outputs {
        self.forward_with_taps(x, &mut Taps::disabled())
    }

    pub fn forward_with_taps(&self, x: Tensor<4>, taps: &mut Taps) -> Outputs {
        let (feats, sems) = self.backbone.forward(x, taps);
        let (logits, sem_logits) = self.decode_head.forward(feats, sems, taps);
        Outputs { logits, sem_logits }
    }

    /// Logits bilinearly upsampled to the input size (what the official inference argmaxes).
    pub fn logits_up(logits: &Tensor<4>, height: usize, width: usize) -> Tensor<4> {
        decoder::resize(logits.clone(), [height, width])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_variant_switch_follows_spec_2_4() {
        let cityscapes = ArchConfig::semask_t();
        assert!((0..4).all(|i| !cityscapes.global_semask(i)));
        let ade = ArchConfig { num_classes: 150, ..ArchConfig::semask_t() };
        assert_eq!((0..4).map(|i| ade.global_semask(i)).collect::<Vec<_>>(), [false, false, true, true]);
        // Other widths keep windows whatever the class count (e.g. Swin-B, embed 128).
        let base = ArchConfig { embed_dim: 128, num_classes: 150, ..ArchConfig::semask_t() };
        assert!((0..4).all(|i| !base.global_semask(i)));
    }
}
