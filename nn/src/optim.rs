//! Local optimiser: SGD with optional momentum and weight decay.

/// Plain SGD with heavy-ball momentum and L2 weight decay (PyTorch convention:
/// `g += wd·w; v = μ·v + g; w -= lr·v`).
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Momentum μ (0 disables the velocity buffer).
    pub momentum: f32,
    /// Weight decay coefficient.
    pub weight_decay: f32,
    velocity: Vec<f32>,
}

impl Sgd {
    /// A fresh optimiser (zero velocity).
    pub fn new(momentum: f32, weight_decay: f32) -> Self {
        Self {
            momentum,
            weight_decay,
            velocity: Vec::new(),
        }
    }

    /// Applies one step with learning rate `lr` to `params` given `grad`.
    pub fn step(&mut self, lr: f32, params: &mut [f32], grad: &[f32]) {
        debug_assert_eq!(params.len(), grad.len());
        let wd = self.weight_decay;
        if self.momentum == 0.0 {
            if wd == 0.0 {
                for (w, g) in params.iter_mut().zip(grad) {
                    *w -= lr * g;
                }
            } else {
                for (w, g) in params.iter_mut().zip(grad) {
                    *w -= lr * (g + wd * *w);
                }
            }
            return;
        }
        if self.velocity.len() != params.len() {
            self.velocity = vec![0.0; params.len()];
        }
        let mu = self.momentum;
        for ((w, g), v) in params.iter_mut().zip(grad).zip(self.velocity.iter_mut()) {
            let d = g + wd * *w;
            *v = mu * *v + d;
            *w -= lr * *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_step() {
        let mut p = vec![1.0, 2.0];
        Sgd::new(0.0, 0.0).step(0.5, &mut p, &[2.0, -2.0]);
        assert_eq!(p, vec![0.0, 3.0]);
    }

    #[test]
    fn momentum_accumulates() {
        let mut p = vec![0.0];
        let mut s = Sgd::new(0.9, 0.0);
        s.step(1.0, &mut p, &[1.0]);
        s.step(1.0, &mut p, &[1.0]);
        assert!((p[0] + 2.9).abs() < 1e-6);
    }
}
