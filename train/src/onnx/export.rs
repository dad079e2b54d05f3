//! The burn model as an ONNX graph (`semask-train export`), written node by node from the same
//! structure as [`crate::model`]'s forward pass, for one static input size.
//!
//! What the graph looks like, and why:
//! - Static shapes everywhere (batch 1, the given input size): window partitions are Reshape /
//!   Transpose with constant shapes, padding is `Pad`, the cyclic shift is Slice + Concat; no
//!   Shape / Gather / ScatterND / Where arithmetic for TensorRT or tract to fold.
//! - The relative-position bias of every attention is gathered at export time into a constant
//!   `[heads, 49, 49]`, the shift mask into a constant `[nW, 1, 49, 49]`.
//! - `LayerNormalization` is one op (opset 17), GELU is the exact erf form
//!   (`0.5 x (1 + erf(x / sqrt 2))`, what `torch.onnx.export` writes for opset 17).
//! - Folded at export (eval-mode identities, exact up to float rounding): the attention scale
//!   into the query rows of `qkv`, each SeMask gamma into its `mlp_res`, each decoder BatchNorm
//!   into its convolution. Fewer nodes, and the quantizer sees one matrix per product.
//! - Node names are the official module paths (`backbone.layers.0.blocks.1.attn.qkv/MatMul`),
//!   so TensorRT logs, profiles and the calibration cache say where a tensor comes from.

use burn::module::Param;
use burn::tensor::Tensor;
use tract_onnx::pb;

use super::graph::{self, Graph, attr_float, attr_int, attr_ints, attr_string, value_info_f32};
use crate::model::decoder::ConvModule;
use crate::model::layers::{Conv2d, LayerNorm, Linear};
use crate::model::semask_block::SemanticLayer;
use crate::model::swin::{PatchMerging, SwinBlock, WINDOW, padded, relative_position_index, shift_mask};
use crate::model::{ArchConfig, SeMaskFpn, to_vec};

/// Name of the graph input.
pub const INPUT: &str = "input";
/// Names of the graph outputs.
pub const LOGITS: &str = "logits";
pub const LOGITS_UP: &str = "logits_up";
pub const SEM_LOGITS: &str = "sem_logits";

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Network input size.
    pub height: usize,
    pub width: usize,
    /// Add `logits_up` (logits bilinearly resized to the input size).
    pub with_upsampled: bool,
    /// Add `sem_logits` (the semantic branch; a training signal, not needed to deploy).
    pub with_semantic: bool,
    /// `metadata_props` entries.
    pub metadata: Vec<(String, String)>,
}

/// Every operator [`export`] writes (a test checks the exports). The GPU calibration pass
/// ([`crate::quantize::device_tap`]) runs exactly these; the fp16 conversion types them.
pub const OPERATORS: [&str; 16] = [
    "Add",
    "Concat",
    "Conv",
    "Div",
    "Erf",
    "LayerNormalization",
    "MatMul",
    "Mul",
    "Pad",
    "Relu",
    "Reshape",
    "Resize",
    "Slice",
    "Softmax",
    "Split",
    "Transpose",
];

/// The ONNX model of `model` (in eval mode) for `options`' input size.
pub fn export(model: &SeMaskFpn, arch: &ArchConfig, options: &ExportOptions) -> pb::ModelProto {
    let (height, width) = (options.height, options.width);
    let mut e = Exporter { g: Graph::default() };
    let (feats, sems) = e.backbone(model, height, width);
    let k = arch.num_classes;
    let (logits, (h0, w0)) = e.decode_head(model, feats);
    let mut outputs = vec![value_info_f32(LOGITS, &[1, k, h0, w0])];
    // The graph output names are fixed; route the last node into them with Identity only
    // where needed (the logits node is renamed instead).
    e.rename_output(&logits, LOGITS);
    if options.with_upsampled {
        let up = e.resize("logits_up/Resize", LOGITS, k, height, width);
        e.rename_output(&up, LOGITS_UP);
        outputs.push(value_info_f32(LOGITS_UP, &[1, k, height, width]));
    }
    if options.with_semantic {
        let sem = e.semantic_branch(sems, k, (h0, w0));
        e.rename_output(&sem, SEM_LOGITS);
        outputs.push(value_info_f32(SEM_LOGITS, &[1, k, h0, w0]));
    }
    let graph = e.g.finish("semask_fpn", vec![value_info_f32(INPUT, &[1, 3, height, width])], outputs);
    graph::model(graph, &options.metadata)
}

