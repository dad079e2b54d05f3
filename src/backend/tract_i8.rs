//! The int8 layers of a QOperator model as one operator each, swapped in by
//! [`super::tract_ops::accelerate`] before tract optimises the model: linear layers
//! ([`MatMulI8`]) and convolutions ([`ConvI8`]).
//!
//! An int8 layer arrives as five ONNX nodes: `QuantizeLinear` (f32 -> int8 activations),
//! `MatMulInteger` or `ConvInteger` (int8 x int8 -> int32), `Cast` (-> f32), `Mul` (the
//! rescale, one factor per output column or channel) and `Add` (the bias). tract runs them as
//! five operators and makes the product itself slow on SeMask: it keeps the window partition's
//! axes as batch axes of the integer product (the built-in model's stage-1 qkv projection
//! became 490 products of 96x32 by 32x19), copies every convolution input once per kernel tap
//! (Im2col), then Cast, Mul and Add each pass over the int32 output again. On the built-in
//! model the int8 form took 1.5-2x the time of our f32 one (docs/performance.md).
//!
//! Here the rows of all windows are gathered into tiles, as the f32 products do
//! ([`ProductLayout`], [`Tile`]); each row is quantized as it is gathered (so the int8
//! activations are never a tensor of their own), the integer product runs on AVX-512 VNNI where
//! the CPU has it (`vpdpbusd`: 64 multiply-adds of u8 by i8 per instruction), on AVX2 on other
//! x86-64 CPUs (`vpmaddwd` on widened bytes, 16 per instruction), and on a portable kernel
//! elsewhere (tested under qemu on aarch64), and the rescale and bias (and a GELU that follows)
//! are applied while the tile's sums are in cache. Convolutions: see [`ConvI8`].
//!
//! The values are tract's, bit for bit: the quantization is [`QuantizeI8`]'s (tract's rounding,
//! tested), the integer sums are exact, and the epilogue converts, multiplies and adds in
//! tract's order, each step rounded as tract rounds it.
//!
//! VNNI multiplies unsigned by signed bytes, so activations are stored with 128 added (`q ^
//! 0x80` as u8), and `128 * sum of the weights` of each output is subtracted from its sum: exact
//! in i32 for any `k` below 2^16.

use std::ops::Range;
use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;

use tract_linalg::routines::Func;

use super::tract_gemm::{ConvGeometry, ProductLayout, Tile, for_each_task, gelu_rows, pool_threads};
use super::tract_ops::QuantizeI8;

/// Output columns per panel of packed weights: one 512-bit register of i32 sums.
const LANES: usize = 16;
/// `k` values per group: what one `vpdpbusd` lane multiplies and adds.
const GROUP: usize = 4;

/// The constant right operand `b` (`k x n`, int8), packed for the kernels: panels of
/// [`LANES`] columns; in a panel, for each group of [`GROUP`] consecutive `k`, the group's
/// values of each column side by side (`[panel][k / 4][column][4]`), zero-padded in `k` and `n`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PackedWeights {
    k: usize,
    n: usize,
    /// `k` rounded up to whole groups, divided by [`GROUP`].
    groups: usize,
    data: Vec<i8>,
    /// `128 * sum over k of b[k][column]`: what the u8 offset of the activations adds.
    offset_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `b`, element `(kk, col)` at `kk * k_stride + col * n_stride`.
    fn new(b: &[i8], k: usize, n: usize, k_stride: isize, n_stride: isize) -> Option<Self> {
        let groups = k.div_ceil(GROUP);
        let panels = n.div_ceil(LANES);
        let mut data = vec![0i8; panels * groups * LANES * GROUP];
        let mut offset_sums = vec![0i32; n];
        for (col, sum) in offset_sums.iter_mut().enumerate() {
            for kk in 0..k {
                let v = *b.get(usize::try_from(kk as isize * k_stride + col as isize * n_stride).ok()?)?;
                let (panel, lane) = (col / LANES, col % LANES);
                data[((panel * groups + kk / GROUP) * LANES + lane) * GROUP + kk % GROUP] = v;
                *sum += 128 * v as i32;
            }
        }
        Some(PackedWeights { k, n, groups, data, offset_sums })
    }

    fn panel_len(&self) -> usize {
        self.groups * LANES * GROUP
    }
}

