//! Argmax over the class axis, written so the compiler vectorises the inner loops: classes in
//! the outer loop, pixels in the inner one, with a running maximum per pixel.
//!
//! Ties go to the lowest class index, as `numpy.argmax` / `torch.argmax`. A NaN logit (a broken
//! model) never wins against a number in a later class.

/// Argmax over `k` planes of `labels.len()` values each (`planes` is `[k][n]`).
/// `scratch` is resized to hold the running maxima.
pub fn argmax_planes(planes: &[f32], k: usize, labels: &mut [u8], scratch: &mut Vec<f32>) {
    let n = labels.len();
    assert_eq!(planes.len(), k * n);
    scratch.clear();
    scratch.extend_from_slice(&planes[..n]);
    labels.fill(0);
    for c in 1..k {
        let plane = &planes[c * n..(c + 1) * n];
        for ((best, label), &v) in scratch.iter_mut().zip(labels.iter_mut()).zip(plane) {
            if v > *best {
                *best = v;
                *label = c as u8;
            }
        }
    }
}

/// Argmax over `k` classes of `w0 * top + w1 * bottom`, where `top` and `bottom` are `[k][n]`
/// rows (the two source rows of a bilinear output row). `best` and `best_class` hold `n` values
/// of scratch each: the class index is kept as f32 so that the compare-and-select loop runs on
/// lanes of one width and vectorises.
#[allow(clippy::too_many_arguments)]
pub fn argmax_blended_rows(
    top: &[f32],
    bottom: &[f32],
    w0: f32,
    w1: f32,
    k: usize,
    labels: &mut [u8],
    best: &mut [f32],
    best_class: &mut [f32],
) {
    let n = labels.len();
    assert!(top.len() == k * n && bottom.len() == k * n && best.len() == n && best_class.len() == n);
    for ((b, &t), &u) in best.iter_mut().zip(&top[..n]).zip(&bottom[..n]) {
        *b = w0 * t + w1 * u;
    }
    best_class.fill(0.0);
    for c in 1..k {
        let (t, u) = (&top[c * n..(c + 1) * n], &bottom[c * n..(c + 1) * n]);
        let class = c as f32;
        for (((b, bc), &tv), &uv) in best.iter_mut().zip(best_class.iter_mut()).zip(t).zip(u) {
            let v = w0 * tv + w1 * uv;
            // Arithmetic select (exact: the class difference is a small integer) so that the
            // loop compiles to compare + blend without per-lane branches.
            let better = (v > *b) as u32 as f32;
            *bc += better * (class - *bc);
            *b = b.max(v);
        }
    }
    for (l, &c) in labels.iter_mut().zip(best_class.iter()) {
        *l = c as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_first_class_and_nan_never_wins() {
        let planes = [1.0, 5.0, f32::NAN, /* c1 */ 1.0, 6.0, 0.0, /* c2 */ f32::NAN, 6.0, 2.0];
        let mut labels = [9u8; 3];
        argmax_planes(&planes, 3, &mut labels, &mut vec![]);
        // Pixel 2 starts with NaN in class 0: a NaN running max is never beaten by `>`.
        assert_eq!(labels, [0, 1, 0]);
    }

    #[test]
    fn blended_rows_match_blend_then_argmax() {
        let (k, n) = (3, 4);
        let top: Vec<f32> = (0..k * n).map(|i| ((i * 37) % 11) as f32).collect();
        let bottom: Vec<f32> = (0..k * n).map(|i| ((i * 17) % 7) as f32).collect();
        let (w0, w1) = (0.25, 0.75);
        let blended: Vec<f32> = top.iter().zip(&bottom).map(|(t, b)| w0 * t + w1 * b).collect();
        let mut expected = [0u8; 4];
        argmax_planes(&blended, k, &mut expected, &mut vec![]);
        let mut labels = [0u8; 4];
        argmax_blended_rows(&top, &bottom, w0, w1, k, &mut labels, &mut [0.0; 4], &mut [0.0; 4]);
        assert_eq!(labels, expected);
    }
}
