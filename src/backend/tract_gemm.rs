//! The f32 matrix products of the network, computed by the `gemm` crate instead of tract's
//! `OptMatMul`, swapped in by [`super::tract_ops::accelerate`] before tract optimises the model.
//!
//! Why: on the full SeMask-T at 512x1024 tract's matrix products (with their packing) took 70 % of
//! the network time and more than onnxruntime's whole network (`cargo bench --bench network --
//! --profile`, docs/performance.md). SeMask's products are tall and thin (the stage-1 qkv
//! projection is 32768x96 by 96x288) and tract threads them by splitting the `n` panels of one
//! product, of which such a product has few. Here the output is cut into tiles of up to 256
//! rows (of one batch entry, see [`Tile`]), spread over tract's threads, each computed by a
//! single-threaded `gemm` call (the crate faer and candle
//! use: packed micro-kernels for AVX-512/AVX2/NEON, scalar elsewhere). A bias that follows the
//! product is written into the task's rows before the product accumulates onto them, so the
//! separate pass over the output that tract's optimiser would otherwise fuse is not lost.
//!
//! [`MatMulF32::from_einsum`] takes any two-input f32 `EinSum` whose axes are each a batch,
//! `m`, `n` or `k` axis of the product (what tract makes of ONNX `MatMul` / `Gemm`, including
//! transposes folded into the axes and broadcast batch axes) and works on strides, so a
//! transposed operand costs no copy, nor does an operand that is a `Slice` of another tensor
//! ([`MatMulF32::reading_slice`], applied after tract optimises).

use tract_linalg::element_wise::ElementWise;
use tract_linalg::routines::Func;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// One axis of the product (after merging axes that are contiguous in every operand): its
/// length and its stride, in elements, in each operand (0 where the axis is absent or
/// broadcast).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) struct ProductAxis {
    pub len: usize,
    pub a: isize,
    pub b: isize,
    pub c: isize,
}

impl ProductAxis {
    const UNIT: ProductAxis = ProductAxis { len: 1, a: 0, b: 0, c: 0 };

    /// `outer` followed by `self` as one axis, when `outer` steps over exactly `self` in every
    /// operand.
    fn merged_under(self, outer: ProductAxis) -> Option<ProductAxis> {
        let len = self.len as isize;
        (outer.a == self.a * len && outer.b == self.b * len && outer.c == self.c * len)
            .then_some(ProductAxis { len: self.len * outer.len, ..self })
    }
}

/// Merges axes contiguous in every operand (largest output stride first) and returns them with
/// the longest first.
fn merge(mut axes: Vec<ProductAxis>, key: impl Fn(&ProductAxis) -> isize) -> Vec<ProductAxis> {
    axes.sort_by_key(|x| std::cmp::Reverse(key(x)));
    let mut merged: Vec<ProductAxis> = Vec::new();
    for axis in axes {
        match merged.last().and_then(|&outer| axis.merged_under(outer)) {
            Some(both) => *merged.last_mut().expect("checked") = both,
            None => merged.push(axis),
        }
    }
    merged.sort_by_key(|x| std::cmp::Reverse(x.len));
    merged
}

/// How an `EinSum`'s axes make a matrix product `c[batch, m, n] = sum over k of a[batch, m, k] *
/// b[batch, k, n]`, as strides in the operands: what [`MatMulF32`] and the int8 products
/// ([`super::tract_i8::MatMulI8`]) compute.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct ProductLayout {
    /// Outermost first; their product is the number of independent products.
    pub batch: Vec<ProductAxis>,
    pub m: ProductAxis,
    pub n: ProductAxis,
    pub k: ProductAxis,
}

impl ProductLayout {
    /// The layout of a two-input, one-output `EinSum` on contiguous operands of the given
    /// shapes, when each of its axes is a batch, `m`, `n` or `k` axis (no diagonal, no axis
    /// summed over one operand only, one `k` axis after merging); `None` otherwise.
    pub fn of(einsum: &EinSum, a_shape: &[usize], b_shape: &[usize], c_shape: &[usize]) -> Option<Self> {
        if einsum.axes.input_count() < 2 || einsum.axes.output_count() != 1 {
            return None;
        }
        let strides = |shape: &[usize]| -> Vec<isize> {
            let mut strides = vec![0isize; shape.len()];
            let mut acc = 1isize;
            for i in (0..shape.len()).rev() {
                strides[i] = acc;
                acc *= shape[i] as isize;
            }
            strides
        };
        if [a_shape, b_shape, c_shape].iter().any(|s| s.contains(&0)) {
            return None;
        }
        let (sa, sb, sc) = (strides(a_shape), strides(b_shape), strides(c_shape));
        let (mut batch, mut m, mut n, mut k) = (vec![], vec![], vec![], vec![]);
        for axis in einsum.axes.iter_all_axes() {
            let (ia, ib, ic) = (&axis.inputs[0], &axis.inputs[1], &axis.outputs[0]);
            if ia.len() > 1 || ib.len() > 1 || ic.len() > 1 || axis.inputs[2..].iter().any(|i| !i.is_empty())
            {
                return None; // a diagonal, or a third operand with axes: not a matrix product
            }
            let len = [
                ic.first().map(|&p| c_shape[p]),
                ia.first().map(|&p| a_shape[p]),
                ib.first().map(|&p| b_shape[p]),
            ]
            .into_iter()
            .flatten()
            .max()?;
            // An operand's stride on this axis: 0 when absent or broadcast (length 1).
            let stride = |pos: Option<&usize>, shape: &[usize], strides: &[isize]| -> Option<isize> {
                match pos {
                    None => Some(0),
                    Some(&p) if shape[p] == len => Some(strides[p]),
                    Some(&p) if shape[p] == 1 => Some(0),
                    Some(_) => None,
                }
            };
            let axis_strides = ProductAxis {
                len,
                a: stride(ia.first(), a_shape, &sa)?,
                b: stride(ib.first(), b_shape, &sb)?,
                c: if ic.is_empty() { 0 } else { stride(ic.first(), c_shape, &sc)? },
            };
            if len == 1 {
                continue;
            }
            match (ia.is_empty(), ib.is_empty(), ic.is_empty()) {
                (false, false, false) => batch.push(axis_strides),
                (false, true, false) => m.push(axis_strides),
                (true, false, false) => n.push(axis_strides),
                (false, false, true) => k.push(axis_strides),
                _ => return None, // summed over one operand only
            }
        }
        let mut m = merge(m, |x| x.c).into_iter();
        let mut n = merge(n, |x| x.c).into_iter();
        let k = merge(k, |x| x.a);
        if k.len() > 1 {
            return None;
        }
        // The longest m and n axes make the matrices; any other is one more batch axis.
        let (m_axis, n_axis) = (m.next().unwrap_or(ProductAxis::UNIT), n.next().unwrap_or(ProductAxis::UNIT));
        batch.extend(m.chain(n));
        let batch = merge(batch, |x| x.c);
        Some(ProductLayout {
            batch,
            m: m_axis,
            n: n_axis,
            k: k.first().copied().unwrap_or(ProductAxis::UNIT),
        })
    }

    pub fn batch_count(&self) -> usize {
        self.batch.iter().map(|x| x.len).product()
    }

    /// Offsets in `a` and `c` of row `row` of all batch entries laid end to end.
    pub fn row_offsets(&self, row: usize) -> (isize, isize) {
        let [oa, _, oc] = self.batch_offsets(row / self.m.len);
        let i = (row % self.m.len) as isize;
        (oa + i * self.m.a, oc + i * self.m.c)
    }

    /// Offsets in `a`, `b` and `c` of batch entry `index`.
    pub fn batch_offsets(&self, mut index: usize) -> [isize; 3] {
        let mut offsets = [0isize; 3];
        for axis in self.batch.iter().rev() {
            let i = (index % axis.len) as isize;
            index /= axis.len;
            offsets[0] += i * axis.a;
            offsets[1] += i * axis.b;
            offsets[2] += i * axis.c;
        }
        offsets
    }
}

