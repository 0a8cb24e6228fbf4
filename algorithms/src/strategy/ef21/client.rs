//! The client half of the EF21 family: the local update (one local gradient, compressed against `g_i` or
//! accumulated into `e_i`) and its helpers.

use rand::seq::index;

use super::{
    DIFF, EF_V, Ef21, FRESH, GAMMA, INIT_COMPRESSED, INIT_DENSE, InitMode, L_AM, MODEL_F64,
    STATE_E, STATE_G, STATE_L, Variant,
};
use crate::compress::{CompressError, CompressorSpec, Precision};
use crate::strategy::{ClientState, StrategyError};
use crate::{LocalTrainer, Payload, TensorData};

impl Ef21 {
    /// The client half ([`Strategy::local_update`](crate::strategy::Strategy::local_update)): one local
    /// gradient at the broadcast `x`, compressed into this round's update.
    pub(super) fn client_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let d = trainer.model.num_params();
        let client = trainer.client;
        let x = match task.get(MODEL_F64) {
            Some(TensorData::F64 { values, .. }) if values.len() == d => values.as_slice(),
            _ => {
                return Err(StrategyError::InvalidTask(format!(
                    "`{MODEL_F64}` must be a dense f64 vector of {d} values"
                )));
            }
        };
        let comp = self
            .config
            .compressor_spec(self.variant)
            .validate()
            .map_err(|e| StrategyError::InvalidTask(e.to_string()))?
            .build(d);
        let mut grad = vec![0.0f64; d];
        let mut buf = Vec::with_capacity(comp.encoded_len());
        let cerr = |e: CompressError| Self::invalid(client, e.to_string());

        if self.variant == Variant::Ef {
            let gamma = task.scalar(GAMMA).map_err(StrategyError::InvalidTask)?;
            local_gradient(trainer, x, self.config.batch_fraction, &mut grad)?;
            let mut e = state_vec(state, STATE_E, d).unwrap_or_else(|| vec![0.0; d]);
            for (e, g) in e.iter_mut().zip(&grad) {
                *e += gamma * g;
            }
            comp.encode(&e, &mut trainer.rng, &mut buf).map_err(cerr)?;
            // e ← e + γ∇f − v.
            comp.decode_add(&buf, -1.0, &mut e).map_err(cerr)?;
            state.push(STATE_E, TensorData::vector_f64(&e));
            return Ok(Payload::new().with(EF_V, TensorData::Bytes { bytes: buf }));
        }

        let g_state = state_vec(state, STATE_G, d);
        // Exact initialisation uses the full local gradient; every other gradient follows batch_fraction.
        let init_mode = self.config.init.unwrap_or_default();
        let fraction = if g_state.is_none() && init_mode == InitMode::Exact {
            None
        } else {
            self.config.batch_fraction
        };
        local_gradient(trainer, x, fraction, &mut grad)?;
        if self.variant == Variant::Ef21W {
            let l_am = task.scalar(L_AM).map_err(StrategyError::InvalidTask)?;
            let l_i = match state.scalar(STATE_L) {
                Ok(v) => v,
                Err(_) => {
                    let l = trainer
                        .model
                        .smoothness(trainer.data.dataset.view(), trainer.data.indices)
                        .ok_or_else(|| {
                            StrategyError::InvalidTask(format!(
                                "ef21_w needs a model that states its smoothness (model {} does not)",
                                trainer.model.name()
                            ))
                        })?;
                    state.push(STATE_L, TensorData::Scalar { value: l });
                    l
                }
            };
            // ∇φ_i = (1/(n w_i)) ∇f_i = (L_AM/L_i) ∇f_i.
            let s = l_am / l_i;
            grad.iter_mut().for_each(|v| *v *= s);
        }

        let Some(mut g) = g_state else {
            // First participation: initialise g_i.
            let precision = init_precision(&self.config.compressor_spec(self.variant));
            let (name, data, g0) = match init_mode {
                InitMode::Exact => {
                    let g0: Vec<f64> = grad.iter().map(|&v| precision.round(v)).collect();
                    if let Some(j) = g0.iter().position(|v| !v.is_finite()) {
                        return Err(Self::invalid(
                            client,
                            format!("gradient value {j} is not finite"),
                        ));
                    }
                    let data = match precision {
                        Precision::F64 => TensorData::vector_f64(&g0),
                        Precision::F32 => {
                            TensorData::vector(g0.iter().map(|&v| v as f32).collect())
                        }
                    };
                    (INIT_DENSE, data, g0)
                }
                InitMode::Compressed => {
                    comp.encode(&grad, &mut trainer.rng, &mut buf)
                        .map_err(cerr)?;
                    let mut g0 = vec![0.0; d];
                    comp.decode(&buf, &mut g0).map_err(cerr)?;
                    (INIT_COMPRESSED, TensorData::Bytes { bytes: buf }, g0)
                }
            };
            state.push(STATE_G, TensorData::vector_f64(&g0));
            return Ok(Payload::new().with(name, data));
        };