/// Which integer kernel runs: chosen once per evaluation from what the CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Vnni512,
    /// x86-64 without AVX-512 VNNI (Intel before Ice Lake, AMD before Zen 4).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn best() -> Kernel {
        Kernel::available().next().expect("the portable kernel is always available")
    }

    /// The kernels this CPU runs, fastest first ([`Kernel::Portable`] last, always there). No
    /// allocation: `best` runs at every evaluation of an int8 layer.
    fn available() -> impl Iterator<Item = Kernel> {
        #[cfg(target_arch = "x86_64")]
        let simd = [
            (std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vnni"))
            .then_some(Kernel::Vnni512),
            std::arch::is_x86_feature_detected!("avx2").then_some(Kernel::Avx2),
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let simd: [Option<Kernel>; 0] = [];
        simd.into_iter().flatten().chain([Kernel::Portable])
    }

    /// `sums[r][c] = sum over k of a[r][k] * b[k][c]` (or `+=` when `accumulate`) for the rows
    /// of `a` and the panels `panels` of `b`; `sums` rows are `LANES * panels.len()` apart.
    fn products(
        self,
        a: ByteRows,
        b: &PackedWeights,
        panels: Range<usize>,
        sums: &mut [i32],
        accumulate: bool,
    ) {
        let width = LANES * panels.len();
        let row_len = b.groups * GROUP;
        let fits =
            a.count == 0 || (a.bytes.len() >= (a.count - 1) * a.stride + row_len && a.stride >= row_len);
        assert!(fits && sums.len() >= a.count * width && panels.end * b.panel_len() <= b.data.len());
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `best` saw the CPU features; the assert above bounds every access.
            Kernel::Vnni512 => unsafe { vnni::products(a, b, panels, sums, accumulate) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Kernel::Avx2 => unsafe { avx2::products(a, b, panels, sums, accumulate) },
            Kernel::Portable => {
                for (r, out) in sums.chunks_exact_mut(width).take(a.count).enumerate() {
                    let row = &a.bytes[r * a.stride..r * a.stride + row_len];
                    for (p, out) in panels.clone().zip(out.chunks_exact_mut(LANES)) {
                        let panel = &b.data[p * b.panel_len()..][..b.panel_len()];
                        let mut acc = [0i32; LANES];
                        if accumulate {
                            acc.copy_from_slice(out);
                        }
                        for (quad, weights) in row.chunks_exact(GROUP).zip(panel.chunks_exact(LANES * GROUP))
                        {
                            for (lane, w) in acc.iter_mut().zip(weights.chunks_exact(GROUP)) {
                                for j in 0..GROUP {
                                    *lane += quad[j] as i32 * w[j] as i32;
                                }
                            }
                        }
                        out.copy_from_slice(&acc);
                    }
                }
            }
        }
    }
}

/// Rows of activations as the kernels read them: u8 (the int8 value + 128), row `r` from byte
/// `r * stride` of `bytes`, each `4 * groups` bytes of the weights long.
#[derive(Clone, Copy, Debug)]
struct ByteRows<'a> {
    bytes: &'a [u8],
    stride: usize,
    count: usize,
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{ByteRows, GROUP, LANES, PackedWeights};

    /// [`super::Kernel::products`] on AVX-512 VNNI: tiles of up to 8 rows by 2 panels (16
    /// accumulators in registers), `b`'s panels read once per 8 rows.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F and VNNI; the operands hold what `products` asserts.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn products(
        a: ByteRows,
        b: &PackedWeights,
        panels: Range<usize>,
        sums: &mut [i32],
        accumulate: bool,
    ) {
        let width = LANES * panels.len();
        let (rows, stride, b_len, g) = (a.count, a.stride, b.panel_len(), b.groups);
        let (a, sums, data) = (a.bytes.as_ptr(), sums.as_mut_ptr(), b.data.as_ptr());
        let mut p = 0;
        while p < panels.len() {
            let pair = (panels.len() - p).min(2);
            let mut r = 0;
            while r < rows {
                // SAFETY: rows `r..r + step` of `a`, panels `p..p + pair` of `b` and the same
                // rows and columns of `sums` are inside the operands (the caller's contract).
                r += unsafe {
                    let bp = data.add((panels.start + p) * b_len);
                    let (ar, out) = (a.add(r * stride), sums.add(r * width + p * LANES));
                    let acc = accumulate;
                    match (rows - r, pair) {
                        (8.., 2) => tile::<8, 2>(ar, stride, g, bp, b_len, out, width, acc),
                        (8.., _) => tile::<8, 1>(ar, stride, g, bp, b_len, out, width, acc),
                        (4.., 2) => tile::<4, 2>(ar, stride, g, bp, b_len, out, width, acc),
                        (4.., _) => tile::<4, 1>(ar, stride, g, bp, b_len, out, width, acc),
                        (_, 2) => tile::<1, 2>(ar, stride, g, bp, b_len, out, width, acc),
                        (_, _) => tile::<1, 1>(ar, stride, g, bp, b_len, out, width, acc),
                    }
                };
            }
            p += pair;
        }
    }

    /// `MR` rows by `NP` panels, onto the sums in `out` when `accumulate`; returns `MR`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[allow(clippy::too_many_arguments)] // a micro-kernel's pointers and strides
    unsafe fn tile<const MR: usize, const NP: usize>(
        a: *const u8,
        a_stride: usize,
        groups: usize,
        b: *const i8,
        panel_len: usize,
        out: *mut i32,
        out_stride: usize,
        accumulate: bool,
    ) -> usize {
        // SAFETY: (the whole body) `a` has `MR` rows of `4 * groups` bytes, `a_stride` apart;
        // `b` has `NP` panels of `panel_len` bytes, `out` `MR` rows of `16 * NP` sums (the caller's).
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); NP]; MR];
            if accumulate {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (p, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_loadu_si512(out.add(r * out_stride + p * LANES) as *const _);
                    }
                }
            }
            for g in 0..groups {
                let mut weights = [_mm512_setzero_si512(); NP];
                for (p, w) in weights.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(b.add(p * panel_len + g * LANES * GROUP) as *const _);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let quad =
                        _mm512_set1_epi32((a.add(r * a_stride + g * GROUP) as *const i32).read_unaligned());
                    for (acc, w) in acc.iter_mut().zip(&weights) {
                        *acc = _mm512_dpbusd_epi32(*acc, quad, *w);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (p, acc) in acc.iter().enumerate() {
                    _mm512_storeu_si512(out.add(r * out_stride + p * LANES) as *mut _, *acc);
                }
            }
        }
        MR
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{ByteRows, GROUP, LANES, PackedWeights};

    /// [`super::Kernel::products`] on AVX2, for x86-64 CPUs without VNNI. `vpmaddubsw` (u8 by
    /// i8) saturates its 16-bit pair sums (255 * -128 * 2 does not fit), so the bytes are widened
    /// to 16 bits and multiplied by `vpmaddwd`, whose pair sums are 32-bit: exact, as the other
    /// kernels. Tiles of up to 2 rows by one panel (8 accumulators in registers).
    ///
    /// # Safety
    ///
    /// The CPU has AVX2; the operands hold what `products` asserts.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn products(
        a: ByteRows,
        b: &PackedWeights,
        panels: Range<usize>,
        sums: &mut [i32],
        accumulate: bool,
    ) {
        let width = LANES * panels.len();
        let (rows, stride, b_len, g) = (a.count, a.stride, b.panel_len(), b.groups);
        let (a, sums, data) = (a.bytes.as_ptr(), sums.as_mut_ptr(), b.data.as_ptr());
        for p in 0..panels.len() {
            let mut r = 0;
            while r < rows {
                // SAFETY: rows `r..r + step` of `a`, panel `p` of `b` and the same rows and
                // columns of `sums` are inside the operands (the caller's contract).
                r += unsafe {
                    let bp = data.add((panels.start + p) * b_len);
                    let (ar, out) = (a.add(r * stride), sums.add(r * width + p * LANES));
                    match rows - r {
                        2.. => tile::<2>(ar, stride, g, bp, out, width, accumulate),
                        _ => tile::<1>(ar, stride, g, bp, out, width, accumulate),
                    }
                };
            }
        }
    }

    /// `MR` rows by one panel, onto the sums in `out` when `accumulate`; returns `MR`.
    ///
    /// A group's 64 weight bytes are 16 columns by 4 `k`; widened 16 at a time (4 columns),
    /// each column's `k` pairs (0, 1) and (2, 3) are adjacent 32-bit words, and `vpmaddwd` by the
    /// row's 4 bytes (widened, repeated every 64 bits) gives the two pair sums of each column
    /// side by side. They are added into one sum per column at the end.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tile<const MR: usize>(
        a: *const u8,
        a_stride: usize,
        groups: usize,
        b: *const i8,
        out: *mut i32,
        out_stride: usize,
        accumulate: bool,
    ) -> usize {
        // SAFETY: (the whole body) `a` has `MR` rows of `4 * groups` bytes, `a_stride` apart;
        // `b` one panel of `groups * 64` bytes, `out` `MR` rows of 16 sums (the caller's).
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 4]; MR];
            for g in 0..groups {
                let mut quads = [_mm256_setzero_si256(); MR];
                for (r, quad) in quads.iter_mut().enumerate() {
                    let bytes = (a.add(r * a_stride + g * GROUP) as *const u32).read_unaligned() as u64;
                    // The 4 bytes as 4 zero-extended 16-bit values.
                    let wide = (bytes & 0xff)
                        | (bytes & 0xff00) << 8
                        | (bytes & 0xff_0000) << 16
                        | (bytes & 0xff00_0000) << 24;
                    *quad = _mm256_set1_epi64x(wide as i64);
                }
                for j in 0..4 {
                    let w =
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(g * LANES * GROUP + j * 16) as *const _));
                    for (acc, quad) in acc.iter_mut().zip(&quads) {
                        acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(*quad, w));
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                // hadd of two accumulators: columns [0 1 4 5 | 2 3 6 7] of their 8; the
                // permutation puts them in order.
                for half in 0..2 {
                    let summed = _mm256_hadd_epi32(acc[2 * half], acc[2 * half + 1]);
                    let mut columns = _mm256_permute4x64_epi64::<0b11_01_10_00>(summed);
                    let dst = out.add(r * out_stride + half * 8) as *mut __m256i;
                    if accumulate {
                        columns = _mm256_add_epi32(columns, _mm256_loadu_si256(dst));
                    }
                    _mm256_storeu_si256(dst, columns);
                }
            }
        }
        MR
    }
}