/// `c[batch, m, n] = sum over k of a[batch, m, k] * b[batch, k, n] (+ bias[n])` on f32 tensors of
/// static shape, any layout of the axes (strides).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MatMulF32 {
    /// Shapes of the tensors received as `a` and `b`: the operands themselves, or tensors that
    /// they were sliced from ([`Self::reading_slice`]).
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    c_shape: Vec<usize>,
    /// Where operands `a` and `b` start in the tensors received (elements); the strides below
    /// are the received tensors'.
    offsets: [usize; 2],
    layout: ProductLayout,
    /// Whether a third input, `n` values, is added to every row of the output.
    bias: bool,
    /// Whether exact GELU (`x/2 (1 + erf(x/sqrt 2))`, tract's `GeluExact`) is applied to the
    /// output, after the bias, while each task's rows are still in cache ([`Self::with_gelu`]).
    gelu: bool,
}

impl MatMulF32 {
    /// The product an `EinSum` computes, when it is a plain f32 matrix product of two inputs of
    /// the given shapes into `c_shape` (see the module docs); `None` otherwise, and tract keeps
    /// its own operator.
    pub fn from_einsum(
        einsum: &EinSum,
        a_shape: &[usize],
        b_shape: &[usize],
        c_shape: &[usize],
    ) -> Option<Self> {
        if einsum.q_params.is_some()
            || einsum.operating_dt != f32::datum_type()
            || einsum.axes.input_count() != 2
        {
            return None;
        }
        let layout = ProductLayout::of(einsum, a_shape, b_shape, c_shape)?;
        Some(MatMulF32 {
            a_shape: a_shape.to_vec(),
            b_shape: b_shape.to_vec(),
            c_shape: c_shape.to_vec(),
            offsets: [0, 0],
            layout,
            bias: false,
            gelu: false,
        })
    }

    /// The same product reading operand `operand` (0: `a`, 1: `b`) in place, from the tensor of
    /// shape `whole` that a `Slice` along `axis` from `start` cut it out of, so that the slice's
    /// copy is never made. The q, k and v of every attention block are such slices of the qkv
    /// projection's output (36 of the full model's 57 ms of `Slice` per frame on two threads).
    /// `None` when the slice is not one along `axis` of `whole` into the operand's current
    /// tensor, or when one of the product's (merged) axes steps across the sliced axis: that
    /// walk is not one stride in `whole`.
    pub fn reading_slice(&self, operand: usize, whole: &[usize], axis: usize, start: usize) -> Option<Self> {
        let part = [&self.a_shape, &self.b_shape].get(operand)?.as_slice();
        let fits = whole.len() == part.len()
            && axis < part.len()
            && whole
                .iter()
                .zip(part)
                .enumerate()
                .all(|(i, (&w, &p))| if i == axis { start + p <= w } else { w == p });
        if !fits || part[axis] == 0 {
            return None;
        }
        // Strides in `part` of the sliced axis (`inner`) and of the axis outside it (`outer`);
        // strides at or beyond `outer` grow by `whole[axis] / part[axis]`.
        let inner = part[axis + 1..].iter().product::<usize>() as isize;
        let outer = inner * part[axis] as isize;
        let widen = |stride: isize, len: usize| -> Option<isize> {
            if stride >= outer {
                Some(stride / part[axis] as isize * whole[axis] as isize)
            } else if stride * len as isize <= outer {
                Some(stride)
            } else {
                None
            }
        };
        let mut op = self.clone();
        for axis in op.layout.batch.iter_mut().chain([&mut op.layout.m, &mut op.layout.n, &mut op.layout.k]) {
            let stride = if operand == 0 { &mut axis.a } else { &mut axis.b };
            *stride = widen(*stride, axis.len)?;
        }
        let old = self.offsets[operand] as isize;
        let (o, i) = (old / outer, old % outer);
        op.offsets[operand] =
            (o * whole[axis] as isize * inner + i + start as isize * inner).try_into().ok()?;
        if operand == 0 {
            op.a_shape = whole.to_vec();
        } else {
            op.b_shape = whole.to_vec();
        }
        Some(op)
    }

    /// The same product with tract's exact GELU applied to its output, when the output's rows
    /// are contiguous. The MLP's first layer: its GELU was one more pass over the largest
    /// activations of each stage (27-30 ms per frame on the full model, two threads).
    pub fn with_gelu(&self) -> Option<Self> {
        (!self.gelu && (self.layout.n.c == 1 || self.layout.n.len == 1))
            .then(|| MatMulF32 { gelu: true, ..self.clone() })
    }

    /// The same product followed by the addition of `n` values to every row, when a bias of
    /// `bias_shape` broadcasts that way onto the output (its only non-unit axis is the output's
    /// `n` axis, which is contiguous).
    pub fn with_bias(&self, bias_shape: &[usize]) -> Option<Self> {
        let rank = self.c_shape.len();
        if self.bias || bias_shape.len() > rank || (self.layout.n.c != 1 && self.layout.n.len != 1) {
            return None;
        }
        let padded: Vec<usize> =
            std::iter::repeat_n(1, rank - bias_shape.len()).chain(bias_shape.iter().copied()).collect();
        let only_last = padded[..rank - 1].iter().all(|&d| d == 1) && padded[rank - 1] == self.layout.n.len;
        (only_last && self.c_shape[rank - 1] == self.layout.n.len)
            .then(|| MatMulF32 { bias: true, ..self.clone() })
    }

    /// How `rows` rows of `n` columns are cut into tasks, `tasks_wanted` of them if the sizes
    /// allow (see [`Tile`]).
    fn tile(&self, rows: usize, tasks_wanted: usize, threads: usize) -> Tile {
        Tile::new(rows, self.layout.n.len, tasks_wanted, threads)
    }

    /// Whether the rows of all batch entries are gathered into larger products: `b` is the same
    /// for every entry (a linear layer whose rows the window partition split into many short
    /// products: 931 x 37 rows for the full model's stage-1 qkv projection, where each `gemm`
    /// call cost more than its rows, 30-60 GFLOP/s instead of 130) and entries are short.
    fn gathers_rows(&self) -> bool {
        self.layout.batch_count() > 1
            && self.layout.m.len < 128
            && self.layout.batch.iter().all(|axis| axis.b == 0)
    }

    /// [`Self::compute`] for [`Self::gathers_rows`]: each task copies its rows of `a` into one
    /// contiguous block, computes them in one `gemm` call into a contiguous block, and copies
    /// that out to `c` (a copy of `k + n` values per row, against `2 k n` operations).
    ///
    /// # Safety
    ///
    /// As for [`Self::compute`].
    #[allow(clippy::too_many_arguments)] // compute's operands, plus what it has worked out
    unsafe fn compute_gathered(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        c: &mut [f32],
        threads: usize,
        erf: Option<&dyn ElementWise<f32>>,
    ) -> TractResult<()> {
        let (n, k) = (self.layout.n, self.layout.k);
        let rows_total = self.layout.batch_count() * self.layout.m.len;
        let tile = self.tile(rows_total, 4 * threads, threads);
        let (a_ptr, b_ptr, c_ptr) = (a.as_ptr() as usize, b.as_ptr() as usize, c.as_mut_ptr() as usize);
        let work = rows_total * n.len * k.len;
        let scratch = || (vec![0f32; tile.rows * k.len], vec![0f32; tile.rows * tile.cols]);
        for_each_task(tile.count(), work, scratch, |(a_rows, c_rows), task| {
            let (first, count, col, width) = tile.task(task);
            let b_ptr = b_ptr as *const f32;
            // SAFETY: row offsets and strides come from the operands' shapes (checked by the
            // caller), so every read and write is inside `a` and `c`; tasks write disjoint rows.
            unsafe {
                for r in 0..count {
                    let (oa, _) = self.layout.row_offsets(first + r);
                    let src = (a_ptr as *const f32).offset(oa);
                    for (j, d) in a_rows[r * k.len..(r + 1) * k.len].iter_mut().enumerate() {
                        *d = *src.offset(j as isize * k.a);
                    }
                    if let Some(bias) = bias {
                        c_rows[r * width..(r + 1) * width].copy_from_slice(&bias[col..col + width]);
                    }
                }
                gemm_call(
                    count,
                    width,
                    k.len,
                    c_rows.as_mut_ptr(),
                    1,
                    width as isize,
                    bias.is_some(),
                    a_rows.as_ptr(),
                    1,
                    k.len as isize,
                    b_ptr.offset(col as isize * n.b),
                    n.b,
                    k.b,
                );
                if let Some(erf) = erf {
                    gelu_rows(erf, c_rows.as_mut_ptr(), count, width, width as isize)?;
                }
                for r in 0..count {
                    let (_, oc) = self.layout.row_offsets(first + r);
                    let dst = (c_ptr as *mut f32).offset(oc + col as isize * n.c);
                    for (j, &v) in c_rows[r * width..(r + 1) * width].iter().enumerate() {
                        *dst.offset(j as isize * n.c) = v;
                    }
                }
            }
            Ok(())
        })
    }

