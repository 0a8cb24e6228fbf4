//! FedAvg with an EF21-compressed uplink: **EF21-LT (heuristic)**, `../shared/algorithms.md` §4.6
//! (`kind = "fedavg_ef21"`).
//!
//! None of the EF21 papers has local steps; this strategy applies the EF21 recursion to model deltas of
//! local training, which is not analysed anywhere. Client i runs FedAvg's local SGD from `x` (the
//! `[train]` section), gets `Δ_i = w_i − x`, and keeps `h_i`, its estimate of `Δ_i`:
//! - first participation: sends `Δ_i` dense (`init = "exact"`) or `C(Δ_i)` (`"compressed"`), `h_i = that`;
//! - afterwards: `c_i = C(Δ_i − h_i)`, `h_i ← h_i + c_i`, sends `c_i` (encoded bytes).
//!
//! The server keeps `h̄ = (1/N) Σ_i h_i` over all N registered clients (never-seen clients count as
//! `h_i = 0`, absent ones with their stale `h_i`, as in EF21-PP) by adding `(1/N) c_i`, and after a round
//! with at least one accepted update sets `x ← x + η_g h̄` (`server_lr`). A round without reports keeps
//! the model. The deltas are in model units, so `server_lr = 1` with full participation and the identity
//! compressor is FedAvg with uniform weights.
//!
//! Client state `h_i` is stored in f32 (model-sized vectors for every client of a simulation); the server
//! accumulates in f64, so client and server views differ by f32 rounding only. Metrics: `bits_paper` and
//! `bits_paper_cum` as in [`super::ef21`].

use serde::{Deserialize, Serialize};

use super::ef21::{DIFF, INIT_COMPRESSED, INIT_DENSE, InitMode};
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies, UpdateKind};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense};
use crate::compress::{CompressError, Compressor, CompressorSpec, Precision, TopKConfig};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

const STATE_H: &str = "h";

/// Settings of `kind = "fedavg_ef21"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvgEf21Config {
    /// Server learning rate η_g.
    #[serde(default = "one")]
    pub server_lr: f32,
    /// The uplink compressor (default Top-k keeping 1% of the coordinates).
    #[serde(default = "default_compressor")]
    pub compressor: CompressorSpec,
    /// First upload of a client: dense `Δ_i` or `C(Δ_i)`.
    #[serde(default)]
    pub init: InitMode,
}

fn one() -> f32 {
    1.0
}

fn default_compressor() -> CompressorSpec {
    CompressorSpec::new(TopKConfig {
        k: None,
        fraction: Some(0.01),
        precision: Precision::F32,
    })
}

impl Default for FedAvgEf21Config {
    fn default() -> Self {
        Self {
            server_lr: 1.0,
            compressor: default_compressor(),
            init: InitMode::Exact,
        }
    }
}

impl FedAvgEf21Config {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        super::positive("server_lr", self.server_lr)?;
        self.compressor.validate().map(|_| ())
    }
}

/// FedAvg with an EF21-compressed uplink (heuristic).
#[derive(Debug)]
pub struct FedAvgEf21 {
    config: FedAvgEf21Config,
    dim: usize,
    num_clients: usize,
    compressor: Option<Box<dyn Compressor>>,
    hbar: Vec<f64>,
    initialised: Vec<bool>,
    reported: usize,
    bits_round: u64,
    bits_cum: u64,
}

impl FedAvgEf21 {
    /// A new instance.
    pub fn new(config: FedAvgEf21Config) -> Self {
        Self {
            config,
            dim: 0,
            num_clients: 0,
            compressor: None,
            hbar: Vec::new(),
            initialised: Vec::new(),
            reported: 0,
            bits_round: 0,
            bits_cum: 0,
        }
    }

    /// The server's `h̄ = (1/N) Σ h_i`.
    pub fn hbar(&self) -> &[f64] {
        &self.hbar
    }
}

fn invalid(client: ClientId, msg: impl Into<String>) -> StrategyError {
    StrategyError::InvalidUpdate {
        client,
        msg: msg.into(),
    }
}

impl Strategy for FedAvgEf21 {
    fn update_tensors(&self) -> Vec<String> {
        [INIT_DENSE, INIT_COMPRESSED, DIFF]
            .map(String::from)
            .to_vec()
    }

    fn name(&self) -> String {
        "fedavg_ef21".into()
    }

