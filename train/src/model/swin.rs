//! The Swin-T backbone with one SeMask block per stage (SPEC sections 1.1-1.2): patch embedding,
//! shifted-window attention with relative position bias, patch merging, output norms.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::Taps;
use super::layers::{Conv2d, ConvInit, Dropout, LayerNorm, Linear, trunc_normal};
use super::semask_block::SemanticLayer;

/// Window side (7 in every SeMask-Swin config).
pub const WINDOW: usize = 7;

/// Rounds `n` up to a multiple of the window.
pub fn padded(n: usize) -> usize {
    n.div_ceil(WINDOW) * WINDOW
}

/// Zero-pads `[B, H, W, C]` at the bottom and right to `[B, hp, wp, C]`.
pub fn pad_hw(x: Tensor<4>, hp: usize, wp: usize) -> Tensor<4> {
    let [b, h, w, c] = x.dims();
    let device = x.device();
    let x = if wp > w { Tensor::cat(vec![x, Tensor::zeros([b, h, wp - w, c], &device)], 2) } else { x };
    if hp > h { Tensor::cat(vec![x, Tensor::zeros([b, hp - h, wp, c], &device)], 1) } else { x }
}

/// `[B, Hp, Wp, C]` → `[B * nW, 49, C]`, windows row-major, tokens row-major inside a window.
pub fn window_partition(x: Tensor<4>) -> Tensor<3> {
    let [b, hp, wp, c] = x.dims();
    x.reshape([b, hp / WINDOW, WINDOW, wp / WINDOW, WINDOW, c]).permute([0, 1, 3, 2, 4, 5]).reshape([
        b * (hp / WINDOW) * (wp / WINDOW),
        WINDOW * WINDOW,
        c,
    ])
}