    /// `c` (allocated, `c_shape`, not initialised) from `a`, `b` and the optional bias. Every
    /// element of `c` is written: each of its axes is a batch, `m` or `n` axis (`from_einsum`)
    /// and the tasks cover every batch entry and every row, `gemm` every column of a row.
    ///
    /// # Safety
    ///
    /// `a` and `b` are the received tensors (of `a_shape` and `b_shape`) from their operand's
    /// offset on, `c` has `c_shape` elements (the caller checks),
    /// and `bias`, when the op has one, has `n.len`.
    unsafe fn compute(&self, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32]) -> TractResult<()> {
        let threads = pool_threads();
        // The GELU epilogue's erf kernel (tract's), looked up once for all tasks.
        let erf = self.gelu.then(|| Func::Erf.ew_f32()).transpose()?;
        let erf = erf.as_deref();
        if self.gathers_rows() {
            // SAFETY: as for this function.
            return unsafe { self.compute_gathered(a, b, bias, c, threads, erf) };
        }
        let batches = self.layout.batch_count().max(1);
        let tasks_wanted = (4 * threads).div_ceil(batches);
        // Many batch entries (attention's window-by-head products) balance by their number;
        // the row blocks of a few are made a multiple of the threads.
        let tile =
            self.tile(self.layout.m.len, tasks_wanted, if batches >= 4 * threads { 1 } else { threads });
        let tasks = self.layout.batch_count() * tile.count();
        let (a_ptr, b_ptr, c_ptr) = (a.as_ptr() as usize, b.as_ptr() as usize, c.as_mut_ptr() as usize);
        let (m, n, k) = (self.layout.m, self.layout.n, self.layout.k);
        let run_task = |task: usize| -> TractResult<()> {
            let (batch, (first, rows, col, width)) = (task / tile.count(), tile.task(task % tile.count()));
            let [oa, ob, oc] = self.layout.batch_offsets(batch);
            let oa = oa + first as isize * m.a;
            let ob = ob + col as isize * n.b;
            let oc = oc + first as isize * m.c + col as isize * n.c;
            // SAFETY: the offsets stay inside the operands (strides and lengths come from their
            // shapes, checked by the caller); tasks write disjoint rows of `c`.
            unsafe {
                let dst = (c_ptr as *mut f32).offset(oc);
                if let Some(bias) = bias {
                    // `n.c == 1` or `n.len == 1` (with_bias): each row of `n` values is contiguous.
                    for r in 0..rows {
                        std::ptr::copy_nonoverlapping(
                            bias.as_ptr().add(col),
                            dst.offset(r as isize * m.c),
                            width,
                        );
                    }
                }
                gemm_call(
                    rows,
                    width,
                    k.len,
                    dst,
                    n.c,
                    m.c,
                    bias.is_some(),
                    (a_ptr as *const f32).offset(oa),
                    k.a,
                    m.a,
                    (b_ptr as *const f32).offset(ob),
                    n.b,
                    k.b,
                );
                if let Some(erf) = erf {
                    // `n.c == 1` or `n.len == 1` (with_gelu): each row's `width` values are contiguous.
                    gelu_rows(erf, dst, rows, width, m.c)?;
                }
            }
            Ok(())
        };
        let work = self.layout.batch_count() * m.len * n.len * k.len;
        for_each_task(tasks, work, || (), |_, t| run_task(t))
    }
}

/// Tasks of a product with many rows: blocks of `rows` rows by `cols` columns, row blocks
/// outermost. Each `gemm` call packs its block of the right operand (`k x cols`) before using
/// it, so a task must have enough rows to pay for that: with the earlier ~64 KiB of output per
/// task, stage 3's `512 x 768 x 3072` products ran 16 rows per call at 27-35 GFLOP/s on one
/// core, against ~90 in 256-row calls. Rows are capped at [`Tile::ROWS`] (balanced between
/// blocks); columns are split only when there are fewer row blocks than the threads want.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tile {
    rows_total: usize,
    cols_total: usize,
    /// Rows and columns of one task at most.
    pub rows: usize,
    pub cols: usize,
}

impl Tile {
    /// Rows of one task at most: a packed `k x cols` block is reused by this many rows.
    const ROWS: usize = 256;
    /// Columns of one task at least, when columns are split (gemm's kernels are 16 wide).
    const MIN_COLS: usize = 64;

    /// Tiles for `threads` threads: the row blocks are a multiple of `threads` where there are
    /// enough rows, so that equal blocks end together (10 blocks of 245 rows on two threads
    /// kept one thread busy for 6 and the other for 4 once tract grouped them; 12 of 205 rows
    /// split 6 and 6).
    pub fn new(rows_total: usize, cols_total: usize, tasks_wanted: usize, threads: usize) -> Tile {
        let row_blocks =
            rows_total.div_ceil(Self::ROWS).next_multiple_of(threads.max(1)).clamp(1, rows_total.max(1));
        let rows = rows_total.div_ceil(row_blocks).max(1);
        let col_blocks = tasks_wanted.div_ceil(row_blocks).min(cols_total / Self::MIN_COLS).max(1);
        // Split columns in multiples of 16 (gemm's kernel width), rounded down so that there are
        // at least `col_blocks` of them; `col_blocks > 1` leaves at least MIN_COLS per block.
        let cols = if col_blocks == 1 { cols_total.max(1) } else { cols_total / col_blocks / 16 * 16 };
        Tile { rows_total, cols_total, rows, cols }
    }

    pub fn count(&self) -> usize {
        self.rows_total.div_ceil(self.rows) * self.cols_total.div_ceil(self.cols)
    }

    /// Task `index`'s first row, row count, first column and column count.
    pub fn task(&self, index: usize) -> (usize, usize, usize, usize) {
        let col_blocks = self.cols_total.div_ceil(self.cols);
        let (first, col) = (index / col_blocks * self.rows, index % col_blocks * self.cols);
        (first, self.rows.min(self.rows_total - first), col, self.cols.min(self.cols_total - col))
    }
}