    fn init(&mut self, init: &Init<'_>) {
        self.dim = init.global.len();
        self.num_clients = init.num_clients;
        self.hbar = vec![0.0; self.dim];
        self.initialised = vec![false; self.num_clients];
        // The configuration was validated with the scenario; an invalid one leaves no compressor, and
        // every update is then refused.
        self.compressor = self
            .config
            .compressor
            .validate()
            .ok()
            .map(|v| v.build(self.dim));
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], _global: &[f32]) {
        self.reported = 0;
        self.bits_round = 0;
    }

    fn validate_update(
        &self,
        client: ClientId,
        update: &Payload,
        _num_params: usize,
    ) -> Result<(), StrategyError> {
        update.validate().map_err(|m| invalid(client, m))?;
        let comp = self
            .compressor
            .as_deref()
            .ok_or_else(|| invalid(client, "strategy used before init"))?;
        for t in &update.tensors {
            if let TensorData::Bytes { bytes } = &t.data {
                comp.check_header(bytes)
                    .map_err(|e| invalid(client, format!("tensor `{}`: {e}", t.name)))?;
            }
        }
        Ok(())
    }

    fn accept(&mut self, reporter: Reporter, update: Payload) -> Result<(), StrategyError> {
        let id = reporter.id;
        let i = id as usize;
        if i >= self.num_clients {
            return Err(invalid(id, "client id out of range"));
        }
        let comp = self
            .compressor
            .as_deref()
            .ok_or_else(|| invalid(id, "strategy used before init"))?;
        let cerr = |e: CompressError| invalid(id, e.to_string());
        let w = 1.0 / self.num_clients as f64;
        if update.tensors.len() != 1 {
            return Err(invalid(id, "expected exactly one tensor"));
        }
        let t = &update.tensors[0];
        match (t.name.as_str(), &t.data) {
            (INIT_DENSE, TensorData::F32 { values, .. }) if values.len() == self.dim => {
                if self.initialised[i] {
                    return Err(invalid(id, "second initialisation of h_i"));
                }
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(invalid(id, "non-finite delta"));
                }
                for (h, v) in self.hbar.iter_mut().zip(values) {
                    *h += w * *v as f64;
                }
                self.initialised[i] = true;
            }
            (INIT_COMPRESSED, TensorData::Bytes { bytes }) => {
                if self.initialised[i] {
                    return Err(invalid(id, "second initialisation of h_i"));
                }
                comp.decode_add(bytes, w, &mut self.hbar).map_err(cerr)?;
                self.bits_round += comp.paper_bits();
                self.initialised[i] = true;
            }
            (DIFF, TensorData::Bytes { bytes }) => {
                if !self.initialised[i] {
                    return Err(invalid(id, "compressed update before h_i was initialised"));
                }
                comp.decode_add(bytes, w, &mut self.hbar).map_err(cerr)?;
                self.bits_round += comp.paper_bits();
            }
            (name, _) => {
                return Err(invalid(
                    id,
                    format!(
                        "unexpected tensor `{name}` (expected dense `{INIT_DENSE}` of {} values, or bytes `{INIT_COMPRESSED}` / `{DIFF}`)",
                        self.dim
                    ),
                ));
            }
        }
        self.reported += 1;
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if self.reported > 0 {
            let eta = self.config.server_lr as f64;
            for (x, h) in global.iter_mut().zip(&self.hbar) {
                *x = (*x as f64 + eta * h) as f32;
            }
        }
        self.bits_cum += self.bits_round;
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        let n = self.num_clients.max(1) as f64;
        vec![
            ("bits_paper".into(), self.bits_round as f64 / n),
            ("bits_paper_cum".into(), self.bits_cum as f64 / n),
        ]
    }

    fn save_state(&self) -> Payload {
        Payload::new()
            .with(
                "hbar",
                TensorData::F64 {
                    shape: vec![self.dim],
                    values: self.hbar.clone(),
                },
            )
            .with(
                "initialised",
                TensorData::Bytes {
                    bytes: self.initialised.iter().map(|&b| u8::from(b)).collect(),
                },
            )
            .with(
                "bits_cum",
                TensorData::Scalar {
                    value: self.bits_cum as f64,
                },
            )
    }

    fn load_state(&mut self, state: Payload) -> Result<(), StrategyError> {
        let bad = |m: &str| StrategyError::InvalidState(format!("fedavg_ef21: {m}"));
        let hbar = match state.get("hbar") {
            Some(TensorData::F64 { values, .. }) if values.len() == self.dim => values.clone(),
            _ => return Err(bad("`hbar` missing or wrong length")),
        };
        let initialised = match state.get("initialised") {
            Some(TensorData::Bytes { bytes }) if bytes.len() == self.num_clients => {
                bytes.iter().map(|&b| b != 0).collect()
            }
            _ => return Err(bad("`initialised` missing or wrong length")),
        };
        let bits = state.scalar("bits_cum").map_err(|m| bad(&m))?;
        self.hbar = hbar;
        self.initialised = initialised;
        self.bits_cum = bits.max(0.0) as u64;
        Ok(())
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let d = trainer.model.num_params();
        let client = trainer.client;
        let x = dense::task_model(task, d)?;
        let mut local = x.clone();
        trainer.sgd(&mut local, None);
        let delta: Vec<f64> = local
            .iter()
            .zip(&x)
            .map(|(w, x)| (*w as f64) - (*x as f64))
            .collect();
        let comp = self
            .config
            .compressor
            .validate()
            .map_err(|e| StrategyError::InvalidTask(e.to_string()))?
            .build(d);
        let cerr = |e: CompressError| invalid(client, e.to_string());
        let mut buf = Vec::with_capacity(comp.encoded_len());
        let h = match state.get(STATE_H) {
            Some(TensorData::F32 { values, .. }) if values.len() == d => Some(values.clone()),
            _ => None,
        };
        let Some(mut h) = h else {
            return match self.config.init {
                InitMode::Exact => {
                    let v: Vec<f32> = delta.iter().map(|&v| v as f32).collect();
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(invalid(client, "non-finite local delta"));
                    }
                    state.push(STATE_H, TensorData::vector(v.clone()));
                    Ok(Payload::new().with(INIT_DENSE, TensorData::vector(v)))
                }
                InitMode::Compressed => {
                    comp.encode(&delta, &mut trainer.rng, &mut buf)
                        .map_err(cerr)?;
                    let mut h0 = vec![0.0; d];
                    comp.decode(&buf, &mut h0).map_err(cerr)?;
                    state.push(
                        STATE_H,
                        TensorData::vector(h0.iter().map(|&v| v as f32).collect()),
                    );
                    Ok(Payload::new().with(INIT_COMPRESSED, TensorData::Bytes { bytes: buf }))
                }
            };
        };
        let diff: Vec<f64> = delta.iter().zip(&h).map(|(a, b)| a - *b as f64).collect();
        comp.encode(&diff, &mut trainer.rng, &mut buf)
            .map_err(cerr)?;
        let mut c = vec![0.0; d];
        comp.decode(&buf, &mut c).map_err(cerr)?;
        for (h, c) in h.iter_mut().zip(&c) {
            *h = (*h as f64 + c) as f32;
        }
        state.push(STATE_H, TensorData::vector(h));
        Ok(Payload::new().with(DIFF, TensorData::Bytes { bytes: buf }))
    }
}

