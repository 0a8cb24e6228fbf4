//! `group_norm`: per sample, the channels are split into `groups` groups, each normalised to zero mean
//! and unit variance (biased, `+ eps`), then scaled and shifted per channel. Statistics are summed in
//! `f64` in a fixed order.

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

impl GroupNorm {
    /// Where plane `(ch, b)` starts in a pass of `rows` samples.
    fn at(&self, ch: usize, b: usize, rows: usize) -> usize {
        if self.flat {
            b * self.c + ch
        } else {
            (ch * rows + b) * self.hw
        }
    }

    /// `y = γ·x̂ + β`; keeps `x̂` and the reciprocal standard deviations (`rows × groups`).
    pub(super) fn forward(
        &self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        xhat: &mut [f32],
        rstd: &mut [f32],
        rows: usize,
    ) {
        let (gamma, beta) = (
            &params[self.w_off..][..self.c],
            &params[self.b_off..][..self.c],
        );
        let cpg = self.c / self.groups;
        let n = (cpg * self.hw) as f64;
        for b in 0..rows {
            for g in 0..self.groups {
                let chans = g * cpg..(g + 1) * cpg;
                let mut sum = 0.0f64;
                for ch in chans.clone() {
                    for &v in &x[self.at(ch, b, rows)..][..self.hw] {
                        sum += v as f64;
                    }
                }
                let mean = sum / n;
                let mut var = 0.0f64;
                for ch in chans.clone() {
                    for &v in &x[self.at(ch, b, rows)..][..self.hw] {
                        let d = v as f64 - mean;
                        var += d * d;
                    }
                }
                let r = 1.0 / (var / n + self.eps).sqrt();
                rstd[b * self.groups + g] = r as f32;
                let (mean, r) = (mean as f32, r as f32);
                for ch in chans {
                    let o = self.at(ch, b, rows);
                    for ((xv, xh), yv) in x[o..o + self.hw]
                        .iter()
                        .zip(&mut xhat[o..o + self.hw])
                        .zip(&mut y[o..o + self.hw])
                    {
                        *xh = (xv - mean) * r;
                        *yv = gamma[ch] * *xh + beta[ch];
                    }
                }
            }
        }
    }

    /// Scale and shift gradients into `grad` (added when `acc`); the input gradient into `dx`
    /// (overwritten) when given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        params: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        xhat: &[f32],
        rstd: &[f32],
        grad: &mut [f32],
        acc: bool,
        rows: usize,
    ) {
        let gamma = &params[self.w_off..][..self.c];
        let hw = self.hw;
        for ch in 0..self.c {
            let (mut sg, mut sb) = (0.0f64, 0.0f64);
            for b in 0..rows {
                let o = self.at(ch, b, rows);
                for (&g, &xh) in dy[o..o + hw].iter().zip(&xhat[o..o + hw]) {
                    sg += (g * xh) as f64;
                    sb += g as f64;
                }
            }
            let (gw, gb) = (self.w_off + ch, self.b_off + ch);
            if acc {
                grad[gw] += sg as f32;
                grad[gb] += sb as f32;
            } else {
                grad[gw] = sg as f32;
                grad[gb] = sb as f32;
            }
        }
        let Some(dx) = dx else { return };
        let cpg = self.c / self.groups;
        let n = (cpg * hw) as f64;
        for b in 0..rows {
            for g in 0..self.groups {
                let chans = g * cpg..(g + 1) * cpg;
                let (mut m1, mut m2) = (0.0f64, 0.0f64);
                for ch in chans.clone() {
                    let o = self.at(ch, b, rows);
                    for (&d, &xh) in dy[o..o + hw].iter().zip(&xhat[o..o + hw]) {
                        let dh = (d * gamma[ch]) as f64;
                        m1 += dh;
                        m2 += dh * xh as f64;
                    }
                }
                let (m1, m2) = ((m1 / n) as f32, (m2 / n) as f32);
                let r = rstd[b * self.groups + g];
                for ch in chans {
                    let o = self.at(ch, b, rows);
                    for ((dxv, &d), &xh) in dx[o..o + hw]
                        .iter_mut()
                        .zip(&dy[o..o + hw])
                        .zip(&xhat[o..o + hw])
                    {
                        *dxv = r * (d * gamma[ch] - m1 - xh * m2);
                    }
                }
            }
        }
    }
}