        // c = C(∇ − g); the client applies exactly what the server will decode.
        let diff: Vec<f64> = grad.iter().zip(&g).map(|(a, b)| a - b).collect();
        comp.encode(&diff, &mut trainer.rng, &mut buf)
            .map_err(cerr)?;
        comp.decode_add(&buf, 1.0, &mut g).map_err(cerr)?;
        if self.variant == Variant::Ef21Plus {
            let mut fresh_buf = Vec::with_capacity(comp.encoded_len());
            comp.encode(&grad, &mut trainer.rng, &mut fresh_buf)
                .map_err(cerr)?;
            let mut b = vec![0.0; d];
            comp.decode(&fresh_buf, &mut b).map_err(cerr)?;
            let dist = |v: &[f64]| {
                v.iter()
                    .zip(&grad)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
            };
            if dist(&b) < dist(&g) {
                state.push(STATE_G, TensorData::vector_f64(&b));
                return Ok(Payload::new().with(FRESH, TensorData::Bytes { bytes: fresh_buf }));
            }
        }
        state.push(STATE_G, TensorData::vector_f64(&g));
        Ok(Payload::new().with(DIFF, TensorData::Bytes { bytes: buf }))
    }
}

/// Wire precision of a dense exact initialisation: the compressor's value precision (f32 for natural).
fn init_precision(spec: &CompressorSpec) -> Precision {
    spec.capabilities().precision
}

/// A client-state vector of length `d`, if present.
pub fn state_vec(state: &ClientState, name: &str, d: usize) -> Option<Vec<f64>> {
    match state.get(name) {
        Some(TensorData::F64 { values, .. }) if values.len() == d => Some(values.clone()),
        _ => None,
    }
}

/// `∇f_i(x)` in f64 into `grad`: the gradient of the client's mean loss on all its rows, or (with
/// `batch_fraction = Some(p)`) on `⌊p·n_i⌋` rows (at least 1) drawn without replacement from the client's
/// random stream. Uses the model's f64 path when it has one, else its f32 gradient.
pub fn local_gradient(
    trainer: &mut LocalTrainer<'_>,
    x: &[f64],
    batch_fraction: Option<f64>,
    grad: &mut [f64],
) -> Result<(), StrategyError> {
    let data = trainer.data;
    let n = data.len();
    let sample: Option<Vec<u32>> = match batch_fraction {
        Some(p) if n > 0 => {
            let tau = ((p * n as f64).floor() as usize).clamp(1, n);
            (tau < n).then(|| {
                let mut ix: Vec<u32> = index::sample(&mut trainer.rng, n, tau)
                    .into_iter()
                    .map(|i| data.indices[i])
                    .collect();
                ix.sort_unstable();
                ix
            })
        }
        _ => None,
    };
    let rows: &[u32] = sample.as_deref().unwrap_or(data.indices);
    let ds = data.dataset;
    let contiguous = !rows.is_empty() && rows.windows(2).all(|w| w[1] == w[0] + 1);
    let done = if contiguous {
        let (s, e) = (rows[0] as usize, rows[0] as usize + rows.len());
        trainer
            .model
            .loss_grad_f64(x, ds.x.slice(ndarray::s![s..e, ..]), &ds.y[s..e], grad)
            .is_some()
    } else {
        let xs = ndarray::Array2::from_shape_fn((rows.len(), ds.features()), |(r, c)| {
            ds.x[[rows[r] as usize, c]]
        });
        let ys: Vec<u32> = rows.iter().map(|&r| ds.y[r as usize]).collect();
        trainer
            .model
            .loss_grad_f64(x, xs.view(), &ys, grad)
            .is_some()
    };
    if !done {
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut g32 = vec![0.0f32; x.len()];
        trainer.loss_grad_on(&x32, rows, &mut g32);
        for (o, v) in grad.iter_mut().zip(&g32) {
            *o = *v as f64;
        }
    }
    match grad.iter().position(|v| !v.is_finite()) {
        Some(j) => Err(StrategyError::InvalidUpdate {
            client: trainer.client,
            msg: format!("local gradient value {j} is not finite"),
        }),
        None => Ok(()),
    }
}