impl Kind<Strategies> for FedAvgEf21Config {
    const KIND: &'static str = "fedavg_ef21";
    const SUMMARY: &'static str =
        "FedAvg with an EF21-compressed uplink (\"EF21-LT\", a heuristic; client state g_i)";
    const EXAMPLE: &'static str = "compressor = { kind = \"top_k\", fraction = 0.05 }";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            update: UpdateKind::Other,
            client_state: true,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        FedAvgEf21Config::validate(self)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedAvgEf21::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::IdentityConfig;
    use crate::strategy::fedavg::{FedAvg, FedAvgConfig, Weighting};
    use crate::strategy::testutil::two_clients;

    #[test]
    fn identity_uplink_is_uniform_fedavg() {
        let mut lt = FedAvgEf21::new(FedAvgEf21Config {
            compressor: CompressorSpec::new(IdentityConfig {
                precision: Precision::F64,
            }),
            ..FedAvgEf21Config::default()
        });
        let a = two_clients(&mut lt, 5);
        let b = two_clients(
            &mut FedAvg::new(FedAvgConfig {
                server_lr: 1.0,
                weighting: Weighting::Uniform,
                ..FedAvgConfig::default()
            }),
            5,
        );
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn compressed_uplink_still_converges_on_one_coordinate() {
        // d = 1, Top-1 is the identity; with `init = "compressed"` the first upload is counted.
        let mut lt = FedAvgEf21::new(FedAvgEf21Config {
            init: InitMode::Compressed,
            ..FedAvgEf21Config::default()
        });
        let x = two_clients(&mut lt, 50);
        let y = two_clients(
            &mut FedAvg::new(FedAvgConfig {
                server_lr: 1.0,
                weighting: Weighting::Uniform,
                ..FedAvgConfig::default()
            }),
            50,
        );
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        assert!(lt.bits_cum > 0);
    }
}