/// What follows the integer product, per output column: `* rescale[c]`, then `+ bias[c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    pub rescale: Arc<[f32]>,
    pub bias: Option<Arc<[f32]>>,
}

/// `c = (quantize(a) x b) * rescale + bias`: an int8 linear layer (see the module docs) on an
/// f32 input `a` of static shape; `b`, `rescale` and `bias` are constants held by the op.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMulI8 {
    /// The shape the product reads `a` in (the `MatMulInteger`'s input); the received tensor is
    /// the same values before reshapes, so only its length is checked.
    a_shape: Vec<usize>,
    /// The output's shape (the replaced `Add`'s); the layout's `c` strides are those of the
    /// `MatMulInteger`'s output, the same values before reshapes.
    c_shape: Vec<usize>,
    layout: ProductLayout,
    quantize: QuantizeI8,
    weights: Arc<PackedWeights>,
    epilogue: Epilogue,
    /// Whether exact GELU (tract's `GeluExact`, as [`super::tract_gemm::MatMulF32`] applies it)
    /// follows the bias ([`Self::with_gelu`]).
    gelu: bool,
}

// tract compares ops (`DynEq`); the f32 constants come from a model's initialisers, where a
// NaN rescale would be a broken model, so equality is reflexive in practice.
impl Eq for MatMulI8 {}

impl MatMulI8 {
    /// The layer computed by `einsum` (a plain integer product: zero points 0, see
    /// [`super::tract_ops`]) from `a` of `a_shape`, quantized by `quantize`, with the constant
    /// `b`, into `product_shape`, then scaled and shifted by `epilogue` (one value per
    /// column) into `c_shape`. `None` when it is not such a product or when `b` differs between
    /// batch entries. The output's columns may be strided: a 1x1 convolution, which tract
    /// turns into `NIHW,OI->NOHW`, has its columns (output channels) a plane apart.
    pub fn new(
        einsum: &EinSum,
        a_shape: &[usize],
        b: &Tensor,
        product_shape: &[usize],
        c_shape: &[usize],
        quantize: QuantizeI8,
        epilogue: Epilogue,
    ) -> Option<Self> {
        let layout = ProductLayout::of(einsum, a_shape, b.shape(), product_shape)?;
        let (k, n) = (layout.k, layout.n);
        if layout.batch.iter().any(|axis| axis.b != 0)
            || epilogue.rescale.len() != n.len
            || epilogue.bias.as_ref().is_some_and(|b| b.len() != n.len)
            || k.len >= 1 << 16
            || a_shape.iter().product::<usize>() == 0
            || c_shape.iter().product::<usize>() != product_shape.iter().product::<usize>()
        {
            return None;
        }
        let b_values = b.try_as_plain_ram().ok()?.as_slice::<i8>().ok()?;
        let weights = PackedWeights::new(b_values, k.len, n.len, k.b, n.b)?;
        Some(MatMulI8 {
            a_shape: a_shape.to_vec(),
            c_shape: c_shape.to_vec(),
            layout,
            quantize,
            weights: Arc::new(weights),
            epilogue,
            gelu: false,
        })
    }

    /// The same layer followed by exact GELU (the MLP's first layer); `None` if it has it.
    pub fn with_gelu(&self) -> Option<Self> {
        (!self.gelu).then(|| MatMulI8 { gelu: true, ..self.clone() })
    }

    fn rows(&self) -> usize {
        self.layout.batch_count() * self.layout.m.len
    }

    /// Whether each output row's columns are contiguous in `c`.
    fn columns_contiguous(&self) -> bool {
        self.layout.n.c == 1 || self.layout.n.len == 1
    }

