//! MIFA (Gu et al., 2021), a baseline of FedAU's paper (`../shared/algorithms.md` §2.5): the server keeps
//! the latest update of every client (zero until it first reports) and applies their mean over all N
//! clients every round: `u_n ← Δ_n` for reporting n, `x ← x + η · (1/N) Σ_n u_n`.
//!
//! Memory: N model-sized vectors on the server (allocated as clients first report), plus a running sum.

use serde::{Deserialize, Serialize};

use super::fedavg::local_sgd_delta;
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

/// MIFA settings (`[strategy] kind = "mifa"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MifaConfig {
    /// Server learning rate η.
    #[serde(default = "one")]
    pub server_lr: f32,
}

fn one() -> f32 {
    1.0
}

/// MIFA's server state.
#[derive(Debug)]
pub struct Mifa {
    config: MifaConfig,
    dim: usize,
    latest: Vec<Option<Vec<f32>>>,
    /// Σ_n u_n, kept incrementally.
    total: Vec<f64>,
}

impl Mifa {
    /// A new MIFA instance.
    pub fn new(config: MifaConfig) -> Self {
        Self {
            config,
            dim: 0,
            latest: Vec::new(),
            total: Vec::new(),
        }
    }
}

impl Strategy for Mifa {
    fn name(&self) -> String {
        "mifa".into()
    }

    fn init(&mut self, init: &Init<'_>) {
        self.dim = init.global.len();
        self.latest = vec![None; init.num_clients];
        self.total = vec![0.0; self.dim];
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], _global: &[f32]) {}

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let delta = dense::take_delta(reporter.id, &mut update, self.dim)?;
        let slot = &mut self.latest[reporter.id as usize];
        match slot {
            Some(old) => {
                for ((t, o), d) in self.total.iter_mut().zip(old.iter()).zip(&delta) {
                    *t += *d as f64 - *o as f64;
                }
            }
            None => {
                for (t, d) in self.total.iter_mut().zip(&delta) {
                    *t += *d as f64;
                }
            }
        }
        *slot = Some(delta);
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        let scale = self.config.server_lr as f64 / self.latest.len().max(1) as f64;
        for (x, t) in global.iter_mut().zip(&self.total) {
            *x += (scale * t) as f32;
        }
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        let stored = self.latest.iter().flatten().count();
        vec![("server_state_bytes".into(), (stored * self.dim * 4) as f64)]
    }

    fn save_state(&self) -> Payload {
        save_latest(&self.latest, self.dim).with(TOTAL, TensorData::vector_f64(&self.total))
    }

    fn load_state(&mut self, mut state: Payload) -> Result<(), StrategyError> {
        self.latest = load_latest(&mut state, self.latest.len(), self.dim)?;
        self.total = take_f64(&mut state, TOTAL, self.dim)?;
        Ok(())
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        _state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        local_sgd_delta(trainer, task)
    }
}

const TOTAL: &str = "total";
const LATEST_IDS: &str = "latest_ids";
const LATEST: &str = "latest";

/// Takes the f64 vector `name` of exactly `len` values out of saved state.
pub(crate) fn take_f64(
    state: &mut Payload,
    name: &str,
    len: usize,
) -> Result<Vec<f64>, StrategyError> {
    match state.take(name) {
        Some(TensorData::F64 { values, .. }) if values.len() == len => Ok(values),
        Some(_) => Err(StrategyError::InvalidState(format!(
            "`{name}` is not an f64 vector of {len} values"
        ))),
        None => Err(StrategyError::InvalidState(format!("`{name}` is missing"))),
    }
}

/// Saves the latest update of every client that has one: their ids and the updates back to back.
pub(crate) fn save_latest(latest: &[Option<Vec<f32>>], dim: usize) -> Payload {
    let ids: Vec<u32> = (0..latest.len() as u32)
        .filter(|&n| latest[n as usize].is_some())
        .collect();
    let mut values = Vec::with_capacity(ids.len() * dim);
    for u in latest.iter().flatten() {
        values.extend_from_slice(u);
    }
    Payload::new()
        .with(LATEST_IDS, TensorData::U32 { values: ids })
        .with(LATEST, TensorData::vector(values))
}

/// Restores what [`save_latest`] wrote for `clients` clients of dimension `dim`.
pub(crate) fn load_latest(
    state: &mut Payload,
    clients: usize,
    dim: usize,
) -> Result<Vec<Option<Vec<f32>>>, StrategyError> {
    let bad = |m: String| StrategyError::InvalidState(m);
    let ids = match state.take(LATEST_IDS) {
        Some(TensorData::U32 { values }) => values,
        _ => return Err(bad(format!("`{LATEST_IDS}` is missing or not u32"))),
    };
    let values = state.take_dense(LATEST, ids.len() * dim).map_err(bad)?;
    let mut latest = vec![None; clients];
    for (id, chunk) in ids.iter().zip(values.chunks_exact(dim.max(1))) {
        let slot = latest
            .get_mut(*id as usize)
            .ok_or_else(|| bad(format!("client {id} out of range ({clients} clients)")))?;
        *slot = Some(chunk.to_vec());
    }
    Ok(latest)
}

impl Kind<Strategies> for MifaConfig {
    const KIND: &'static str = "mifa";
    const SUMMARY: &'static str =
        "MIFA: the latest update of every client (N model-sized vectors on the server)";

    fn capabilities(&self) -> Capabilities {
        Capabilities::DENSE_DELTA
    }

    fn validate(&self) -> Result<(), ConfigError> {
        super::positive("server_lr", self.server_lr)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(Mifa::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::{init_plain, send_delta};

    #[test]
    fn stale_updates_keep_counting() {
        let mut m = Mifa::new(MifaConfig { server_lr: 1.0 });
        init_plain(&mut m, &[0.0], 2);
        let mut g = vec![0.0f32];
        let send = |m: &mut Mifa, id, v| send_delta(m, id, vec![v]);
        m.begin_round(0, &[0], &g);
        send(&mut m, 0, 2.0);
        m.finish_round(0, &mut g, &[0]);
        assert_eq!(g, vec![1.0], "(2 + 0) / 2");
        m.begin_round(1, &[1], &g);
        send(&mut m, 1, 4.0);
        m.finish_round(1, &mut g, &[1]);
        assert_eq!(
            g,
            vec![4.0],
            "client 0's stale 2 still counts: 1 + (2 + 4) / 2"
        );
    }
}
