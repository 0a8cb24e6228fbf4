//! The logits of a batch, for model-file checks against other frameworks (the training and evaluation
//! paths reduce them to a loss inside the pass).

use ndarray::{Array2, ArrayView2};

use super::{Mode, Sequential};
use crate::{Scratch, ops};

impl Sequential {
    /// The logits (`rows × classes`) of every sample of `x`, computed as evaluation computes them
    /// (dropout off).
    pub fn logits(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Array2<f32> {
        let (rows, f, k) = (x.nrows(), self.input.len(), self.classes);
        let mut out = Array2::zeros((rows, k));
        if rows == 0 {
            return out;
        }
        let mut scratch = Scratch::default();
        let mb = rows.min(self.eval_rows);
        let mut xbuf = ops::take_input_buf(&mut scratch);
        let mut a = Vec::new();
        self.size_arena(&mut a, mb, false);
        let xs = ops::batch_slice(&x, &mut xbuf);
        for s in (0..rows).step_by(mb) {
            let e = (s + mb).min(rows);
            self.load(&xs[s * f..e * f], e - s, &mut a);
            self.forward_seq(&self.nodes, params, e - s, &mut a, Mode::Eval);
            let src = &a[self.out.act][..(e - s) * k];
            for (r, row) in src.chunks_exact(k).enumerate() {
                out.row_mut(s + r)
                    .iter_mut()
                    .zip(row)
                    .for_each(|(o, v)| *o = *v);
            }
        }
        out
    }
}