/// One single-threaded `gemm` call: `dst = lhs * rhs`, or `dst += lhs * rhs` when
/// `accumulate` (`m x k` by `k x n`; strides in elements, `cs` between columns, `rs` between
/// rows, as `gemm` takes them). The tasks around it do the threading.
///
/// # Safety
///
/// The three operands, read or written at the given strides, lie inside their allocations, and
/// `dst` is not read or written by another thread meanwhile.
#[allow(clippy::too_many_arguments)] // gemm's own signature, less its constant arguments
unsafe fn gemm_call(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    accumulate: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    // SAFETY: the caller's contract; alpha 1 (kept when accumulating), beta 1, no conjugation.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// How many threads tract's executor runs operators on (1 without a pool).
pub(super) fn pool_threads() -> usize {
    match tract_linalg::multithread::current_tract_executor() {
        tract_linalg::multithread::Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

/// Runs `task(scratch, index)` for every index of `0..tasks`, spread over tract's threads;
/// `work` (multiply-adds in all) feeds tract's gate for threading at all; `scratch` is made
/// once per group of tasks.
///
/// The tasks are cut into at most `4 * threads` groups whose sizes differ by at most one, each
/// one of tract's chunks. Handing tract the tasks themselves let it group them by
/// `ceil(tasks / (4 * threads))`: 10 equal tasks became 5 chunks of 2, 3 on one thread and 2 on
/// the other, so that product ran 1.67x faster on two threads at best (1.69-1.76x measured on
/// the full model's `2450 x 384 x 384` and `245 x (10x384 by 384x1152)` products).
pub(super) fn for_each_task<S>(
    tasks: usize,
    work: usize,
    new_scratch: impl Fn() -> S + Sync + Send,
    task: impl Fn(&mut S, usize) -> TractResult<()> + Sync + Send,
) -> TractResult<()> {
    let mut groups = task_groups(tasks, 4 * pool_threads());
    tract_linalg::multithread::par_chunks_mut(&mut groups, 1, work, |_, groups| {
        let mut scratch = new_scratch();
        groups.iter().flat_map(|g| g.clone()).try_for_each(|t| task(&mut scratch, t))
    })
}

/// `0..tasks` cut into `groups_wanted` contiguous ranges (fewer if there are fewer tasks) whose
/// lengths differ by at most one.
fn task_groups(tasks: usize, groups_wanted: usize) -> Vec<std::ops::Range<usize>> {
    let groups = groups_wanted.clamp(1, tasks.max(1));
    (0..groups).map(|g| g * tasks / groups..(g + 1) * tasks / groups).collect()
}

/// tract's exact GELU (`GeluExact`: the same erf kernel, the same formula, so the same values)
/// applied in place to `rows` rows of `width` contiguous values, `stride` apart from `first`.
/// The erf kernel runs on up to 1,024 values gathered across rows: it costs about a microsecond
/// per call, so one call per row of a 6272x128 output took longer than the whole product.
///
/// # Safety
///
/// The rows lie inside one allocation, and nothing else reads or writes them meanwhile.
pub(super) unsafe fn gelu_rows(
    erf: &dyn ElementWise<f32>,
    first: *mut f32,
    rows: usize,
    width: usize,
    stride: isize,
) -> TractResult<()> {
    let scale = 2f32.sqrt().recip(); // as tract computes it
    const CHUNK: usize = 1024;
    let mut scaled = [0f32; CHUNK];
    // Calls `f(values of a piece of a row, offset in scaled)` for the pieces of rows that fill
    // one chunk of `scaled` from row `row`, column `col`; returns where the next chunk starts
    // and how much of `scaled` this one fills. Walked twice per chunk: to read, then to write.
    let chunk = |(row, col): (usize, usize), f: &mut dyn FnMut(&mut [f32], usize)| {
        let (mut row, mut col, mut filled) = (row, col, 0);
        while row < rows && filled < CHUNK {
            let len = (width - col).min(CHUNK - filled);
            // SAFETY: `row < rows`, `col + len <= width`: inside row `row` (the caller's contract).
            f(
                unsafe { std::slice::from_raw_parts_mut(first.offset(row as isize * stride).add(col), len) },
                filled,
            );
            filled += len;
            col += len;
            if col == width {
                (row, col) = (row + 1, 0);
            }
        }
        ((row, col), filled)
    };
    let mut at = (0, 0);
    while at.0 < rows {
        let (next, filled) = chunk(at, &mut |values, offset| {
            scaled[offset..offset + values.len()]
                .iter_mut()
                .zip(values.iter())
                .for_each(|(s, x)| *s = *x * scale);
        });
        erf.run(&mut scaled[..filled])?;
        chunk(at, &mut |values, offset| {
            values.iter_mut().zip(&scaled[offset..]).for_each(|(x, e)| *x = (*x * 0.5) * (*e + 1.0));
        });
        at = next;
    }
    Ok(())
}

/// Output columns per task of a convolution with `co` output channels over `flat` columns: a
/// `co x cols` block of about 128 KiB, so that it stays in cache while it accumulates.
fn columns_per_task(co: usize, flat: usize) -> usize {
    (32768 / co).clamp(64, 1024).min(flat)
}

impl Op for MatMulF32 {
    fn name(&self) -> StaticName {
        "MatMulF32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let bias = if self.bias { " + bias" } else { "" };
        let gelu = if self.gelu { ", GELU" } else { "" };
        Ok(vec![format!(
            "{} x ({}x{} by {}x{}){bias}{gelu}",
            self.layout.batch_count(),
            self.layout.m.len,
            self.layout.k.len,
            self.layout.k.len,
            self.layout.n.len
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for MatMulF32 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 2 + self.bias as usize, "MatMulF32 takes {} inputs", 2 + self.bias as usize);
        let (a, b) = (&inputs[0], &inputs[1]);
        ensure!(
            a.shape() == self.a_shape.as_slice() && b.shape() == self.b_shape.as_slice(),
            "MatMulF32 was planned for {:?} by {:?}, got {:?} by {:?}",
            self.a_shape,
            self.b_shape,
            a.shape(),
            b.shape()
        );
        let a = a.try_as_plain_ram()?;
        let b = b.try_as_plain_ram()?;
        let [a_offset, b_offset] = self.offsets;
        let bias = match inputs.get(2) {
            Some(bias) => {
                ensure!(
                    bias.len() == self.layout.n.len,
                    "MatMulF32's bias has {} values, expected {}",
                    bias.len(),
                    self.layout.n.len
                );
                Some(bias.try_as_plain_ram()?)
            }
            None => None,
        };
        // SAFETY: the tasks of `compute` write every element (see there).
        let mut c = unsafe { Tensor::uninitialized::<f32>(&self.c_shape)? };
        {
            let mut view = c.try_as_plain_ram_mut()?;
            // SAFETY: shapes checked above; the bias's length too.
            unsafe {
                self.compute(
                    &a.as_slice::<f32>()?[a_offset..],
                    &b.as_slice::<f32>()?[b_offset..],
                    bias.as_ref().map(|x| x.as_slice::<f32>()).transpose()?,
                    view.as_slice_mut::<f32>()?,
                )?;
            }
        }
        Ok(tvec!(c.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for MatMulF32 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.c_shape)))
    }

    as_op!();
}

/// A 2-D convolution of an NCHW f32 tensor (OIHW kernel, one group, no dilation, any kernel
/// size, stride and explicit zero padding) through `gemm`: the FPN decoder's 3x3 convolutions
/// (22 % of the full model once the products above went to [`MatMulF32`]) and the 4x4 stride-4
/// patch embedding (tract's `DirectSpatialConv`: 4 %, for 0.3 GFLOP).
///
/// Strided: the patches are gathered into a `[ci*kh*kw, ho*wo]` matrix (im2col), multiplied by
/// the kernel as a `[co, ci*kh*kw]` matrix in column tasks.
///
/// Stride 1, without the im2col copy (`kh * kw` times the input): the input is zero-padded once into planes of `hp x wp`. Flattened, output pixel `(y, x)` of
/// a padded-width row is `y * wp + x`, and tap `(dy, dx)` reads input pixel `(y + dy) * wp + x +
/// dx`: one matrix product per tap, `[co x ci] by [ci x ho*wp]`, the input operand being the padded
/// planes shifted by `dy * wp + dx`. The `wp - wo` columns past each row's end are computed and
/// dropped. The flattened output is cut into column tasks small enough for the task's
/// accumulator to stay in cache across all taps, spread over tract's threads.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ConvF32 {
    geometry: ConvGeometry,
}

/// The shape of a 2-D convolution of an NCHW tensor by an OIHW kernel (one group, no
/// dilation, explicit zero padding): what [`ConvF32`] and the int8
/// [`super::tract_i8::ConvI8`] compute.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) struct ConvGeometry {
    /// `[n, ci, h, w]`.
    pub input: [usize; 4],
    /// `[co, ci, kh, kw]`.
    pub kernel: [usize; 4],
    /// Zero rows above and below, columns left and right.
    pub pad: [usize; 4],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
}

impl ConvGeometry {
    /// `None` unless `conv` is such a convolution of `input` by `kernel`, non-empty.
    pub fn of(conv: &Conv, input: &[usize], kernel: &[usize]) -> Option<Self> {
        let spec = &conv.pool_spec;
        let unit = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&x| x == 1));
        let pad = match &spec.padding {
            PaddingSpec::Valid => [0; 4],
            PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, false)
                if before.len() == 2 && after.len() == 2 =>
            {
                [before[0], after[0], before[1], after[1]]
            }
            _ => return None,
        };
        let (&[n, ci, h, w], &[co, kci, kh, kw]) = (input, kernel) else { return None };
        let plain = conv.group == 1
            && spec.data_format == DataFormat::NCHW
            && conv.kernel_fmt == KernelFormat::OIHW
            && unit(&spec.dilations)
            && kci == ci
            && n * ci * h * w * co * kh * kw > 0;
        let stride = match spec.strides.as_deref() {
            None => [1, 1],
            Some(&[sh, sw]) if sh > 0 && sw > 0 => [sh, sw],
            Some(_) => return None,
        };
        let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
        (plain && hp >= kh && wp >= kw).then_some(ConvGeometry {
            input: [n, ci, h, w],
            kernel: [co, ci, kh, kw],
            pad,
            stride,
        })
    }

    /// Padded input size and output size: `(hp, wp, ho, wo)`.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let [_, _, h, w] = self.input;
        let [_, _, kh, kw] = self.kernel;
        let (hp, wp) = (h + self.pad[0] + self.pad[1], w + self.pad[2] + self.pad[3]);
        (hp, wp, (hp - kh) / self.stride[0] + 1, (wp - kw) / self.stride[1] + 1)
    }

    /// `[n, co, ho, wo]`.
    pub fn output_shape(&self) -> [usize; 4] {
        let (_, _, ho, wo) = self.sizes();
        [self.input[0], self.kernel[0], ho, wo]
    }
}