    /// Fills `c` (`c_shape` values) from `a` (`a_shape` values; the caller checks both lengths).
    fn compute(&self, a: &[f32], c: &mut [f32]) -> TractResult<()> {
        let (k, n) = (self.layout.k, self.layout.n);
        let weights = &*self.weights;
        let kernel = Kernel::best();
        let rows_total = self.rows();
        let threads = pool_threads();
        let tile = Tile::new(rows_total, n.len, 4 * threads, threads);
        let row_bytes = weights.groups * GROUP;
        // Strided columns: the task's values go to `block` first, then out column by column.
        let contiguous = self.columns_contiguous();
        let scratch = || {
            (
                vec![0i8; tile.rows * row_bytes],
                vec![0f32; if k.a == 1 { 0 } else { k.len }],
                vec![0i32; tile.rows * tile.cols.next_multiple_of(LANES)],
                vec![0f32; if self.gelu || !contiguous { tile.rows * tile.cols } else { 0 }],
            )
        };
        // The GELU epilogue's erf kernel (tract's), looked up once for all tasks.
        let erf = self.gelu.then(|| Func::Erf.ew_f32()).transpose()?;
        let erf = erf.as_deref();
        let c_ptr = c.as_mut_ptr() as usize;
        let c_len = c.len() as isize;
        let work = rows_total * n.len * k.len;
        for_each_task(tile.count(), work, scratch, |(a_rows, gathered, sums, block), task| {
            let (first, count, col, width) = tile.task(task);
            // Tiles split columns in multiples of 16 (LANES), so a task starts on a panel.
            debug_assert_eq!(col % LANES, 0);
            for (r, dst) in a_rows.chunks_exact_mut(row_bytes).take(count).enumerate() {
                let (oa, _) = self.layout.row_offsets(first + r);
                let oa = oa as usize;
                let src = if k.a == 1 {
                    &a[oa..oa + k.len]
                } else {
                    for (j, g) in gathered.iter_mut().enumerate() {
                        *g = a[oa + j * k.a as usize];
                    }
                    &gathered[..]
                };
                self.quantize.quantize(src, &mut dst[..k.len]);
                // +128: u8 for vpdpbusd (see the module docs).
                dst[..k.len].iter_mut().for_each(|v| *v ^= i8::MIN);
            }
            let panels = width.div_ceil(LANES);
            // SAFETY: i8 and u8 have the same size and alignment; any byte is a valid u8.
            let a_u8 = unsafe { std::slice::from_raw_parts(a_rows.as_ptr() as *const u8, a_rows.len()) };
            let rows = ByteRows { bytes: a_u8, stride: row_bytes, count };
            kernel.products(rows, weights, col / LANES..col / LANES + panels, sums, false);
            let sums_width = panels * LANES;
            let (offsets, rescale) =
                (&weights.offset_sums[col..col + width], &self.epilogue.rescale[col..col + width]);
            // The row of `c` that output row `r` of the task goes to.
            let c_row = |r: usize| -> TractResult<&mut [f32]> {
                let (_, oc) = self.layout.row_offsets(first + r);
                // Columns are contiguous in `c` (`n.c == 1`, or one column: `new`).
                let oc = oc + col as isize;
                ensure!(oc >= 0 && oc + width as isize <= c_len, "MatMulI8: output row out of bounds");
                // SAFETY: the row's `width` values from `oc` are inside `c` (checked above);
                // tasks write disjoint rows and columns, and each row is taken once per task.
                Ok(unsafe { std::slice::from_raw_parts_mut((c_ptr as *mut f32).offset(oc), width) })
            };
            for r in 0..count {
                // With GELU, rows go to a block first: tract's erf kernel runs on many rows at once.
                let dst = if erf.is_some() || !contiguous {
                    &mut block[r * width..(r + 1) * width]
                } else {
                    c_row(r)?
                };
                let row = &sums[r * sums_width..r * sums_width + width];
                // tract's order: Cast (i32 -> f32), then Mul, then Add; no fused multiply-add.
                let scaled = row.iter().zip(offsets).zip(rescale).map(|((&s, &o), &k)| (s - o) as f32 * k);
                match &self.epilogue.bias {
                    Some(bias) => {
                        for ((d, v), &b) in dst.iter_mut().zip(scaled).zip(&bias[col..col + width]) {
                            *d = v + b;
                        }
                    }
                    None => dst.iter_mut().zip(scaled).for_each(|(d, v)| *d = v),
                }
            }
            if let Some(erf) = erf {
                // SAFETY: `block` holds `count` rows of `width` values, this task's own.
                unsafe { gelu_rows(erf, block.as_mut_ptr(), count, width, width as isize)? };
            }
            if contiguous && erf.is_some() {
                for r in 0..count {
                    c_row(r)?.copy_from_slice(&block[r * width..(r + 1) * width]);
                }
            } else if !contiguous {
                // Column by column: consecutive rows are usually next to each other in `c`.
                let row_starts = (0..count)
                    .map(|r| {
                        let oc = self.layout.row_offsets(first + r).1 + col as isize * n.c;
                        let last = oc + (width as isize - 1) * n.c;
                        ensure!(oc >= 0 && last < c_len, "MatMulI8: output row out of bounds");
                        Ok(oc)
                    })
                    .collect::<TractResult<Vec<isize>>>()?;
                for j in 0..width {
                    for (r, &oc) in row_starts.iter().enumerate() {
                        // SAFETY: inside `c` (checked above); tasks write disjoint rows and columns.
                        unsafe { *(c_ptr as *mut f32).offset(oc + j as isize * n.c) = block[r * width + j] };
                    }
                }
            }
            Ok(())
        })
    }
}

