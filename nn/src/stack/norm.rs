//! `group_norm`: per sample, the channels are split into `groups` groups, each normalised to zero mean
//! and unit variance (biased, `+ eps`), then scaled and shifted per channel.
//!
//! Statistics are summed in `f64` over eight lanes in a fixed order (so the loops vectorise and the
//! result depends on the shapes only), in one pass over the input: the sums are taken relative to
//! the group's first element, which keeps `E[(x − s)²] − E[x − s]²` free of cancellation for any
//! offset. The forward pass keeps only the mean and `1/σ` of every group; the backward pass
//! recomputes `x̂` from the input, which is cheaper than storing and rereading a copy of it.

/// A GroupNorm layer over `c` channels of `hw` pixels (`hw = 1` for a flat input).
#[derive(Debug, Clone)]
pub(super) struct GroupNorm {
    pub(super) c: usize,
    pub(super) hw: usize,
    pub(super) groups: usize,
    pub(super) eps: f64,
    /// Flat input: element `(b, ch)` at `b·c + ch`; else channel-major planes.
    pub(super) flat: bool,
    /// Offsets of the scale and the shift (`[c]` each).
    pub(super) w_off: usize,
    pub(super) b_off: usize,
}

/// `(Σ (v − s), Σ (v − s)²)` over `x`, in `f64`: eight lane sums in order, then added in order.
#[inline]
fn shifted_sums(x: &[f32], s: f32) -> (f64, f64) {
    let (mut a, mut q) = ([0.0f64; 8], [0.0f64; 8]);
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for l in 0..8 {
            let d = (ch[l] - s) as f64;
            a[l] += d;
            q[l] += d * d;
        }
    }
    let (mut sa, mut sq) = (0.0, 0.0);
    for l in 0..8 {
        sa += a[l];
        sq += q[l];
    }
    for &v in chunks.remainder() {
        let d = (v - s) as f64;
        sa += d;
        sq += d * d;
    }
    (sa, sq)
}

/// `(Σ dy, Σ dy·(x − mean))` in `f64`, eight lane sums in order, then added in order.
#[inline]
fn grad_sums(dy: &[f32], x: &[f32], mean: f32) -> (f64, f64) {
    let (mut a, mut q) = ([0.0f64; 8], [0.0f64; 8]);
    let mut gc = dy.chunks_exact(8);
    let mut xc = x.chunks_exact(8);
    for (g, v) in (&mut gc).zip(&mut xc) {
        for l in 0..8 {
            a[l] += g[l] as f64;
            q[l] += (g[l] * (v[l] - mean)) as f64;
        }
    }
    let (mut sa, mut sq) = (0.0, 0.0);
    for l in 0..8 {
        sa += a[l];
        sq += q[l];
    }
    for (&g, &v) in gc.remainder().iter().zip(xc.remainder()) {
        sa += g as f64;
        sq += (g * (v - mean)) as f64;
    }
    (sa, sq)
}

impl GroupNorm {
    /// Where plane `(ch, b)` starts in a pass of `rows` samples.
    fn at(&self, ch: usize, b: usize, rows: usize) -> usize {
        if self.flat {
            b * self.c + ch
        } else {
            (ch * rows + b) * self.hw
        }
    }

    /// Floats of statistics per sample: the mean and `1/σ` of every group.
    pub(super) fn stats_per_row(&self) -> usize {
        2 * self.groups
    }