impl ConvF32 {
    /// `None` unless the convolution is one this op computes (see the type's docs).
    pub fn from_conv(conv: &Conv, input: &[usize], kernel: &[usize], bias_len: usize) -> Option<Self> {
        let geometry = ConvGeometry::of(conv, input, kernel)?;
        let [co, _, kh, kw] = geometry.kernel;
        let plain = conv.q_params.is_none() && kh * kw > 1 && (bias_len == co || bias_len == 1);
        plain.then_some(ConvF32 { geometry })
    }

    /// One image by im2col (any stride): `x` is `[ci, h, w]`, `out` `[co, ho, wo]`, `patches`
    /// scratch for the `[ci*kh*kw, ho*wo]` matrix.
    fn image_by_patches(
        &self,
        x: &[f32],
        kernel: &[f32],
        bias: &[f32],
        patches: &mut Vec<f32>,
        out: &mut [f32],
    ) -> TractResult<()> {
        let [_, ci, h, w] = self.geometry.input;
        let [co, _, kh, kw] = self.geometry.kernel;
        let [sh, sw] = self.geometry.stride;
        let (_, _, ho, wo) = self.geometry.sizes();
        let flat = ho * wo;
        // The patch matrix is written row by row across tract's threads (each of its `ci*kh*kw`
        // rows is one input channel read at one kernel offset), zeros included.
        patches.clear();
        patches.reserve(ci * kh * kw * flat);
        let patches_ptr = patches.as_mut_ptr() as usize;
        for_each_task(
            ci * kh * kw,
            ci * kh * kw * flat,
            || (),
            |_, row| {
                let (c, dy, dx) = (row / (kh * kw), row / kw % kh, row % kw);
                let plane = &x[c * h * w..(c + 1) * h * w];
                // SAFETY: row `row` of the `[ci*kh*kw, flat]` capacity, written by this task alone.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut((patches_ptr as *mut f32).add(row * flat), flat)
                };
                for (y, dst) in dst.chunks_exact_mut(wo).enumerate() {
                    // Source row of output row y; outside the input it is zero (padding).
                    let Some(sy) = (y * sh + dy).checked_sub(self.geometry.pad[0]).filter(|&sy| sy < h)
                    else {
                        dst.fill(0.0);
                        continue;
                    };
                    for (x, d) in dst.iter_mut().enumerate() {
                        *d = match (x * sw + dx).checked_sub(self.geometry.pad[2]).filter(|&sx| sx < w) {
                            Some(sx) => plane[sy * w + sx],
                            None => 0.0,
                        };
                    }
                }
                Ok(())
            },
        )?;
        // SAFETY: every row was written in full above.
        unsafe { patches.set_len(ci * kh * kw * flat) };
        let k = ci * kh * kw;
        let cols = columns_per_task(co, flat);
        let out_ptr = out.as_mut_ptr() as usize;
        for_each_task(
            flat.div_ceil(cols),
            co * k * flat,
            || (),
            |_, task| {
                let first = task * cols;
                let width = cols.min(flat - first);
                // SAFETY: rows `0..co` of `out` (`[co, flat]`) at columns `first..first+width`,
                // disjoint between tasks; the kernel is `[co, k]`, the patches `[k, flat]`.
                unsafe {
                    let dst = (out_ptr as *mut f32).add(first);
                    for (c, &b) in (0..co).zip(bias.iter().cycle()) {
                        std::slice::from_raw_parts_mut(dst.add(c * flat), width).fill(b);
                    }
                    gemm_call(
                        co,
                        width,
                        k,
                        dst,
                        1,
                        flat as isize,
                        true,
                        kernel.as_ptr(),
                        1,
                        k as isize,
                        (patches_ptr as *const f32).add(first),
                        1,
                        flat as isize,
                    );
                }
                Ok(())
            },
        )
    }

    /// One image with stride 1: `x` is `[ci, h, w]`, `out` `[co, ho, wo]`, `padded` scratch for the padded
    /// planes (plus `kw` values: the last tap of the last row reads that far).
    fn image(
        &self,
        x: &[f32],
        kernel: &[f32],
        bias: &[f32],
        padded: &mut Vec<f32>,
        out: &mut [f32],
    ) -> TractResult<()> {
        let [_, ci, h, w] = self.geometry.input;
        let [co, _, kh, kw] = self.geometry.kernel;
        let (hp, wp, ho, wo) = self.geometry.sizes();
        let [top, bottom, left, right] = self.geometry.pad;
        // The padded planes and the kernel tap by tap are written across tract's threads: on
        // one thread they were the part of the convolution that did not get faster with two
        // (the first FPN convolution pads 96 planes of 130x258 values per run).
        let plane = hp * wp;
        padded.clear();
        padded.reserve(ci * plane + kw);
        let padded_ptr = padded.as_mut_ptr() as usize;
        for_each_task(
            ci,
            ci * plane,
            || (),
            |_, c| {
                // SAFETY: plane `c` of `padded`'s capacity (`ci` planes of `hp x wp`, plus `kw`) is
                // written by this task alone: `top` zero rows, `h` rows of `left` zeros, the
                // input row and `right` zeros, then `bottom` zero rows; `x` has `ci` planes of `h x w`.
                unsafe {
                    let dst = (padded_ptr as *mut f32).add(c * plane);
                    dst.write_bytes(0, top * wp);
                    for (y, row) in x[c * h * w..(c + 1) * h * w].chunks_exact(w).enumerate() {
                        let dst = dst.add((top + y) * wp);
                        dst.write_bytes(0, left);
                        std::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(left), w);
                        dst.add(left + w).write_bytes(0, right);
                    }
                    dst.add((top + h) * wp).write_bytes(0, bottom * wp);
                }
                Ok(())
            },
        )?;
        // SAFETY: the planes are written above, the last `kw` values here.
        unsafe {
            (padded_ptr as *mut f32).add(ci * plane).write_bytes(0, kw);
            padded.set_len(ci * plane + kw);
        }
        // The kernel tap by tap (`[tap][o][i]`: each tap one contiguous `co x ci` matrix), so
        // that gemm does not gather the values 9 apart of ONNX's OIHW layout for every task:
        // ~10 % faster for one copy of the weights per run.
        let taps = kh * kw;
        let mut by_tap: Vec<f32> = Vec::with_capacity(kernel.len());
        let by_tap_ptr = by_tap.as_mut_ptr() as usize;
        for_each_task(
            co,
            kernel.len(),
            || (),
            |_, o| {
                for (i, values) in kernel[o * ci * taps..(o + 1) * ci * taps].chunks_exact(taps).enumerate() {
                    for (tap, &v) in values.iter().enumerate() {
                        // SAFETY: `(tap * co + o) * ci + i < taps * co * ci`, the capacity; output
                        // channel `o`'s values are written by this task alone.
                        unsafe { (by_tap_ptr as *mut f32).add((tap * co + o) * ci + i).write(v) };
                    }
                }
                Ok(())
            },
        )?;
        // SAFETY: every `(tap, o, i)` was written above (the kernel's shape was checked).
        unsafe { by_tap.set_len(kernel.len()) };
        let flat = ho * wp;
        let cols = columns_per_task(co, flat);
        let out_ptr = out.as_mut_ptr() as usize;
        let work = co * ci * kh * kw * flat;
        for_each_task(
            flat.div_ceil(cols),
            work,
            || vec![0f32; co * cols],
            |acc, task| {
                let first = task * cols;
                let width = cols.min(flat - first);
                let acc = &mut acc[..co * width];
                for (row, &b) in acc.chunks_exact_mut(width).zip(bias.iter().cycle()) {
                    row.fill(b);
                }
                for dy in 0..kh {
                    for dx in 0..kw {
                        // SAFETY: the kernel tap is `co x ci` contiguous values inside
                        // `by_tap`; the input operand reads `ci` rows of `width`
                        // values at plane stride `hp*wp`, from `first + dy*wp + dx`, which ends
                        // before `ci*hp*wp + kw` (the padded buffer's length); `acc` holds
                        // `co x width`.
                        unsafe {
                            gemm_call(
                                co,
                                width,
                                ci,
                                acc.as_mut_ptr(),
                                1,
                                width as isize,
                                true,
                                by_tap.as_ptr().add((dy * kw + dx) * co * ci),
                                1,
                                ci as isize,
                                (padded_ptr as *const f32).add(first + dy * wp + dx),
                                1,
                                (hp * wp) as isize,
                            );
                        }
                    }
                }
                // Keep the columns that are output pixels, by runs along a padded row.
                let mut i = 0;
                while i < width {
                    let (y, x) = ((first + i) / wp, (first + i) % wp);
                    let run = (wp - x).min(width - i);
                    let keep = wo.saturating_sub(x).min(run);
                    for c in 0..co {
                        let src = &acc[c * width + i..c * width + i + keep];
                        // SAFETY: `c < co`, `y < ho`, `x + keep <= wo`: inside `out`; tasks own
                        // disjoint flattened columns, hence disjoint pixels.
                        unsafe {
                            let dst = (out_ptr as *mut f32).add((c * ho + y) * wo + x);
                            std::ptr::copy_nonoverlapping(src.as_ptr(), dst, keep);
                        }
                    }
                    i += run;
                }
                Ok(())
            },
        )
    }
}