impl Op for MatMulI8 {
    fn name(&self) -> StaticName {
        "MatMulI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let (w, kernel) = (&self.weights, Kernel::best());
        let bias = if self.epilogue.bias.is_some() { " + bias" } else { "" };
        let bias = if self.gelu { format!("{bias}, GELU") } else { bias.to_string() };
        Ok(vec![format!(
            "{} rows x {} by {} x {} (int8, {kernel:?}), rescaled{bias}",
            self.rows(),
            w.k,
            w.k,
            w.n
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for MatMulI8 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let a = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let expected: usize = self.a_shape.iter().product();
        ensure!(
            a.len() == expected,
            "MatMulI8 planned for {:?} ({expected} values), got {:?}",
            self.a_shape,
            input.shape()
        );
        // SAFETY: `compute` writes every element: its tiles cover every row (batch entry and
        // `m`) and every column, and the output's axes are those (`ProductLayout::of`); on an
        // error the tensor is dropped unread.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.c_shape)? };
        self.compute(a, output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for MatMulI8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.c_shape)))
    }

    as_op!();
}

/// `y = conv(quantize(x), kernel) * rescale + bias`: an int8 convolution of an NCHW f32 input
/// (ONNX `QuantizeLinear` -> `ConvInteger` -> `Cast` -> `Mul` -> `Add`, one rescale and bias per
/// output channel), for any [`ConvGeometry`] (the FPN's 3x3 convolutions, the 4x4 stride-4
/// patch embedding, the 1x1 classifier).
///
/// tract runs these as Im2col (copying every input value once per kernel tap into its packed
/// format), an integer product, then Cast, Mul and Add passes: on the full SeMask-T's int8 form
/// ~450 of ~1,370 ms. Here the input is quantized once into a zero-padded NHWC copy (u8,
/// channels padded to a multiple of 4), so that the 4 channels a VNNI lane multiplies are 4
/// adjacent bytes, and each output row is the sum over kernel taps of one product each:
/// `[wo pixels x ci] by [ci x co]`, the pixels read straight from the copy at the tap's offset
/// (no im2col), the weights packed per tap at load time. Padding is the quantized zero.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvI8 {
    geometry: ConvGeometry,
    /// How the f32 input received is laid out; the geometry is NCHW's.
    layout: InputLayout,
    quantize: QuantizeI8,
    /// The kernel as one packed `ci x co` matrix per tap (`ty * kw + tx`).
    taps: Arc<Vec<PackedWeights>>,
    /// `128 * sum of every weight of each output channel`: what the u8 offset adds (all taps).
    offsets: Arc<[i32]>,
    epilogue: Epilogue,
}

// As for MatMulI8: the f32 constants come from the model's initialisers.
impl Eq for ConvI8 {}

/// The axis order of a convolution's f32 input, before quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputLayout {
    Nchw,
    /// Channels last: in SeMask's decoder, tract moves the backbone's NHWC outputs to NCHW after
    /// quantizing them; the padded copy is NHWC, so the move costs nothing here.
    Nhwc,
}

impl ConvI8 {
    /// `None` unless `conv` is a plain integer convolution (zero points 0, see
    /// [`super::tract_ops`]) of `input` by the constant int8 `kernel` that [`ConvGeometry`]
    /// describes, the input quantized with a zero point of 0 (so that zero padding is the
    /// quantized zero), with one rescale (and bias) per output channel.
    pub fn new(
        conv: &Conv,
        input: &[usize],
        layout: InputLayout,
        kernel: &Tensor,
        quantize: QuantizeI8,
        epilogue: Epilogue,
    ) -> Option<Self> {
        let geometry = ConvGeometry::of(conv, input, kernel.shape())?;
        let [co, ci, kh, kw] = geometry.kernel;
        let per_channel =
            epilogue.rescale.len() == co && epilogue.bias.as_ref().is_none_or(|b| b.len() == co);
        if !per_channel || quantize.zero_point() != 0 || ci * kh * kw >= 1 << 16 {
            return None;
        }
        let values = kernel.try_as_plain_ram().ok()?.as_slice::<i8>().ok()?;
        let taps = (0..kh * kw)
            .map(|tap| {
                PackedWeights::new(&values[tap..], ci, co, (kh * kw) as isize, (ci * kh * kw) as isize)
            })
            .collect::<Option<Vec<_>>>()?;
        let offsets = (0..co).map(|c| taps.iter().map(|t| t.offset_sums[c]).sum()).collect();
        Some(ConvI8 { geometry, layout, quantize, taps: Arc::new(taps), offsets, epilogue })
    }

    /// `[n, co, ho, wo]`.
    pub fn output_shape(&self) -> [usize; 4] {
        self.geometry.output_shape()
    }

    /// How many values the input has.
    pub fn input_len(&self) -> usize {
        self.geometry.input.iter().product()
    }