/// Inverse of [`window_partition`].
pub fn window_reverse(windows: Tensor<3>, batch: usize, hp: usize, wp: usize) -> Tensor<4> {
    let c = windows.dims()[2];
    windows
        .reshape([batch, hp / WINDOW, wp / WINDOW, WINDOW, WINDOW, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([batch, hp, wp, c])
}

/// The shift mask of SPEC 1.2(a): `[nW, 49, 49]`, 0 within a region, -100 across regions.
pub fn shift_mask(hp: usize, wp: usize, device: &Device) -> Tensor<3> {
    let shift = WINDOW / 2;
    let region = |n: usize, i: usize| {
        if i < n - WINDOW {
            0
        } else if i < n - shift {
            1
        } else {
            2
        }
    };
    let (nh, nw) = (hp / WINDOW, wp / WINDOW);
    let mut mask = Vec::with_capacity(nh * nw * 49 * 49);
    let mut labels = [0usize; 49];
    for wy in 0..nh {
        for wx in 0..nw {
            for (t, label) in labels.iter_mut().enumerate() {
                let (y, x) = (wy * WINDOW + t / WINDOW, wx * WINDOW + t % WINDOW);
                *label = region(hp, y) * 3 + region(wp, x);
            }
            for p in 0..49 {
                for q in 0..49 {
                    mask.push(if labels[p] == labels[q] { 0.0f32 } else { -100.0 });
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(mask, [nh * nw, 49, 49]), device)
}

/// `idx[p, q] = (yp - yq + 6) * 13 + (xp - xq + 6)` for tokens p, q of a window.
pub fn relative_position_index() -> Vec<i64> {
    let mut idx = Vec::with_capacity(49 * 49);
    for p in 0..49 {
        for q in 0..49 {
            let (yp, xp, yq, xq) =
                ((p / WINDOW) as i64, (p % WINDOW) as i64, (q / WINDOW) as i64, (q % WINDOW) as i64);
            idx.push((yp - yq + 6) * 13 + (xp - xq + 6));
        }
    }
    idx
}

/// Multi-head attention inside 7x7 windows with a learned relative position bias.
#[derive(Module, Debug)]
pub struct WindowAttention {
    pub relative_position_bias_table: Param<Tensor<2>>,
    pub qkv: Linear,
    pub proj: Linear,
    #[module(skip)]
    pub(crate) heads: usize,
}

impl WindowAttention {
    pub fn new(dim: usize, heads: usize, device: &Device) -> Self {
        WindowAttention {
            relative_position_bias_table: Param::from_tensor(trunc_normal([169, heads], 0.02, device)),
            qkv: Linear::new(dim, 3 * dim, true, device),
            proj: Linear::new(dim, dim, true, device),
            heads,
        }
    }

    /// `x`: `[B*nW, 49, C]`; `mask`: `[nW, 49, 49]` for shifted windows.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Tensor<3>>) -> Tensor<3> {
        let [bw, n, c] = x.dims();
        let (heads, head_dim) = (self.heads, c / self.heads);
        let qkv = self.qkv.forward(x).reshape([bw, n, 3, heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().narrow(0, 0, 1).reshape([bw, heads, n, head_dim]);
        let k = qkv.clone().narrow(0, 1, 1).reshape([bw, heads, n, head_dim]);
        let v = qkv.narrow(0, 2, 1).reshape([bw, heads, n, head_dim]);
        let q = q.mul_scalar((head_dim as f64).powf(-0.5));
        let mut attn = q.matmul(k.swap_dims(2, 3));
        let device = attn.device();
        let index =
            Tensor::<1, Int>::from_data(TensorData::new(relative_position_index(), [49 * 49]), &device);
        let bias = self
            .relative_position_bias_table
            .val()
            .select(0, index)
            .reshape([n, n, heads])
            .permute([2, 0, 1]);
        attn = attn.add(bias.unsqueeze_dim::<4>(0));
        if let Some(mask) = mask {
            let nw = mask.dims()[0];
            attn = attn
                .reshape([bw / nw, nw, heads, n, n])
                .add(mask.clone().unsqueeze_dim::<4>(1).unsqueeze_dim::<5>(0))
                .reshape([bw, heads, n, n]);
        }
        let attn = softmax(attn, 3);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([bw, n, c]);
        self.proj.forward(out)
    }
}

/// fc1 -> GELU (erf) -> fc2.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

/// One Swin block: (shifted) window attention and an MLP, each with a residual.
#[derive(Module, Debug)]
pub struct SwinBlock {
    pub norm1: LayerNorm,
    pub attn: WindowAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: Dropout,
    #[module(skip)]
    pub(crate) shifted: bool,
}

impl SwinBlock {
    pub fn new(dim: usize, heads: usize, shifted: bool, drop_path: f64, device: &Device) -> Self {
        SwinBlock {
            norm1: LayerNorm::new(dim, device),
            attn: WindowAttention::new(dim, heads, device),
            norm2: LayerNorm::new(dim, device),
            mlp: Mlp {
                fc1: Linear::new(dim, 4 * dim, true, device),
                fc2: Linear::new(4 * dim, dim, true, device),
            },
            drop_path: Dropout::new(drop_path),
            shifted,
        }
    }

    /// `x`: `[B, H*W, C]`.
    pub fn forward(&self, x: Tensor<3>, h: usize, w: usize, mask: &Tensor<3>) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let (hp, wp) = (padded(h), padded(w));
        // The norm comes before the padding: padded tokens are zeros, not normalised zeros.
        let mut u = pad_hw(self.norm1.forward(x.clone()).reshape([b, h, w, c]), hp, wp);
        let shift = WINDOW as i64 / 2;
        if self.shifted {
            u = u.roll(&[-shift, -shift], &[1, 2]);
        }
        let attended = self.attn.forward(window_partition(u), self.shifted.then_some(mask));
        let mut u = window_reverse(attended, b, hp, wp);
        if self.shifted {
            u = u.roll(&[shift, shift], &[1, 2]);
        }
        let u = u.slice([0..b, 0..h, 0..w, 0..c]).reshape([b, l, c]);
        let x = x.add(self.drop_path.forward_path(u));
        let mlp = self.mlp.forward(self.norm2.forward(x.clone()));
        x.add(self.drop_path.forward_path(mlp))
    }
}

/// 4x4 stride-4 convolution, then LayerNorm over channels.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
    pub norm: LayerNorm,
}

impl PatchEmbed {
    /// `[B, 3, H, W]` → tokens `[B, H/4*W/4, C]` and the token grid size.
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<3>, usize, usize) {
        let [b, c_in, h, w] = x.dims();
        let device = x.device();
        let (pw, ph) = ((4 - w % 4) % 4, (4 - h % 4) % 4);
        let x = if pw > 0 { Tensor::cat(vec![x, Tensor::zeros([b, c_in, h, pw], &device)], 3) } else { x };
        let x =
            if ph > 0 { Tensor::cat(vec![x, Tensor::zeros([b, c_in, ph, w + pw], &device)], 2) } else { x };
        let x = self.proj.forward(x);
        let [_, c, gh, gw] = x.dims();
        let tokens = self.norm.forward(x.reshape([b, c, gh * gw]).swap_dims(1, 2));
        (tokens, gh, gw)
    }
}

/// 2x2 neighbourhoods concatenated (x0, x1, x2, x3), LayerNorm(4C), Linear(4C → 2C).
#[derive(Module, Debug)]
pub struct PatchMerging {
    pub norm: LayerNorm,
    pub reduction: Linear,
}

impl PatchMerging {
    pub fn forward(&self, x: Tensor<3>, h: usize, w: usize) -> Tensor<3> {
        let [b, _, c] = x.dims();
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let x = pad_hw(x.reshape([b, h, w, c]), 2 * h2, 2 * w2);
        // [B, h2, hp, w2, wp, C] → [B, h2, w2, wp, hp, C]: channel blocks (hp, wp) = (0,0),
        // (1,0), (0,1), (1,1), i.e. x0, x1, x2, x3.
        let x = x.reshape([b, h2, 2, w2, 2, c]).permute([0, 1, 3, 4, 2, 5]).reshape([b, h2 * w2, 4 * c]);
        self.reduction.forward(self.norm.forward(x))
    }
}

/// One stage: Swin blocks, the SeMask block, and patch merging (stages 0-2).
#[derive(Module, Debug)]
pub struct BasicLayer {
    pub blocks: Vec<SwinBlock>,
    pub semantic_layer: SemanticLayer,
    pub downsample: Option<PatchMerging>,
}

/// What a stage produces.
pub struct StageOutput {
    /// The SeMask block's output `[B, H*W, C]` (before the output norm).
    pub x: Tensor<3>,
    /// Semantic prior `[B, H*W, K]`.
    pub sem: Tensor<3>,
    /// Input of the next stage, if any.
    pub down: Option<Tensor<3>>,
}

impl BasicLayer {
    pub fn forward(&self, x: Tensor<3>, h: usize, w: usize, prefix: &str, taps: &mut Taps) -> StageOutput {
        let mask = shift_mask(padded(h), padded(w), &x.device());
        let mut x = x;
        for (j, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, h, w, &mask);
            taps.record(|| format!("{prefix}.blocks.{j}.out"), &x);
        }
        let (x, sem) = self.semantic_layer.forward(x, h, w);
        taps.record(|| format!("{prefix}.semantic_layer.sem"), &sem);
        taps.record(|| format!("{prefix}.semantic_layer.x"), &x);
        let down = self.downsample.as_ref().map(|d| d.forward(x.clone(), h, w));
        if let Some(down) = &down {
            taps.record(|| format!("{prefix}.downsample.out"), down);
        }
        StageOutput { x, sem, down }
    }
}

/// The SeMask-Swin backbone.
#[derive(Module, Debug)]
pub struct Backbone {
    pub patch_embed: PatchEmbed,
    pub layers: Vec<BasicLayer>,
    pub norm0: LayerNorm,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub norm3: LayerNorm,
}

impl Backbone {
    pub fn new(arch: &super::ArchConfig, device: &Device) -> Self {
        let total: usize = arch.depths.iter().sum();
        let dpr: Vec<f64> = (0..total).map(|i| 0.3 * i as f64 / (total.max(2) - 1) as f64).collect();
        let c0 = arch.embed_dim;
        let mut layers = Vec::new();
        let mut block_index = 0;
        for (i, &depth) in arch.depths.iter().enumerate() {
            let dim = c0 << i;
            let blocks = (0..depth)
                .map(|j| {
                    let block = SwinBlock::new(dim, arch.num_heads[i], j % 2 == 1, dpr[block_index], device);
                    block_index += 1;
                    block
                })
                .collect();
            layers.push(BasicLayer {
                blocks,
                semantic_layer: SemanticLayer::new(dim, arch.num_classes, arch.global_semask(i), device),
                downsample: (i + 1 < arch.depths.len()).then(|| PatchMerging {
                    norm: LayerNorm::new(4 * dim, device),
                    reduction: Linear::new(4 * dim, 2 * dim, false, device),
                }),
            });
        }
        Backbone {
            patch_embed: PatchEmbed {
                proj: Conv2d::new(3, c0, 4, 4, 0, true, ConvInit::TorchDefault, device),
                norm: LayerNorm::new(c0, device),
            },
            layers,
            norm0: LayerNorm::new(c0, device),
            norm1: LayerNorm::new(c0 * 2, device),
            norm2: LayerNorm::new(c0 * 4, device),
            norm3: LayerNorm::new(c0 * 8, device),
        }
    }

    /// Features `[B, C_i, H_i, W_i]` and semantic priors `[B, K, H_i, W_i]` of the 4 stages.
    pub fn forward(&self, x: Tensor<4>, taps: &mut Taps) -> (Vec<Tensor<4>>, Vec<Tensor<4>>) {
        let (mut x, mut h, mut w) = self.patch_embed.forward(x);
        let b = x.dims()[0];
        taps.record(
            || "backbone.patch_embed.out".into(),
            &x.clone().swap_dims(1, 2).reshape([b, x.dims()[2], h, w]),
        );
        let norms = [&self.norm0, &self.norm1, &self.norm2, &self.norm3];
        let (mut feats, mut sems) = (Vec::new(), Vec::new());
        for (i, layer) in self.layers.iter().enumerate() {
            let out = layer.forward(x, h, w, &format!("backbone.layers.{i}"), taps);
            let c = out.x.dims()[2];
            let k = out.sem.dims()[2];
            feats.push(norms[i].forward(out.x).reshape([b, h, w, c]).permute([0, 3, 1, 2]));
            sems.push(out.sem.reshape([b, h, w, k]).permute([0, 3, 1, 2]));
            match out.down {
                Some(down) => {
                    x = down;
                    (h, w) = (h.div_ceil(2), w.div_ceil(2));
                }
                None => break,
            }
        }
        for (i, f) in feats.iter().enumerate() {
            taps.record(|| format!("backbone.out{i}"), f);
        }
        for (i, s) in sems.iter().enumerate() {
            taps.record(|| format!("backbone.sem_out{i}"), s);
        }
        (feats, sems)
    }
}