impl Op for ConvF32 {
    fn name(&self) -> StaticName {
        "ConvF32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let [co, ci, kh, kw] = self.geometry.kernel;
        let [_, _, ho, wo] = self.geometry.output_shape();
        let [sh, sw] = self.geometry.stride;
        Ok(vec![format!("{kh}x{kw} stride {sh}x{sw}, {ci} -> {co} channels at {ho}x{wo}")])
    }

    op_as_typed_op!();
}

impl EvalOp for ConvF32 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        ensure!(
            x.shape() == self.geometry.input.as_slice() && kernel.shape() == self.geometry.kernel.as_slice(),
            "ConvF32 was planned for {:?} by {:?}, got {:?} by {:?}",
            self.geometry.input,
            self.geometry.kernel,
            x.shape(),
            kernel.shape()
        );
        let co = self.geometry.kernel[0];
        ensure!(
            bias.len() == co || bias.len() == 1,
            "ConvF32's bias has {} values for {co} channels",
            bias.len()
        );
        let (x, kernel, bias) = (x.try_as_plain_ram()?, kernel.try_as_plain_ram()?, bias.try_as_plain_ram()?);
        let (x, kernel, bias) = (x.as_slice::<f32>()?, kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        let shape = self.geometry.output_shape();
        // SAFETY: both ways of computing an image write every value of its output (every
        // column of every output channel), before anything reads it.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let (per_in, per_out) = (x.len() / self.geometry.input[0], out.len() / shape[0]);
            let mut scratch = Vec::new();
            for (x, out) in x.chunks_exact(per_in).zip(out.chunks_exact_mut(per_out)) {
                match self.geometry.stride {
                    [1, 1] => self.image(x, kernel, bias, &mut scratch, out)?,
                    _ => self.image_by_patches(x, kernel, bias, &mut scratch, out)?,
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for ConvF32 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.geometry.output_shape())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor of `shape` with values in [-1, 1] that differ from element to element.
    fn values(shape: &[usize], seed: f32) -> Tensor {
        let len: usize = shape.iter().product();
        let data: Vec<f32> = (0..len).map(|i| ((i as f32 + seed) * 0.731).sin()).collect();
        tract_ndarray::ArrayD::from_shape_vec(shape, data).unwrap().into_tensor()
    }

    fn slice(t: &TValue) -> Vec<f32> {
        t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    /// Ours against tract's own `EinSum` on `expr`, on one thread and split into tasks over
    /// three; with a bias when `bias` (and the product allows one). Returns the op, so callers
    /// can check what it made of the axes. tract's `EinSum` (the reference) runs once: it is a
    /// plain loop, and under qemu (the aarch64 tests) it was most of the unit tests' time.
    fn check(expr: &str, a_shape: &[usize], b_shape: &[usize], bias: bool) -> MatMulF32 {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let einsum = EinSum::new(expr.parse().unwrap(), f32::datum_type());
        let (a, b) = (values(a_shape, 0.0), values(b_shape, 1000.0));
        let facts = [f32::fact(a_shape), f32::fact(b_shape)];
        let c_fact = einsum.output_facts(&[&facts[0], &facts[1]]).unwrap().remove(0);
        let c_shape = c_fact.shape.as_concrete().unwrap().to_vec();
        let ctx = EvalContext::out_of_plan();
        let inputs = tvec!(a.into_tvalue(), b.into_tvalue());
        let mut expected = slice(&einsum.eval(&ctx, inputs.clone()).unwrap()[0]);
        let mut op = MatMulF32::from_einsum(&einsum, a_shape, b_shape, &c_shape)
            .unwrap_or_else(|| panic!("{expr} {a_shape:?} {b_shape:?} is a matrix product"));
        let mut inputs = inputs;
        if bias {
            let n = *c_shape.last().unwrap();
            op = op.with_bias(&[n]).unwrap_or_else(|| panic!("{expr}: a bias along the last axis"));
            let bias = values(&[n], 7.0);
            let bias_values = slice(&bias.clone().into_tvalue());
            for (i, e) in expected.iter_mut().enumerate() {
                *e += bias_values[i % n];
            }
            inputs.push(bias.into_tvalue());
        }
        let compare = |threads: usize| {
            let got = slice(&op.eval(&ctx, inputs.clone()).unwrap()[0]);
            assert_eq!(got.len(), expected.len());
            let k = op.layout.k.len as f32;
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                // Sums of k products of values in [-1, 1], in another order than tract's.
                assert!(
                    (g - e).abs() <= 1e-5 * k.max(1.0) + 1e-6,
                    "{expr} {a_shape:?} {b_shape:?} on {threads} threads [{i}]: {g} vs {e}"
                );
            }
        };
        compare(1);
        multithread_tract_scope(Executor::multithread(3), || compare(3));
        op
    }

    /// The network's forms: linear layers (with bias), attention's q k^T and attn v, ONNX Gemm
    /// with a transposed weight, and odd sizes around the micro-kernels' tiles.
    #[test]
    fn matches_tract_on_the_network_forms() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (17, 96, 288), (49, 32, 49), (130, 33, 65), (1025, 96, 384)] {
            check("mk,kn->mn", &[m, k], &[k, n], false);
            check("mk,kn->nm", &[m, k], &[k, n], false);
            check("bmk,kn->bmn", &[2, m, k], &[k, n], true);
            check("bmk,nk->bmn", &[3, m, k], &[n, k], true);
            check("bhmk,bhnk->bhmn", &[2, 3, m, k], &[2, 3, n, k], false);
            check("bhmn,bhnk->bhmk", &[2, 3, m, n], &[2, 3, n, k], false);
            // The qkv projection on windows: rows split by the window partition into axes that
            // do not merge, gathered into larger products. 1025 rows per window row would add
            // nothing to 130's (neither gathers) but 42 products of 1025x96x384 in tract's
            // reference loop: 70 s under qemu.
            if m <= 130 {
                let windows = check("abcdk,kn->acbdn", &[2, 7, 3, m, k], &[k, n], true);
                assert_eq!(windows.gathers_rows(), m < 128, "{m} rows per window row");
            }
        }
    }

    /// An operand read in place from the tensor it was sliced from gives what the sliced copy
    /// gives: q, k and v cut from the qkv output (as tract's optimiser leaves them), slices
    /// along the first, a middle and the last axis, of both operands, twice in a row (a slice of
    /// a slice), on one and three threads. A product axis that steps across the sliced axis is
    /// refused.
    #[test]
    fn slices_read_in_place_match_their_copies() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let ctx = EvalContext::out_of_plan();
        /// Einsum, whole a, whole b, slices `(operand, axis, start, end)` in order, with bias.
        type Case =
            (&'static str, &'static [usize], &'static [usize], &'static [(usize, usize, usize, usize)], bool);
        let cases: &[Case] = &[
            ("wmxhk,wnxhk->whmn", &[5, 7, 3, 2, 8], &[5, 7, 3, 2, 8], &[(0, 2, 0, 1), (1, 2, 1, 2)], false),
            ("wmxhk,wnxhk->whmn", &[5, 7, 3, 2, 8], &[5, 7, 3, 2, 8], &[(0, 2, 2, 3), (1, 2, 2, 3)], false),
            ("mk,kn->mn", &[9, 70], &[64, 130], &[(0, 1, 3, 67), (1, 1, 1, 129)], true),
            ("mk,kn->mn", &[300, 16], &[16, 20], &[(0, 0, 17, 290)], true),
            ("bmk,bkn->bmn", &[4, 6, 5], &[4, 5, 7], &[(0, 0, 1, 3), (1, 0, 2, 4)], false),
            ("bmk,bkn->bmn", &[3, 6, 9], &[3, 7, 7], &[(0, 2, 1, 8), (0, 1, 2, 5)], false),
            ("bmk,bkn->bmn", &[3, 6, 9], &[3, 9, 7], &[(0, 1, 1, 5), (0, 1, 1, 3)], false),
        ];
        let run = || {
            for &(expr, a_whole, b_whole, slices, bias) in cases {
                let einsum = EinSum::new(expr.parse().unwrap(), f32::datum_type());
                let whole = [values(a_whole, 0.0), values(b_whole, 1000.0)];
                let mut parts = whole.clone();
                let planned = |parts: &[Tensor; 2]| {
                    let facts = [f32::fact(parts[0].shape()), f32::fact(parts[1].shape())];
                    let c = einsum.output_facts(&[&facts[0], &facts[1]]).unwrap().remove(0);
                    let c = c.shape.as_concrete().unwrap().to_vec();
                    let op = MatMulF32::from_einsum(&einsum, parts[0].shape(), parts[1].shape(), &c).unwrap();
                    if bias { op.with_bias(&[c[c.len() - 1]]).unwrap() } else { op }
                };
                // Apply the slices one by one: each makes the op read the tensor before it.
                let mut sliced_from = vec![];
                for &(operand, axis, start, end) in slices {
                    sliced_from.push((operand, parts[operand].shape().to_vec(), axis, start));
                    parts[operand] = parts[operand].slice(axis, start, end).unwrap();
                }
                let copies = planned(&parts);
                let mut inplace = copies.clone();
                for (operand, before, axis, start) in sliced_from.iter().rev() {
                    inplace = inplace
                        .reading_slice(*operand, before, *axis, *start)
                        .unwrap_or_else(|| panic!("{expr} {slices:?}: read in place"));
                }
                let n = *copies.c_shape.last().unwrap();
                let bias_input = || values(&[n], 7.0).into_tvalue();
                let mut from_copies = tvec!(parts[0].clone().into_tvalue(), parts[1].clone().into_tvalue());
                let mut in_place = tvec!(whole[0].clone().into_tvalue(), whole[1].clone().into_tvalue());
                if bias {
                    from_copies.push(bias_input());
                    in_place.push(bias_input());
                }
                let expected = slice(&copies.eval(&ctx, from_copies).unwrap()[0]);
                let got = slice(&inplace.eval(&ctx, in_place).unwrap()[0]);
                assert_eq!(got, expected, "{expr} {slices:?}");
            }
        };
        run();
        multithread_tract_scope(Executor::multithread(3), run);
        // m and the batch merge into one axis in "xmk" (contiguous); a slice of m breaks that.
        let einsum = EinSum::new("xmk,kn->xmn".parse().unwrap(), f32::datum_type());
        let op = MatMulF32::from_einsum(&einsum, &[2, 3, 8], &[8, 4], &[2, 3, 4]).unwrap();
        assert!(op.reading_slice(0, &[2, 5, 8], 1, 1).is_none());
        assert!(op.reading_slice(0, &[2, 3, 9], 2, 1).is_some());
        assert!(op.reading_slice(0, &[2, 3, 9], 2, 2).is_none(), "past the end");
        assert!(op.reading_slice(0, &[3, 3, 8], 1, 0).is_none(), "other axes differ");
    }

    /// The GELU epilogue gives exactly tract's `GeluExact` of the product (plain and gathered
    /// paths, with a bias, tiles split by columns on three threads); a transposed output, whose
    /// rows are not contiguous, is refused.
    #[test]
    fn gelu_epilogue_is_tracts_gelu() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let ctx = EvalContext::out_of_plan();
        let run = || {
            for (expr, a_shape, b_shape) in [
                ("bmk,kn->bmn", vec![2, 300, 24], vec![24, 200]),
                ("abcdk,kn->acbdn", vec![2, 7, 3, 49, 16], vec![16, 130]),
            ] {
                let einsum = EinSum::new(expr.parse().unwrap(), f32::datum_type());
                let facts = [f32::fact(&a_shape), f32::fact(&b_shape)];
                let c = einsum.output_facts(&[&facts[0], &facts[1]]).unwrap().remove(0);
                let c = c.shape.as_concrete().unwrap().to_vec();
                let n = c[c.len() - 1];
                let op =
                    MatMulF32::from_einsum(&einsum, &a_shape, &b_shape, &c).unwrap().with_bias(&[n]).unwrap();
                let inputs = tvec!(
                    values(&a_shape, 0.0).into_tvalue(),
                    values(&b_shape, 1000.0).into_tvalue(),
                    values(&[n], 7.0).into_tvalue()
                );
                let product = op.eval(&ctx, inputs.clone()).unwrap();
                let gelu = tract_onnx::tract_core::ops::nn::gelu_exact::gelu_exact();
                let expected = slice(&gelu.eval(&ctx, product).unwrap()[0]);
                let got = slice(&op.with_gelu().unwrap().eval(&ctx, inputs).unwrap()[0]);
                assert_eq!(got, expected, "{expr}");
            }
        };
        run();
        multithread_tract_scope(Executor::multithread(3), run);
        let einsum = EinSum::new("mk,kn->nm".parse().unwrap(), f32::datum_type());
        assert!(MatMulF32::from_einsum(&einsum, &[5, 3], &[3, 4], &[4, 5]).unwrap().with_gelu().is_none());
    }

    /// Tiles cover every row and column exactly once, with at most `Tile::ROWS` rows, and split
    /// columns only to reach the wanted task count.
    #[test]
    fn tiles_cover_each_row_and_column_once() {
        for rows_total in [1, 15, 49, 255, 256, 257, 735, 1025, 4100] {
            for cols_total in [1, 17, 63, 64, 200, 384, 1000] {
                for (wanted, threads) in [(1, 1), (4, 1), (8, 2), (12, 3)] {
                    let tile = Tile::new(rows_total, cols_total, wanted, threads);
                    let mut seen = vec![0u8; rows_total * cols_total];
                    for t in 0..tile.count() {
                        let (first, rows, col, width) = tile.task(t);
                        assert!((1..=Tile::ROWS).contains(&rows) && width >= 1, "{tile:?} task {t}");
                        for r in first..first + rows {
                            seen[r * cols_total + col..r * cols_total + col + width]
                                .iter_mut()
                                .for_each(|s| *s += 1);
                        }
                    }
                    assert!(seen.iter().all(|&s| s == 1), "{tile:?}");
                    let row_blocks = rows_total.div_ceil(tile.rows);
                    assert!(
                        row_blocks.is_multiple_of(threads) || rows_total < 64,
                        "{tile:?}: {row_blocks} row blocks on {threads} threads"
                    );
                    let row_blocks = rows_total.div_ceil(Tile::ROWS);
                    if row_blocks >= wanted || cols_total < 2 * Tile::MIN_COLS {
                        assert_eq!(tile.cols, cols_total, "{tile:?}: columns split needlessly");
                    } else {
                        assert!(
                            tile.count() >= wanted.min(row_blocks * (cols_total / Tile::MIN_COLS)),
                            "{tile:?}"
                        );
                    }
                }
            }
        }
    }

    /// Layouts tract makes by folding transposes into the axes, broadcast batch axes, a missing
    /// `m` or `n`, axes split in several (merged back, or extra ones run as batch entries), on
    /// sizes from a fixed pseudo-random sweep.
    #[test]
    fn matches_tract_on_any_layout() {
        let size = |i: usize, max: usize| (i * 7919 + 13) % max + 1;
        for i in 0..12 {
            let (b, m, k, n) = (size(i, 5), size(i + 3, 70), size(i + 5, 40), size(i + 7, 50));
            check("mkb,bkn->bmn", &[m, k, b], &[b, k, n], false);
            check("bmk,bkn->bnm", &[b, m, k], &[b, k, n], false);
            check("bmk,kn->bmn", &[1, m, k], &[k, n], true);
            check("bmk,bkn->bmn", &[1, m, k], &[b, k, n], false);
            check("mk,k->m", &[m, k], &[k], false);
            check("k,kn->n", &[k], &[k, n], true);
            check("mk,n->mn", &[m, 1], &[n], false);
            check("xymk,kn->xymn", &[b, 2, m, k], &[k, n], true);
            check("mxk,knx->mnx", &[m, b, k], &[k, n, b], false);
            check("mak,bkn->mabn", &[m, 2, k], &[b, k, n], false);
        }
    }

    /// Contiguous axes of one role become one: a linear layer on [batch, tokens, channels] is one
    /// product of batch*tokens rows, not one per batch entry.
    #[test]
    fn contiguous_axes_merge_into_one_product() {
        let op = check("bmk,kn->bmn", &[4, 49, 96], &[96, 288], true);
        assert_eq!(
            (op.layout.batch_count(), op.layout.m.len, op.layout.n.len, op.layout.k.len),
            (1, 196, 288, 96)
        );
        let op = check("bhmk,bhnk->bhmn", &[2, 3, 49, 32], &[2, 3, 49, 32], false);
        assert_eq!(
            (op.layout.batch_count(), op.layout.m.len, op.layout.n.len, op.layout.k.len),
            (6, 49, 49, 32)
        );
    }

    /// What is not a plain product stays tract's; inputs of other shapes than planned are errors.
    #[test]
    fn what_is_not_a_product_is_left_to_tract() {
        let einsum = |expr: &str| EinSum::new(expr.parse().unwrap(), f32::datum_type());
        assert!(MatMulF32::from_einsum(&einsum("mk,kn->mkn"), &[2, 3], &[3, 4], &[2, 3, 4]).is_some());
        assert!(MatMulF32::from_einsum(&einsum("mk,kn->m"), &[2, 3], &[3, 4], &[2]).is_none());
        assert!(MatMulF32::from_einsum(&einsum("mm,mn->mn"), &[3, 3], &[3, 4], &[3, 4]).is_none());
        assert!(MatMulF32::from_einsum(&einsum("mk,kn->mn"), &[2, 0], &[0, 4], &[2, 4]).is_none());
        let int = EinSum::new("mk,kn->mn".parse().unwrap(), i32::datum_type());
        assert!(MatMulF32::from_einsum(&int, &[2, 3], &[3, 4], &[2, 4]).is_none());
        let op = MatMulF32::from_einsum(&einsum("mk,kn->mn"), &[2, 3], &[3, 4], &[2, 4]).unwrap();
        assert!(op.with_bias(&[2, 1]).is_none() && op.with_bias(&[5]).is_none());
        let err = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec!(values(&[2, 4], 0.0).into_tvalue(), values(&[4, 4], 0.0).into_tvalue()),
            )
            .unwrap_err();
        assert!(err.to_string().contains("was planned for"), "{err}");
    }

    /// A convolution model as tract runs it, and the same after `accelerate`: equal outputs, and
    /// the convolution is ours. Kernel sizes 3x3, 5x3, 2x2, 4x4, strides 1 to 4, paddings
    /// symmetric, asymmetric and none, odd channel counts, two images, per-channel and scalar
    /// bias, one and three threads.
    #[test]
    fn convolutions_match_tract() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        use tract_onnx::tract_core::ops::cnn::PoolSpec;
        let case = |n: usize,
                    ci: usize,
                    co: usize,
                    (h, w): (usize, usize),
                    (kh, kw): (usize, usize),
                    pad: [usize; 4],
                    bias_len: usize,
                    stride: [usize; 2]| {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([n, ci, h, w])).unwrap();
            let kernel = model.add_const("k", values(&[co, ci, kh, kw], 3.0)).unwrap();
            let bias_shape: &[usize] = if bias_len == 1 { &[] } else { &[bias_len] };
            let bias = model.add_const("b", values(bias_shape, 5.0)).unwrap();
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
                q_params: None,
            };
            let y = model.wire_node("conv", conv, &[x, kernel, bias]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let mut ours = model.clone();
            assert_eq!(super::super::tract_ops::accelerate(&mut ours).unwrap(), 1);
            assert!(ours.nodes().iter().any(|node| node.op_is::<ConvF32>()));
            let input = values(&[n, ci, h, w], 0.0);
            let run = |m: TypedModel| {
                m.into_runnable().unwrap().run(tvec!(input.clone().into_tvalue())).unwrap().remove(0)
            };
            let (expected, got) = (run(model), run(ours));
            assert_eq!(expected.shape(), got.shape());
            let k = (ci * kh * kw) as f32;
            for (i, (g, e)) in slice(&got).iter().zip(slice(&expected)).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5 * k + 1e-6,
                    "{ci}->{co} {h}x{w} k{kh}x{kw} {pad:?} [{i}]: {g} vs {e}"
                );
            }
        };
        let cases = || {
            case(1, 3, 5, (7, 9), (3, 3), [1, 1, 1, 1], 5, [1, 1]);
            case(2, 17, 33, (13, 21), (3, 3), [1, 1, 1, 1], 33, [1, 1]);
            case(1, 8, 4, (9, 6), (5, 3), [2, 0, 1, 1], 1, [1, 1]);
            case(1, 5, 7, (8, 8), (2, 2), [0, 0, 0, 0], 7, [1, 1]);
            case(1, 64, 40, (30, 70), (3, 3), [1, 1, 1, 1], 40, [1, 1]);
            // The patch embedding (4x4, stride 4), strides with padding and with leftovers.
            case(1, 3, 96, (64, 128), (4, 4), [0, 0, 0, 0], 96, [4, 4]);
            case(2, 5, 9, (17, 23), (3, 3), [1, 1, 1, 1], 9, [2, 2]);
            case(1, 4, 6, (11, 14), (3, 2), [0, 1, 2, 0], 1, [3, 2]);
        };
        cases();
        multithread_tract_scope(Executor::multithread(3), cases);
    }
}