    /// Fills `out` (`[co, ho, wo]`) from one image `x` (`[ci, h, w]`).
    fn image(&self, x: &[f32], out: &mut [f32]) -> TractResult<()> {
        let ConvGeometry { input: [_, ci, h, w], kernel: [co, _, kh, kw], pad, stride: [sh, sw] } =
            self.geometry;
        let (hp, wp, ho, wo) = self.geometry.sizes();
        let channels = ci.next_multiple_of(GROUP);
        // The quantized, padded NHWC copy; padding (and padding channels) 128: the quantized zero.
        let mut padded = vec![128u8; hp * wp * channels];
        let padded_ptr = padded.as_mut_ptr() as usize;
        for_each_task(
            h,
            h * w * ci,
            || vec![0i8; w * ci],
            |row, y| {
                // SAFETY: input row `y` goes to padded row `y + pad[0]`, its own: tasks write
                // disjoint bytes, all inside `padded` (`hp = h + pad[0] + pad[1]`, `wp` likewise).
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        (padded_ptr as *mut u8).add((y + pad[0]) * wp * channels),
                        wp * channels,
                    )
                };
                let dst = &mut dst[pad[2] * channels..];
                match self.layout {
                    InputLayout::Nchw => {
                        let row = &mut row[..w];
                        for c in 0..ci {
                            self.quantize.quantize(&x[(c * h + y) * w..(c * h + y + 1) * w], row);
                            for (xx, &q) in row.iter().enumerate() {
                                dst[xx * channels + c] = (q ^ i8::MIN) as u8;
                            }
                        }
                    }
                    InputLayout::Nhwc => {
                        self.quantize.quantize(&x[y * w * ci..(y + 1) * w * ci], row);
                        for (pixel, values) in dst.chunks_exact_mut(channels).zip(row.chunks_exact(ci)) {
                            for (d, &q) in pixel.iter_mut().zip(values) {
                                *d = (q ^ i8::MIN) as u8;
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        let kernel = Kernel::best();
        let panels = co.div_ceil(LANES);
        let width = panels * LANES;
        let out_ptr = out.as_mut_ptr() as usize;
        let flat = ho * wo;
        for_each_task(
            ho,
            ho * wo * co * ci * kh * kw,
            || vec![0i32; wo * width],
            |sums, y| {
                for (tap, weights) in self.taps.iter().enumerate() {
                    let (dy, dx) = (tap / kw, tap % kw);
                    let start = ((y * sh + dy) * wp + dx) * channels;
                    let rows = ByteRows { bytes: &padded[start..], stride: sw * channels, count: wo };
                    kernel.products(rows, weights, 0..panels, sums, tap > 0);
                }
                for c in 0..co {
                    // SAFETY: output row `y` of channel `c`, inside `out` (`[co, ho, wo]`), this task's own.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(c * flat + y * wo), wo)
                    };
                    let (offset, rescale) = (self.offsets[c], self.epilogue.rescale[c]);
                    let sums = sums.iter().skip(c).step_by(width);
                    // tract's order: Cast (i32 -> f32), then Mul, then Add; no fused multiply-add.
                    let scaled = sums.map(|&s| (s - offset) as f32 * rescale);
                    match &self.epilogue.bias {
                        Some(bias) => dst.iter_mut().zip(scaled).for_each(|(d, v)| *d = v + bias[c]),
                        None => dst.iter_mut().zip(scaled).for_each(|(d, v)| *d = v),
                    }
                }
                Ok(())
            },
        )
    }
}

impl Op for ConvI8 {
    fn name(&self) -> StaticName {
        "ConvI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let ConvGeometry { input, kernel, pad, stride } = self.geometry;
        let bias = if self.epilogue.bias.is_some() { " + bias" } else { "" };
        Ok(vec![format!(
            "{input:?} ({:?} in) by {kernel:?}, pad {pad:?}, stride {stride:?} (int8, {:?}), rescaled{bias}",
            self.layout,
            Kernel::best()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for ConvI8 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.len() == self.input_len(),
            "ConvI8 planned for {:?} ({:?}), got {:?}",
            self.geometry.input,
            self.layout,
            input.shape()
        );
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let out_shape = self.geometry.output_shape();
        // SAFETY: `image` writes every element of each image's `[co, ho, wo]` (every output row
        // of every channel); on an error the tensor is dropped unread.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let [_, ci, h, w] = self.geometry.input;
            let per_image = out_shape[1..].iter().product::<usize>();
            for (x, out) in x.chunks_exact(ci * h * w).zip(out.chunks_exact_mut(per_image)) {
                self.image(x, out)?;
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for ConvI8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.geometry.output_shape())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    use tract_onnx::tract_core::ops::cast::cast;
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    use tract_onnx::tract_core::ops::math::{add, mul};
    use tract_onnx::tract_core::ops::quant::quantize_linear_i8;

    use super::*;

    /// Deterministic pseudo-random values (a hash of the index), uniform in `[0, 1)`.
    fn unit(i: usize, seed: usize) -> f32 {
        let mut z = (i as u64).wrapping_add((seed as u64) << 32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        ((z ^ (z >> 29)) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Every kernel the CPU runs against a plain triple loop: rows around the tiles, `k` around
    /// the groups of 4, one to three panels from a panel other than the first, writing and
    /// accumulating.
    #[test]
    fn kernels_sum_exactly() {
        let kernels: Vec<Kernel> = Kernel::available().collect();
        let cases =
            [(1, 1, 1), (3, 5, 17), (8, 4, 16), (13, 33, 40), (19, 97, 48), (9, 300, 33), (2, 301, 20)];
        for (case, (rows, k, n)) in cases.into_iter().enumerate() {
            // The last case is all extremes: 255 by -128, where 16-bit pair sums would saturate.
            let extreme = case == cases.len() - 1;
            let b: Vec<i8> =
                (0..k * n).map(|i| if extreme { -128 } else { (unit(i, 1) * 256.0 - 128.0) as i8 }).collect();
            let weights = PackedWeights::new(&b, k, n, n as isize, 1).unwrap();
            let stride = weights.groups * GROUP + 3; // rows apart by more than their length
            let a: Vec<u8> =
                (0..rows * stride).map(|i| if extreme { 255 } else { (unit(i, 2) * 256.0) as u8 }).collect();
            let total_panels = n.div_ceil(LANES);
            for first in 0..total_panels {
                let panels = total_panels - first;
                for (&kernel, accumulate) in kernels.iter().flat_map(|k| [(k, false), (k, true)]) {
                    let mut sums = vec![-7i32; rows * panels * LANES];
                    let a_rows = ByteRows { bytes: &a, stride, count: rows };
                    kernel.products(a_rows, &weights, first..first + panels, &mut sums, accumulate);
                    for r in 0..rows {
                        for c in 0..panels * LANES {
                            let col = first * LANES + c;
                            let start = if accumulate { -7 } else { 0 };
                            let expected: i32 = if col < n {
                                (0..k).map(|kk| a[r * stride + kk] as i32 * b[kk * n + col] as i32).sum()
                            } else {
                                0
                            } + start;
                            assert_eq!(
                                sums[r * panels * LANES + c],
                                expected,
                                "{kernel:?} {rows}x{k}x{n} row {r} col {col}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// How a test layer's activations reach the product.
    #[derive(Clone, Copy, Debug)]
    enum Form {
        /// `[rows, k]`, reshaped into this many windows (1: none).
        Windows(usize),
        /// `[k, rows]`: each row's `k` values are strided (the gathering path).
        KMajor,
        /// `[k, rows]` by `[n, k]` into `[n, rows]`: a 1x1 convolution (`NIHW,OI->NOHW`), whose
        /// output columns are strided.
        ChannelsFirst,
    }

    /// An int8 linear layer as tract reads ONNX's QOperator form: QuantizeLinear, a reshape into
    /// `windows` (if any), MatMulInteger, the reshape back, Cast, Mul by the rescale (one per
    /// column, or one in all), Add of the bias (if any).
    fn layer(
        rows: usize,
        k: usize,
        n: usize,
        form: Form,
        scalar_rescale: bool,
        bias: bool,
        gelu: bool,
    ) -> TractResult<TypedModel> {
        let mut model = TypedModel::default();
        let x_shape = match form {
            Form::Windows(_) => [rows, k],
            Form::KMajor | Form::ChannelsFirst => [k, rows],
        };
        let x = model.add_source("x", f32::fact(x_shape))?;
        // 1/scale chosen so that values beyond +-3 saturate.
        let q = model.wire_node("q", quantize_linear_i8(42.5, 0), &[x])?;
        let a = match form {
            Form::Windows(w) => {
                let split = AxisOp::Reshape(0, tvec![rows.to_dim()], tvec![w.to_dim(), (rows / w).to_dim()]);
                model.wire_node("windows", split, &q)?[0]
            }
            Form::KMajor | Form::ChannelsFirst => q[0],
        };
        let b: Vec<i8> = (0..k * n).map(|i| (unit(i, 3) * 255.0 - 127.0) as i8).collect();
        let b_shape = if let Form::ChannelsFirst = form { [n, k] } else { [k, n] };
        let b = model.add_const("b", tensor1(&b).into_shape(&b_shape)?)?;
        let mut inputs = tvec![a, b];
        for (name, v) in [
            ("bias", 0.0),
            ("a0", 0.0),
            ("a_scale", 1.0),
            ("b0", 0.0),
            ("b_scale", 1.0),
            ("c0", 0.0),
            ("c_scale", 1.0),
        ] {
            let konst = if v == 0.0 { tensor0(0i32) } else { tensor0(1f32) };
            inputs.push(model.add_const(name, konst)?);
        }
        let expr = match form {
            Form::Windows(_) => "wmk,kn,,,,,,,->wmn",
            Form::KMajor => "km,kn,,,,,,,->mn",
            Form::ChannelsFirst => "km,nk,,,,,,,->nm",
        };
        let einsum = EinSum {
            axes: expr.parse()?,
            operating_dt: i32::datum_type(),
            q_params: Some(i32::datum_type()),
        };
        let product = model.wire_node("product", einsum, &inputs)?;
        let product = if let Form::Windows(w) = form {
            let merge = AxisOp::Reshape(0, tvec![w.to_dim(), (rows / w).to_dim()], tvec![rows.to_dim()]);
            model.wire_node("merge", merge, &product)?
        } else {
            product
        };
        let float = model.wire_node("cast", cast(f32::datum_type()), &product)?;
        let rescale: Vec<f32> = (0..n).map(|i| 1e-3 * (0.5 + unit(i, 4))).collect();
        // One value per column: along the last axis, or the first for channels first.
        let column_shape = if let Form::ChannelsFirst = form { [n, 1] } else { [1, n] };
        let rescale = if scalar_rescale {
            tensor2(&[[rescale[0]]])
        } else {
            tensor1(&rescale).into_shape(&column_shape)?
        };
        let rescale = model.add_const("rescale", rescale)?;
        let mut out = model.wire_node("rescaled", mul(), &[float[0], rescale])?;
        if bias {
            let bias: Vec<f32> = (0..n).map(|i| unit(i, 5) - 0.5).collect();
            let bias = model.add_const("bias_values", tensor1(&bias).into_shape(&column_shape)?)?;
            out = model.wire_node("biased", add(), &[out[0], bias])?;
        }
        if gelu {
            out = model.wire_node("act", tract_onnx::tract_core::ops::nn::gelu_exact::gelu_exact(), &out)?;
        }
        model.select_output_outlets(&out)?;
        Ok(model)
    }

    /// The layer with `MatMulI8` swapped in gives tract's values to the bit: windows, odd `k` and
    /// `n`, more rows than one task, activations read with a stride (k-major), per-column and scalar rescale, with and without a bias and
    /// a GELU after it (taken in after tract optimises), the activations saturating and on
    /// rounding ties; one thread and three.
    #[test]
    fn int8_layers_are_tracts_to_the_bit() {
        let cases = [
            (1, 1, 1, Form::Windows(1), false, true, false),
            (7, 3, 5, Form::Windows(1), true, true, true),
            (98, 33, 17, Form::Windows(2), false, false, false),
            (490, 32, 96, Form::Windows(10), false, true, true),
            (600, 97, 40, Form::Windows(3), true, true, false),
            (300, 384, 33, Form::Windows(4), false, true, true),
            (5, 7, 3, Form::KMajor, false, true, false),
            (300, 45, 70, Form::KMajor, true, false, true),
            (600, 37, 19, Form::ChannelsFirst, false, true, false), // the decoder's classifier
            (9, 5, 40, Form::ChannelsFirst, true, false, true),
        ];
        let check = || {
            for (rows, k, n, form, scalar_rescale, bias, gelu) in cases {
                let model = layer(rows, k, n, form, scalar_rescale, bias, gelu).unwrap();
                let mut ours = model.clone();
                assert_eq!(super::super::tract_ops::accelerate(&mut ours).unwrap(), 1);
                let mut ours = ours.into_optimized().unwrap();
                super::super::tract_ops::accelerate_optimized(&mut ours).unwrap();
                let names: Vec<String> =
                    ours.eval_order().unwrap().iter().map(|&i| ours.node(i).op.name().to_string()).collect();
                let left = names.iter().any(|n| n == "Cast" || n.contains("Gelu"));
                assert!(names.contains(&"MatMulI8".to_string()) && !left, "{names:?}");
                let fused = ours
                    .nodes()
                    .iter()
                    .any(|n| n.op_is::<MatMulI8>() && n.op.info().unwrap()[0].contains("GELU"));
                assert_eq!(fused, gelu, "{names:?}");
                let mut x: Vec<f32> = (0..rows * k).map(|i| (unit(i, 6) - 0.5) * 8.0).collect();
                // Exact ties of the rounding (x / scale = j + 0.5), both signs.
                for (j, v) in x.iter_mut().take(8).enumerate() {
                    *v = (j as f32 - 3.5) / 42.5;
                }
                let shape = if let Form::Windows(_) = form { [rows, k] } else { [k, rows] };
                let input = tvec!(tensor1(&x).into_shape(&shape).unwrap().into_tvalue());
                let run = |m: TypedModel| m.into_runnable().unwrap().run(input.clone()).unwrap().remove(0);
                let (expected, got) = (run(model), run(ours));
                let values = |t: &TValue| t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
                let (expected, got) = (values(&expected), values(&got));
                assert_eq!(expected.len(), got.len());
                for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                    assert_eq!(e.to_bits(), g.to_bits(), "{rows}x{k}x{n} [{i}]: {g} vs tract's {e}");
                }
            }
        };
        check();
        multithread_tract_scope(Executor::multithread(3), check);
    }

    /// An int8 convolution as tract reads ONNX's QOperator form (QuantizeLinear, ConvInteger,
    /// Cast, Mul, Add) with `ConvI8` swapped in gives tract's values to the bit: 3x3 with
    /// padding, channels not a multiple of 4, more output channels than one register, two
    /// images, the 4x4 stride-4 patch embedding, a 1x1 classifier, strides with leftovers,
    /// asymmetric padding, per-channel and scalar rescale, with and without bias, the input
    /// NCHW or channels-last then moved; one thread and three.
    #[test]
    fn int8_convolutions_are_tracts_to_the_bit() {
        use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
        use tract_onnx::tract_core::ops::nn::DataFormat;
        #[allow(clippy::type_complexity)]
        let cases: [(
            usize,
            usize,
            usize,
            (usize, usize),
            (usize, usize),
            [usize; 4],
            [usize; 2],
            bool,
            bool,
        ); 8] = [
            (1, 3, 5, (7, 9), (3, 3), [1, 1, 1, 1], [1, 1], false, true),
            (2, 17, 33, (13, 21), (3, 3), [1, 1, 1, 1], [1, 1], false, true),
            (1, 64, 40, (30, 70), (3, 3), [1, 1, 1, 1], [1, 1], false, false),
            (1, 3, 32, (64, 128), (4, 4), [0, 0, 0, 0], [4, 4], false, true),
            (1, 32, 19, (16, 32), (1, 1), [0, 0, 0, 0], [1, 1], false, true),
            (2, 5, 9, (17, 23), (3, 3), [1, 1, 1, 1], [2, 2], true, true),
            (1, 4, 6, (11, 14), (3, 2), [0, 1, 2, 0], [3, 2], false, true),
            (1, 8, 4, (9, 6), (5, 3), [2, 0, 1, 1], [1, 1], true, false),
        ];
        let check = || {
            for ((n, ci, co, (h, w), (kh, kw), pad, stride, scalar_rescale, bias), nhwc) in
                cases.into_iter().flat_map(|case| [(case, false), (case, true)])
            {
                let mut model = TypedModel::default();
                let x_shape = if nhwc { [n, h, w, ci] } else { [n, ci, h, w] };
                let x = model.add_source("x", f32::fact(x_shape)).unwrap();
                let mut q = model.wire_node("q", quantize_linear_i8(42.5, 0), &[x]).unwrap();
                if nhwc {
                    // As tract leaves the decoder's inputs: quantized channels-last, then moved.
                    q = model.wire_node("nchw", AxisOp::Move(3, 1), &q).unwrap();
                }
                let k: Vec<i8> = (0..co * ci * kh * kw).map(|i| (unit(i, 7) * 255.0 - 127.0) as i8).collect();
                let k = model.add_const("k", tensor1(&k).into_shape(&[co, ci, kh, kw]).unwrap()).unwrap();
                let mut inputs = tvec![q[0], k];
                for (name, v) in [
                    ("bias", 0),
                    ("a0", 0),
                    ("a_scale", 1),
                    ("b0", 0),
                    ("b_scale", 1),
                    ("c0", 0),
                    ("c_scale", 1),
                ] {
                    let konst = if v == 0 { tensor0(0i32) } else { tensor0(1f32) };
                    inputs.push(model.add_const(name, konst).unwrap());
                }
                let conv = Conv {
                    pool_spec: PoolSpec {
                        data_format: DataFormat::NCHW,
                        kernel_shape: tvec![kh, kw],
                        padding: PaddingSpec::Explicit(tvec![pad[0], pad[2]], tvec![pad[1], pad[3]]),
                        dilations: None,
                        strides: Some(tvec![stride[0], stride[1]]),
                        input_channels: ci,
                        output_channels: co,
                    },
                    kernel_fmt: KernelFormat::OIHW,
                    group: 1,
                    q_params: Some(i32::datum_type()),
                };
                let y = model.wire_node("conv", conv, &inputs).unwrap();
                let y = model.wire_node("cast", cast(f32::datum_type()), &y).unwrap();
                let rescale: Vec<f32> = (0..co).map(|i| 1e-3 * (0.5 + unit(i, 8))).collect();
                let rescale = if scalar_rescale { vec![rescale[0]] } else { rescale };
                let len = rescale.len();
                let rescale = model
                    .add_const("rescale", tensor1(&rescale).into_shape(&[1, len, 1, 1]).unwrap())
                    .unwrap();
                let mut y = model.wire_node("rescaled", mul(), &[y[0], rescale]).unwrap();
                if bias {
                    let b: Vec<f32> = (0..co).map(|i| unit(i, 9) - 0.5).collect();
                    let b = model
                        .add_const("bias_values", tensor1(&b).into_shape(&[1, co, 1, 1]).unwrap())
                        .unwrap();
                    y = model.wire_node("biased", add(), &[y[0], b]).unwrap();
                }
                model.select_output_outlets(&y).unwrap();
                let mut ours = model.clone();
                assert_eq!(super::super::tract_ops::accelerate(&mut ours).unwrap(), 1);
                let names: Vec<String> =
                    ours.eval_order().unwrap().iter().map(|&i| ours.node(i).op.name().to_string()).collect();
                assert!(
                    names.contains(&"ConvI8".to_string()) && !names.iter().any(|n| n == "Cast"),
                    "{names:?}"
                );
                let x: Vec<f32> = (0..n * ci * h * w).map(|i| (unit(i, 10) - 0.5) * 8.0).collect();
                let input = tvec!(tensor1(&x).into_shape(&x_shape).unwrap().into_tvalue());
                let run = |m: TypedModel| m.into_runnable().unwrap().run(input.clone()).unwrap().remove(0);
                let (expected, got) = (run(model), run(ours));
                assert_eq!(expected.shape(), got.shape());
                let values = |t: &TValue| t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
                for (i, (e, g)) in values(&expected).iter().zip(&values(&got)).enumerate() {
                    assert_eq!(
                        e.to_bits(),
                        g.to_bits(),
                        "{ci}->{co} {h}x{w} k{kh}x{kw} {pad:?} [{i}]: {g} vs tract's {e}"
                    );
                }
            }
        };
        check();
        multithread_tract_scope(Executor::multithread(3), check);
    }
}