/// Values of a parameter as f32.
fn values<const D: usize>(param: &Param<Tensor<D>>) -> (Vec<usize>, Vec<f32>) {
    to_vec(&param.val())
}

/// A feature map on its way through the backbone: tensor name and grid.
struct Tokens {
    name: String,
    h: usize,
    w: usize,
    c: usize,
}

struct Exporter {
    g: Graph,
}

impl Exporter {
    /// Renames the node output `from` (an output of the last node written) to `to`.
    fn rename_output(&mut self, from: &str, to: &str) {
        for node in &mut self.g.nodes {
            for output in &mut node.output {
                if output == from {
                    *output = to.to_string();
                }
            }
            for input in &mut node.input {
                if input == from {
                    *input = to.to_string();
                }
            }
        }
    }

    fn reshape(&mut self, name: &str, x: &str, shape: &[usize]) -> String {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let shape = self.g.i64(&format!("{name}/shape"), &dims);
        self.g.node("Reshape", name, &[x, &shape], vec![])
    }

    fn transpose(&mut self, name: &str, x: &str, perm: &[i64]) -> String {
        self.g.node("Transpose", name, &[x], vec![attr_ints("perm", perm)])
    }

    fn slice(&mut self, name: &str, x: &str, starts: &[i64], ends: &[i64], axes: &[i64]) -> String {
        let s = self.g.i64(&format!("{name}/starts"), starts);
        let e = self.g.i64(&format!("{name}/ends"), ends);
        let a = self.g.i64(&format!("{name}/axes"), axes);
        self.g.node("Slice", name, &[x, &s, &e, &a], vec![])
    }

    fn layer_norm(&mut self, prefix: &str, x: &str, norm: &LayerNorm) -> String {
        let (ws, w) = values(&norm.weight);
        let (bs, b) = values(&norm.bias);
        let w = self.g.f32(&format!("{prefix}.weight"), &ws, w);
        let b = self.g.f32(&format!("{prefix}.bias"), &bs, b);
        self.g.node(
            "LayerNormalization",
            &format!("{prefix}/LayerNormalization"),
            &[x, &w, &b],
            vec![attr_int("axis", -1), attr_float("epsilon", 1e-5)],
        )
    }

    /// `x W^T + b` as MatMul (+ Add), with the weight stored `[in, out]`. `row_scale(o)`
    /// multiplies output `o`'s weights and bias (folded constants).
    fn linear(&mut self, prefix: &str, x: &str, linear: &Linear, row_scale: impl Fn(usize) -> f32) -> String {
        let (shape, w) = values(&linear.weight);
        let (out, inp) = (shape[0], shape[1]);
        let mut wt = vec![0f32; inp * out];
        for o in 0..out {
            let s = row_scale(o);
            for i in 0..inp {
                wt[i * out + o] = w[o * inp + i] * s;
            }
        }
        let wt = self.g.f32(&format!("{prefix}.weight"), &[inp, out], wt);
        let y = self.g.node("MatMul", &format!("{prefix}/MatMul"), &[x, &wt], vec![]);
        match &linear.bias {
            None => y,
            Some(bias) => {
                let (_, b) = values(bias);
                let b: Vec<f32> = b.iter().enumerate().map(|(o, v)| v * row_scale(o)).collect();
                let b = self.g.f32(&format!("{prefix}.bias"), &[out], b);
                self.g.node("Add", &format!("{prefix}/Add"), &[&y, &b], vec![])
            }
        }
    }

