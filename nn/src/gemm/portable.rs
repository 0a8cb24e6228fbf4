//! The portable path: initialise `C`, then one `matrixmultiply::sgemm` call, then the ReLU.

use super::Init;

/// `C = init + A·B` (then the ReLU) for general strides of all three matrices.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    init: Init<'_>,
    relu: bool,
) {
    let beta = match init {
        Init::Zero => 0.0,
        Init::Acc => 1.0,
        Init::RowBias(bias) => {
            for i in 0..m {
                for j in 0..n {
                    c[i * rsc + j * csc] = bias[i];
                }
            }
            1.0
        }
        Init::ColBias(bias) => {
            for i in 0..m {
                for j in 0..n {
                    c[i * rsc + j * csc] = bias[j];
                }
            }
            1.0
        }
    };
    if k == 0 {
        if beta == 0.0 {
            for i in 0..m {
                for j in 0..n {
                    c[i * rsc + j * csc] = 0.0;
                }
            }
        }
    } else {
        // SAFETY: the callers checked that the slices cover every addressed element; strides fit
        // in isize because they index existing slices.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                rsa as isize,
                csa as isize,
                b.as_ptr(),
                rsb as isize,
                csb as isize,
                beta,
                c.as_mut_ptr(),
                rsc as isize,
                csc as isize,
            );
        }
    }
    if relu {
        for i in 0..m {
            for j in 0..n {
                let v = &mut c[i * rsc + j * csc];
                *v = v.max(0.0);
            }
        }
    }
}

/// Portable [`super::nn`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn nn(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    c: &mut [f32],
    rsc: usize,
    init: Init<'_>,
    relu: bool,
) {
    sgemm(m, n, k, a, rsa, csa, b, rsb, 1, c, rsc, 1, init, relu);
}

/// Portable [`super::nt`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn nt(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    init: Init<'_>,
    relu: bool,
) {
    sgemm(m, n, k, a, lda, 1, b, 1, ldb, c, rsc, csc, init, relu);
}