    /// `y = γ·x̂ + β`, then `max(·, 0)` if `relu` (a following ReLU, fused into this pass); keeps
    /// the means (`stats[..rows·groups]`) and the reciprocal standard deviations (the next
    /// `rows·groups` floats).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        stats: &mut [f32],
        rows: usize,
        relu: bool,
    ) {
        let (gamma, beta) = (
            &params[self.w_off..][..self.c],
            &params[self.b_off..][..self.c],
        );
        let (means, rstds) = stats[..2 * rows * self.groups].split_at_mut(rows * self.groups);
        let (cpg, hw) = (self.c / self.groups, self.hw);
        let n = (cpg * hw) as f64;
        for b in 0..rows {
            for g in 0..self.groups {
                let chans = g * cpg..(g + 1) * cpg;
                let shift = x[self.at(chans.start, b, rows)];
                let (mut sum, mut sq) = (0.0f64, 0.0f64);
                for ch in chans.clone() {
                    let (a, q) = shifted_sums(&x[self.at(ch, b, rows)..][..hw], shift);
                    sum += a;
                    sq += q;
                }
                let m = sum / n;
                let var = (sq / n - m * m).max(0.0);
                let r = 1.0 / (var + self.eps).sqrt();
                let mean = (shift as f64 + m) as f32;
                means[b * self.groups + g] = mean;
                rstds[b * self.groups + g] = r as f32;
                let r = r as f32;
                for ch in chans {
                    let o = self.at(ch, b, rows);
                    // y = γ·(x − mean)·r + β, as one scale and one shift per plane.
                    let (sc, sh) = (gamma[ch], beta[ch]);
                    let (xs, ys) = (&x[o..o + hw], &mut y[o..o + hw]);
                    if relu {
                        for (yv, &xv) in ys.iter_mut().zip(xs) {
                            *yv = (sc * ((xv - mean) * r) + sh).max(0.0);
                        }
                    } else {
                        for (yv, &xv) in ys.iter_mut().zip(xs) {
                            *yv = sc * ((xv - mean) * r) + sh;
                        }
                    }
                }
            }
        }
    }

    /// Scale and shift gradients into `grad` (added when `acc`); the input gradient into `dx`
    /// (overwritten) when given. `x` is the forward input and `stats` what the forward pass kept.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        dy: &[f32],
        mut dx: Option<&mut [f32]>,
        stats: &[f32],
        grad: &mut [f32],
        acc: bool,
        rows: usize,
    ) {
        let gamma = &params[self.w_off..][..self.c];
        let (means, rstds) = stats[..2 * rows * self.groups].split_at(rows * self.groups);
        let (cpg, hw) = (self.c / self.groups, self.hw);
        let n = (cpg * hw) as f64;
        if !acc {
            grad[self.w_off..][..self.c].fill(0.0);
            grad[self.b_off..][..self.c].fill(0.0);
        }
        for b in 0..rows {
            for g in 0..self.groups {
                let chans = g * cpg..(g + 1) * cpg;
                let (mean, r) = (means[b * self.groups + g], rstds[b * self.groups + g]);
                // Per channel: Σ dy (the shift's gradient) and Σ dy·x̂ (the scale's); per group
                // their γ-weighted sums, for the input gradient.
                let (mut m1, mut m2) = (0.0f64, 0.0f64);
                for ch in chans.clone() {
                    let o = self.at(ch, b, rows);
                    let (sd, sdx) = grad_sums(&dy[o..o + hw], &x[o..o + hw], mean);
                    let sdxh = sdx * r as f64;
                    grad[self.w_off + ch] += sdxh as f32;
                    grad[self.b_off + ch] += sd as f32;
                    m1 += gamma[ch] as f64 * sd;
                    m2 += gamma[ch] as f64 * sdxh;
                }
                let Some(dx) = dx.as_deref_mut() else {
                    continue;
                };
                let (m1, m2) = ((m1 / n) as f32, (m2 / n) as f32);
                for ch in chans {
                    let o = self.at(ch, b, rows);
                    let gm = gamma[ch];
                    for ((dxv, &d), &xv) in dx[o..o + hw]
                        .iter_mut()
                        .zip(&dy[o..o + hw])
                        .zip(&x[o..o + hw])
                    {
                        let xh = (xv - mean) * r;
                        *dxv = r * (d * gm - m1 - xh * m2);
                    }
                }
            }
        }
    }
}