    /// Conv with weights `w` `[O, I, k, k]` and optional bias.
    fn conv(
        &mut self,
        prefix: &str,
        x: &str,
        (shape, w): (Vec<usize>, Vec<f32>),
        bias: Option<Vec<f32>>,
        stride: usize,
        pad: usize,
    ) -> String {
        let k = shape[2] as i64;
        let wn = self.g.f32(&format!("{prefix}.weight"), &shape, w);
        let mut inputs = vec![x.to_string(), wn];
        if let Some(b) = bias {
            inputs.push(self.g.f32(&format!("{prefix}.bias"), &[shape[0]], b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let p = pad as i64;
        self.g.node(
            "Conv",
            &format!("{prefix}/Conv"),
            &inputs,
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[stride as i64; 2]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", 1),
            ],
        )
    }

    fn conv2d(&mut self, prefix: &str, x: &str, conv: &Conv2d) -> String {
        let bias = conv.bias.as_ref().map(|b| values(b).1);
        self.conv(prefix, x, values(&conv.weight), bias, conv.stride, conv.padding)
    }

    /// Zero padding of `pads` (ONNX order: all begins, then all ends).
    fn pad(&mut self, name: &str, x: &str, pads: &[i64]) -> String {
        let pads = self.g.i64(&format!("{name}/pads"), pads);
        self.g.node("Pad", name, &[x, &pads], vec![attr_string("mode", "constant")])
    }

    /// `[1, h, w, C]` zero-padded at the bottom and right to `[1, hp, wp, C]`.
    fn pad_hw(&mut self, name: &str, x: &str, (h, w): (usize, usize), (hp, wp): (usize, usize)) -> String {
        if (h, w) == (hp, wp) {
            return x.to_string();
        }
        self.pad(name, x, &[0, 0, 0, 0, 0, (hp - h) as i64, (wp - w) as i64, 0])
    }

    /// `torch.roll(x, shift, axis)` for a static axis length `n`: Slice + Concat.
    fn roll(&mut self, name: &str, x: &str, shift: i64, axis: i64, n: usize) -> String {
        let n = n as i64;
        let k = (-shift).rem_euclid(n);
        if k == 0 {
            return x.to_string();
        }
        let tail = self.slice(&format!("{name}/tail"), x, &[k], &[n], &[axis]);
        let head = self.slice(&format!("{name}/head"), x, &[0], &[k], &[axis]);
        self.g.node("Concat", &format!("{name}/Concat"), &[&tail, &head], vec![attr_int("axis", axis)])
    }

    /// The cyclic shift of shifted windows on `[1, hp, wp, C]` (axes 1 and 2).
    fn roll_hw(&mut self, name: &str, x: &str, shift: i64, (hp, wp): (usize, usize)) -> String {
        let x = self.roll(&format!("{name}/h"), x, shift, 1, hp);
        self.roll(&format!("{name}/w"), &x, shift, 2, wp)
    }

    /// `[1, hp, wp, C]` → `[nW, 49, C]` (see [`crate::model::swin::window_partition`]).
    fn partition(&mut self, name: &str, x: &str, (hp, wp): (usize, usize), c: usize) -> String {
        let x =
            self.reshape(&format!("{name}/Reshape"), x, &[1, hp / WINDOW, WINDOW, wp / WINDOW, WINDOW, c]);
        let x = self.transpose(&format!("{name}/Transpose"), &x, &[0, 1, 3, 2, 4, 5]);
        self.reshape(&format!("{name}/Reshape"), &x, &[(hp / WINDOW) * (wp / WINDOW), WINDOW * WINDOW, c])
    }

    /// Inverse of [`Self::partition`].
    fn reverse(&mut self, name: &str, x: &str, (hp, wp): (usize, usize), c: usize) -> String {
        let x =
            self.reshape(&format!("{name}/Reshape"), x, &[1, hp / WINDOW, wp / WINDOW, WINDOW, WINDOW, c]);
        let x = self.transpose(&format!("{name}/Transpose"), &x, &[0, 1, 3, 2, 4, 5]);
        self.reshape(&format!("{name}/Reshape"), &x, &[1, hp, wp, c])
    }

    /// `[1, hp, wp, C]` cut to `[1, h, w, C]`.
    fn crop_hw(&mut self, name: &str, x: &str, (h, w): (usize, usize), (hp, wp): (usize, usize)) -> String {
        if (h, w) == (hp, wp) {
            return x.to_string();
        }
        self.slice(name, x, &[0, 0], &[h as i64, w as i64], &[1, 2])
    }

    fn gelu(&mut self, name: &str, x: &str) -> String {
        let sqrt2 = self.g.f32(&format!("{name}/sqrt2"), &[], vec![std::f32::consts::SQRT_2]);
        let one = self.g.f32(&format!("{name}/one"), &[], vec![1.0]);
        let half = self.g.f32(&format!("{name}/half"), &[], vec![0.5]);
        let d = self.g.node("Div", &format!("{name}/Div"), &[x, &sqrt2], vec![]);
        let e = self.g.node("Erf", &format!("{name}/Erf"), &[&d], vec![]);
        let a = self.g.node("Add", &format!("{name}/Add"), &[&e, &one], vec![]);
        let m = self.g.node("Mul", &format!("{name}/Mul"), &[x, &a], vec![]);
        self.g.node("Mul", &format!("{name}/Mul"), &[&m, &half], vec![])
    }

    fn softmax(&mut self, name: &str, x: &str) -> String {
        self.g.node("Softmax", name, &[x], vec![attr_int("axis", -1)])
    }

    /// Bilinear resize (half-pixel centres) of `[1, c, h, w]` to `[1, c, out_h, out_w]`.
    fn resize(&mut self, name: &str, x: &str, c: usize, out_h: usize, out_w: usize) -> String {
        let sizes = self.g.i64(&format!("{name}/sizes"), &[1, c as i64, out_h as i64, out_w as i64]);
        self.g.node(
            "Resize",
            name,
            &[x, "", "", &sizes],
            vec![
                attr_string("mode", "linear"),
                attr_string("coordinate_transformation_mode", "pytorch_half_pixel"),
            ],
        )
    }

    fn backbone(&mut self, model: &SeMaskFpn, height: usize, width: usize) -> (Vec<Tokens>, Vec<Tokens>) {
        let backbone = &model.backbone;
        // Patch embedding: pad to a multiple of 4, 4x4/4 conv, tokens, LayerNorm.
        let (ph, pw) = ((4 - height % 4) % 4, (4 - width % 4) % 4);
        let x = if ph + pw > 0 {
            self.pad("backbone.patch_embed/Pad", INPUT, &[0, 0, 0, 0, 0, 0, ph as i64, pw as i64])
        } else {
            INPUT.to_string()
        };
        let x = self.conv2d("backbone.patch_embed.proj", &x, &backbone.patch_embed.proj);
        let c0 = backbone.patch_embed.proj.weight.dims()[0];
        let (mut h, mut w) = ((height + ph) / 4, (width + pw) / 4);
        let x = self.reshape("backbone.patch_embed/Reshape", &x, &[1, c0, h * w]);
        let x = self.transpose("backbone.patch_embed/Transpose", &x, &[0, 2, 1]);
        let mut x = self.layer_norm("backbone.patch_embed.norm", &x, &backbone.patch_embed.norm);

        let norms = [&backbone.norm0, &backbone.norm1, &backbone.norm2, &backbone.norm3];
        let (mut feats, mut sems) = (Vec::new(), Vec::new());
        for (i, layer) in backbone.layers.iter().enumerate() {
            let prefix = format!("backbone.layers.{i}");
            let c = c0 << i;
            let (hp, wp) = (padded(h), padded(w));
            let mask = self.shift_mask(&format!("{prefix}.attn_mask"), hp, wp);
            for (j, block) in layer.blocks.iter().enumerate() {
                x = self.swin_block(&format!("{prefix}.blocks.{j}"), &x, block, (h, w), c, &mask);
            }
            let (stream, sem) = self.semantic_layer(
                &format!("{prefix}.semantic_layer"),
                &x,
                &layer.semantic_layer,
                (h, w),
                c,
            );
            // Stage outputs: normed features and priors as NCHW.
            let f = self.layer_norm(&format!("backbone.norm{i}"), &stream, norms[i]);
            let f = self.reshape(&format!("backbone.out{i}/Reshape"), &f, &[1, h, w, c]);
            let f = self.transpose(&format!("backbone.out{i}"), &f, &[0, 3, 1, 2]);
            feats.push(Tokens { name: f, h, w, c });
            let k = layer.semantic_layer.class_injection[0].mlp_cls_q.weight.dims()[0];
            let s = self.reshape(&format!("backbone.sem_out{i}/Reshape"), &sem, &[1, h, w, k]);
            let s = self.transpose(&format!("backbone.sem_out{i}"), &s, &[0, 3, 1, 2]);
            sems.push(Tokens { name: s, h, w, c: k });
            match &layer.downsample {
                Some(merge) => {
                    x = self.patch_merging(&format!("{prefix}.downsample"), &stream, merge, (h, w), c);
                    (h, w) = (h.div_ceil(2), w.div_ceil(2));
                }
                None => break,
            }
        }
        (feats, sems)
    }

    fn shift_mask(&mut self, name: &str, hp: usize, wp: usize) -> String {
        let (shape, mask) = to_vec(&shift_mask(hp, wp, &crate::cpu()));
        self.g.f32(name, &[shape[0], 1, WINDOW * WINDOW, WINDOW * WINDOW], mask)
    }

    fn swin_block(
        &mut self,
        prefix: &str,
        x: &str,
        block: &SwinBlock,
        (h, w): (usize, usize),
        c: usize,
        mask: &str,
    ) -> String {
        let (hp, wp) = (padded(h), padded(w));
        let shift = (WINDOW / 2) as i64;
        let u = self.layer_norm(&format!("{prefix}.norm1"), x, &block.norm1);
        let u = self.reshape(&format!("{prefix}/Reshape"), &u, &[1, h, w, c]);
        let mut u = self.pad_hw(&format!("{prefix}/Pad"), &u, (h, w), (hp, wp));
        if block.shifted {
            u = self.roll_hw(&format!("{prefix}/roll"), &u, -shift, (hp, wp));
        }
        let windows = self.partition(&format!("{prefix}/window_partition"), &u, (hp, wp), c);
        let count = (hp / WINDOW) * (wp / WINDOW);
        let attended = self.window_attention(
            &format!("{prefix}.attn"),
            &windows,
            count,
            block,
            c,
            block.shifted.then_some(mask),
        );
        let mut u = self.reverse(&format!("{prefix}/window_reverse"), &attended, (hp, wp), c);
        if block.shifted {
            u = self.roll_hw(&format!("{prefix}/unroll"), &u, shift, (hp, wp));
        }
        let u = self.crop_hw(&format!("{prefix}/Slice"), &u, (h, w), (hp, wp));
        let u = self.reshape(&format!("{prefix}/Reshape"), &u, &[1, h * w, c]);
        let x = self.g.node("Add", &format!("{prefix}/residual1"), &[x, &u], vec![]);
        let m = self.layer_norm(&format!("{prefix}.norm2"), &x, &block.norm2);
        let m = self.linear(&format!("{prefix}.mlp.fc1"), &m, &block.mlp.fc1, |_| 1.0);
        let m = self.gelu(&format!("{prefix}.mlp.act"), &m);
        let m = self.linear(&format!("{prefix}.mlp.fc2"), &m, &block.mlp.fc2, |_| 1.0);
        self.g.node("Add", &format!("{prefix}/residual2"), &[&x, &m], vec![])
    }

    /// Attention inside each of the `windows` windows of `x` `[nW, 49, C]`.
    fn window_attention(
        &mut self,
        prefix: &str,
        x: &str,
        windows: usize,
        block: &SwinBlock,
        c: usize,
        mask: Option<&str>,
    ) -> String {
        let attn = &block.attn;
        let heads = attn.heads;
        let hd = c / heads;
        let n = WINDOW * WINDOW;
        let scale = (hd as f32).powf(-0.5);
        // The attention scale folded into the query rows of qkv.
        let qkv = self.linear(&format!("{prefix}.qkv"), x, &attn.qkv, |o| if o < c { scale } else { 1.0 });
        let qkv = self.reshape(&format!("{prefix}/Reshape"), &qkv, &[windows, n, 3, heads, hd]);
        let qkv = self.transpose(&format!("{prefix}/Transpose"), &qkv, &[2, 0, 3, 1, 4]);
        let split = self.g.i64(&format!("{prefix}/split"), &[1, 1, 1]);
        let parts =
            self.g.node_n("Split", &format!("{prefix}/Split"), &[&qkv, &split], 3, vec![attr_int("axis", 0)]);
        let q = self.reshape(&format!("{prefix}/q"), &parts[0], &[windows, heads, n, hd]);
        let k = self.reshape(&format!("{prefix}/k"), &parts[1], &[windows, heads, n, hd]);
        let v = self.reshape(&format!("{prefix}/v"), &parts[2], &[windows, heads, n, hd]);
        let kt = self.transpose(&format!("{prefix}/kT"), &k, &[0, 1, 3, 2]);
        let a = self.g.node("MatMul", &format!("{prefix}/qk"), &[&q, &kt], vec![]);
        // Relative position bias gathered now: bias[h, p, q] = table[index[p, q], h].
        let (_, table) = values(&attn.relative_position_bias_table);
        let index = relative_position_index();
        let mut bias = vec![0f32; heads * n * n];
        for h in 0..heads {
            for (pq, &idx) in index.iter().enumerate() {
                bias[h * n * n + pq] = table[idx as usize * heads + h];
            }
        }
        let bias = self.g.f32(&format!("{prefix}.relative_position_bias"), &[heads, n, n], bias);
        let mut a = self.g.node("Add", &format!("{prefix}/bias"), &[&a, &bias], vec![]);
        if let Some(mask) = mask {
            a = self.g.node("Add", &format!("{prefix}/mask"), &[&a, mask], vec![]);
        }
        let a = self.softmax(&format!("{prefix}/Softmax"), &a);
        let out = self.g.node("MatMul", &format!("{prefix}/av"), &[&a, &v], vec![]);
        let out = self.transpose(&format!("{prefix}/Transpose"), &out, &[0, 2, 1, 3]);
        let out = self.reshape(&format!("{prefix}/Reshape"), &out, &[windows, n, c]);
        self.linear(&format!("{prefix}.proj"), &out, &attn.proj, |_| 1.0)
    }

    fn semantic_layer(
        &mut self,
        prefix: &str,
        x: &str,
        layer: &SemanticLayer,
        (h, w): (usize, usize),
        c: usize,
    ) -> (String, String) {
        let u = self.layer_norm(&format!("{prefix}.norm1"), x, &layer.norm1);
        let k = layer.class_injection[0].mlp_cls_q.weight.dims()[0];
        let (hp, wp) = (padded(h), padded(w));
        let mut u = if layer.global {
            u
        } else {
            let u = self.reshape(&format!("{prefix}/Reshape"), &u, &[1, h, w, c]);
            let u = self.pad_hw(&format!("{prefix}/Pad"), &u, (h, w), (hp, wp));
            self.partition(&format!("{prefix}/window_partition"), &u, (hp, wp), c)
        };
        let mut s = String::new();
        for (j, attention) in layer.class_injection.iter().enumerate() {
            let p = format!("{prefix}.class_injection.{j}");
            let sj = self.linear(&format!("{p}.mlp_cls_q"), &u, &attention.mlp_cls_q, |_| 1.0);
            let kc = self.linear(&format!("{p}.mlp_cls_k"), &u, &attention.mlp_cls_k, |_| 1.0);
            let v = self.linear(&format!("{p}.mlp_v"), &u, &attention.mlp_v, |_| 1.0);
            let kct = self.transpose(&format!("{p}/kT"), &kc, &[0, 2, 1]);
            let a = self.g.node("MatMul", &format!("{p}/sk"), &[&sj, &kct], vec![]);
            let a = self.softmax(&format!("{p}/Softmax"), &a);
            let av = self.g.node("MatMul", &format!("{p}/av"), &[&a, &v], vec![]);
            // gamma (the residual weight) folded into mlp_res.
            let gamma = values(&attention.gamma).1[0];
            let f = self.linear(&format!("{p}.mlp_res"), &av, &attention.mlp_res, |_| gamma);
            u = self.g.node("Add", &format!("{p}/residual"), &[&f, &u], vec![]);
            s = sj;
        }
        if layer.global {
            return (u, s);
        }
        let u = self.reverse(&format!("{prefix}/window_reverse"), &u, (hp, wp), c);
        let u = self.crop_hw(&format!("{prefix}/Slice"), &u, (h, w), (hp, wp));
        let u = self.reshape(&format!("{prefix}/Reshape"), &u, &[1, h * w, c]);
        let s = self.reverse(&format!("{prefix}/sem_reverse"), &s, (hp, wp), k);
        let s = self.crop_hw(&format!("{prefix}/sem_Slice"), &s, (h, w), (hp, wp));
        let s = self.reshape(&format!("{prefix}/sem_Reshape"), &s, &[1, h * w, k]);
        (u, s)
    }

    fn patch_merging(
        &mut self,
        prefix: &str,
        x: &str,
        merge: &PatchMerging,
        (h, w): (usize, usize),
        c: usize,
    ) -> String {
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let x = self.reshape(&format!("{prefix}/Reshape"), x, &[1, h, w, c]);
        let x = self.pad_hw(&format!("{prefix}/Pad"), &x, (h, w), (2 * h2, 2 * w2));
        // Channel blocks x0, x1, x2, x3 = (0,0), (1,0), (0,1), (1,1) as in the burn model.
        let x = self.reshape(&format!("{prefix}/Reshape"), &x, &[1, h2, 2, w2, 2, c]);
        let x = self.transpose(&format!("{prefix}/Transpose"), &x, &[0, 1, 3, 4, 2, 5]);
        let x = self.reshape(&format!("{prefix}/Reshape"), &x, &[1, h2 * w2, 4 * c]);
        let x = self.layer_norm(&format!("{prefix}.norm"), &x, &merge.norm);
        self.linear(&format!("{prefix}.reduction"), &x, &merge.reduction, |_| 1.0)
    }

    /// conv3x3 with the eval-mode BatchNorm folded in, then ReLU.
    fn conv_module(&mut self, prefix: &str, x: &str, module: &ConvModule) -> String {
        let (shape, w) = values(&module.conv.weight);
        let gamma = values(&module.bn.weight).1;
        let beta = values(&module.bn.bias).1;
        let mean = to_vec(&module.bn.running_mean.value()).1;
        let var = to_vec(&module.bn.running_var.value()).1;
        let per_out = w.len() / shape[0];
        let mut folded = w;
        let mut bias = vec![0f32; shape[0]];
        for o in 0..shape[0] {
            let s = gamma[o] / (var[o] + 1e-5).sqrt();
            folded[o * per_out..(o + 1) * per_out].iter_mut().for_each(|v| *v *= s);
            bias[o] = beta[o] - mean[o] * s;
        }
        let y = self.conv(&format!("{prefix}.conv"), x, (shape, folded), Some(bias), 1, 1);
        self.g.node("Relu", &format!("{prefix}/Relu"), &[&y], vec![])
    }

    /// BranchFPN: per level conv modules and x2 upsamplings, summed at stride 4, conv_seg.
    fn decode_head(&mut self, model: &SeMaskFpn, feats: Vec<Tokens>) -> (String, (usize, usize)) {
        let head = &model.decode_head;
        let mut fused: Option<(String, usize, usize)> = None;
        for (i, (feat, steps)) in feats.into_iter().zip(&head.scale_heads).enumerate() {
            let prefix = format!("decode_head.scale_heads.{i}");
            let Tokens { mut name, mut h, mut w, mut c } = feat;
            for (s, step) in steps.iter().enumerate() {
                match step {
                    Some(module) => {
                        name = self.conv_module(&format!("{prefix}.{s}"), &name, module);
                        c = module.conv.weight.dims()[0];
                    }
                    None => {
                        (h, w) = (2 * h, 2 * w);
                        name = self.resize(&format!("{prefix}.{s}/Resize"), &name, c, h, w);
                    }
                }
            }
            fused = Some(match fused {
                None => (name, h, w),
                Some((acc, fh, fw)) => {
                    let y = if (h, w) == (fh, fw) {
                        name
                    } else {
                        self.resize(&format!("{prefix}/fit"), &name, c, fh, fw)
                    };
                    (self.g.node("Add", &format!("{prefix}/sum"), &[&acc, &y], vec![]), fh, fw)
                }
            });
        }
        let (fused, h, w) = fused.expect("four levels");
        (self.conv2d("decode_head.conv_seg", &fused, &head.conv_seg), (h, w))
    }

    /// The parameter-free semantic branch: priors upsampled x2 per level and summed.
    fn semantic_branch(&mut self, sems: Vec<Tokens>, k: usize, (h0, w0): (usize, usize)) -> String {
        let mut acc: Option<String> = None;
        for (i, sem) in sems.into_iter().enumerate() {
            let Tokens { mut name, mut h, mut w, .. } = sem;
            for u in 0..i {
                (h, w) = (2 * h, 2 * w);
                name = self.resize(&format!("decode_head.sem.{i}.{u}/Resize"), &name, k, h, w);
            }
            if (h, w) != (h0, w0) {
                name = self.resize(&format!("decode_head.sem.{i}/fit"), &name, k, h0, w0);
            }
            acc = Some(match acc {
                None => name,
                Some(a) => self.g.node("Add", &format!("decode_head.sem.{i}/sum"), &[&a, &name], vec![]),
            });
        }
        acc.expect("four levels")
    }
}
