//! The EF21 family (`../shared/algorithms.md` §4): error feedback with contractive compression, one
//! gradient per client per round, no local steps.
//!
//! Registered kinds (all share [`Ef21Config`]):
//!
//! | kind | algorithm |
//! |---|---|
//! | `ef21` | EF21 (Richtárik, Sokolov, Fatkhullin 2021), §4.2. Under partial participation it is EF21-PP (§4.6); with `batch_fraction` EF21-SGD |
//! | `ef21_w` | EF21-W (Richtárik, Gasanov, Burlachenko 2024), §4.7: client i tracks `(L_AM/L_i)∇f_i`, server `g = Σ w_i g_i`, `w_i = L_i/Σ L_j` |
//! | `ef21_plus` | EF21+ (§4.5): each client keeps the closer of `g_i + C(∇f_i − g_i)` and `C(∇f_i)` |
//! | `ef` | classic error feedback (Seide et al. 2014 / Stich), §4.5: `v_i = C(e_i + γ∇f_i)`, `e_i ← e_i + γ∇f_i − v_i` |
//! | `gd` | uncompressed distributed gradient descent (EF21 with the identity compressor) |
//!
//! Round `t` of the engine: the server broadcasts `x^t` (dense f64). Client i computes `∇f_i(x^t)` (the
//! gradient of its local mean loss on all its data, or on `⌊batch_fraction·n_i⌋` rows drawn without
//! replacement from its random stream) and
//! - EF21: on first participation sends `g_i = ∇f_i(x^t)` (dense, `init = "exact"`, the reference code)
//!   or `C(∇f_i(x^t))` (`init = "compressed"`, the paper's algorithm box); afterwards
//!   `c_i = C(∇f_i(x^t) − g_i)` and `g_i ← g_i + c_i`;
//! - EF: `v_i = C(e_i + γ∇f_i(x^t))`, `e_i ← e_i + γ∇f_i(x^t) − v_i` (`e_i = 0` at first).
//!
//! The server adds `(1/n) c_i` (EF21-W: `w_i c_i`) to `g` as updates arrive and ends the round with
//! `x^{t+1} = x^t − γ g` (EF: `x^{t+1} = x^t − (1/n) Σ v_i`). Absent clients keep their stale `g_i` inside
//! the mean: `g` is never renormalised by `|S_t|`. `x` is kept in f64 in the server state and mirrored into
//! the engine's f32 model after every round (for evaluation and hashes).
//!
//! **Lazy initialisation (deviation from the reference code).** The reference EF21-PP code initialises
//! every `g_i` at round 0. Here a client initialises when it first participates (its `g_i^0` is the gradient
//! at the then-current model), and `g` counts never-seen clients as `g_i = 0`. Under full participation the
//! two coincide.
//!
//! Step size: `step_size` if given, else `multiplier / (L + L_c·ξ(α))` with `ξ(α) = √(1−α)/(1 − √(1−α))`,
//! α the compressor's contraction parameter and `L_c = L_QM` (`step = "l_qm"`, the EF21 theorem; default
//! except for `ef21_w`) or `L_AM` (`step = "l_am"`, Error Feedback Reloaded; default for `ef21_w`). With
//! α = 1 this is `multiplier/L` (GD). EF21-PP and EF21-SGD use the plain EF21 value, as the reference code.
//! The constants `L_i = λ_max(A_iᵀA_i)/(4 n_i) + 2λ`, `L` (same on all rows), `L_QM = √(mean L_i²)`,
//! `L_AM = mean L_i` are computed at `init` from the data and partition for the `logreg_nonconvex` model
//! (λ read from the model); other models need an explicit `step_size` (and cannot run `ef21_w`).
//!
//! Wire: updates carry the compressed vector as an encoded byte buffer (`TensorData::Bytes`, see
//! [`crate::compress`]) so `bytes_up` counts the exact bytes. Metrics per round: `bits_paper` (bits of this
//! round in the papers' convention — 32 bits per kept value, indices and the dense `g_i^0` not counted —
//! summed over reporting clients and divided by n, so it is "#bits/n") and `bits_paper_cum` (cumulative);
//! in round 1 also `ef21_gamma`, `ef21_alpha`, `ef21_L`, `ef21_L_QM`, `ef21_L_AM` (where known); while not
//! every client has initialised, `ef21_initialised`.
//!
//! Memory: server `x`, `g` (2d); EF21+ also a copy of every `g_i` (n·d), because a client that switches to
//! `C(∇f_i)` replaces its `g_i` and the server must subtract the old one. Client state: `g_i` (EF: `e_i`),
//! d f64 values, kept by the runtime. A client process that loses its state cannot rejoin: its second
//! initialisation is rejected (the server has no copy of the old `g_i` to replace).

use rand::seq::index;
use serde::{Deserialize, Serialize};

use super::{ClientState, Init, Reporter, Strategy, StrategyError};
use super::registry::{Capabilities, StrategyKind, UpdateKind};
use fedsim_types::ConfigError;
use crate::compress::{CompressError, Compressor, CompressorSpec, Precision};
use crate::{ClientId, LocalTrainer, Payload, TensorData};

/// Name of the dense f64 model in a broadcast.
pub const MODEL_F64: &str = "x";
/// Name of the step size γ in an EF broadcast.
pub const GAMMA: &str = "gamma";
/// Name of `L_AM` in an EF21-W broadcast.
pub const L_AM: &str = "l_am";
/// Dense initial `g_i^0` in an update.
pub const INIT_DENSE: &str = "g0";
/// Compressed initial `g_i^0 = C(∇f_i)` in an update.
pub const INIT_COMPRESSED: &str = "g0c";
/// Compressed difference `c_i = C(∇f_i − g_i)` in an update.
pub const DIFF: &str = "c";
/// EF21+: compressed fresh gradient `C(∇f_i)` replacing `g_i`.
pub const FRESH: &str = "b";
/// EF: compressed `v_i`.
pub const EF_V: &str = "v";

/// Client state: the client's `g_i` (EF21 variants).
pub const STATE_G: &str = "g";
/// Client state: the error accumulator `e_i` (EF).
pub const STATE_E: &str = "e";
/// Client state: the client's smoothness constant `L_i` (EF21-W).
pub const STATE_L: &str = "l_i";

/// How `g_i^0` is formed (§4.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitMode {
    /// `g_i^0 = ∇f_i(x)`, sent dense once (reference code); not counted in `bits_paper`.
    #[default]
    Exact,
    /// `g_i^0 = C(∇f_i(x))` (the paper's algorithm box); counted.
    Compressed,
}

/// Which mean of the smoothness constants enters the theoretical step size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRule {
    /// `γ = 1/(L + L_QM·ξ(α))` (EF21).
    LQm,
    /// `γ = 1/(L + L_AM·ξ(α))` (Error Feedback Reloaded).
    LAm,
}

/// Settings of the EF21 family (`[strategy] kind = "ef21" | "ef21_w" | "ef21_plus" | "ef" | "gd"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Ef21Config {
    /// The uplink compressor (default Top-1; `gd`: the identity, the only one allowed).
    #[serde(default)]
    pub compressor: Option<CompressorSpec>,
    /// Initialisation of `g_i` (default `exact`; not for `ef`).
    #[serde(default)]
    pub init: Option<InitMode>,
    /// Theoretical step rule (default `l_qm`; `l_am` for `ef21_w`).
    #[serde(default)]
    pub step: Option<StepRule>,
    /// Factor on the theoretical step size (the papers' "multiplier"; default 1).
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// Explicit step size γ, overriding the theory (and the multiplier).
    #[serde(default)]
    pub step_size: Option<f64>,
    /// EF21-SGD: each round a client uses `⌊batch_fraction·n_i⌋` (at least 1) of its rows, drawn without
    /// replacement (the reference code's `prb`). Absent: full local gradient.
    #[serde(default)]
    pub batch_fraction: Option<f64>,
}

/// Which member of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// EF21 (also EF21-PP / EF21-SGD).
    Ef21,
    /// EF21-W.
    Ef21W,
    /// EF21+.
    Ef21Plus,
    /// Classic error feedback.
    Ef,
    /// Distributed GD.
    Gd,
}

impl Variant {
    /// The registry name.
    pub fn kind(self) -> &'static str {
        match self {
            Variant::Ef21 => "ef21",
            Variant::Ef21W => "ef21_w",
            Variant::Ef21Plus => "ef21_plus",
            Variant::Ef => "ef",
            Variant::Gd => "gd",
        }
    }
}

impl Ef21Config {
    /// Checks values for `variant`, naming the bad key.
    pub fn validate(&self, variant: Variant) -> Result<(), String> {
        if let Some(c) = &self.compressor {
            c.validate("strategy.compressor")?;
            if variant == Variant::Gd && !matches!(c, CompressorSpec::Identity { .. }) {
                return Err(
                    "strategy.compressor: kind \"gd\" is uncompressed; use kind = \"identity\" (or leave it out)"
                        .into(),
                );
            }
        }
        if variant == Variant::Ef && self.init.is_some() {
            return Err("strategy.init: EF has no g_i^0 (it starts from e_i = 0)".into());
        }
        if let Some(m) = self.multiplier
            && !(m.is_finite() && m > 0.0)
        {
            return Err(format!("strategy.multiplier must be positive, got {m}"));
        }
        if let Some(s) = self.step_size
            && !(s.is_finite() && s > 0.0)
        {
            return Err(format!("strategy.step_size must be positive, got {s}"));
        }
        if let Some(p) = self.batch_fraction
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return Err(format!(
                "strategy.batch_fraction must be in (0, 1], got {p}"
            ));
        }
        Ok(())
    }

    fn compressor_spec(&self, variant: Variant) -> CompressorSpec {
        match (&self.compressor, variant) {
            (Some(c), _) => c.clone(),
            (None, Variant::Gd) => CompressorSpec::Identity {
                precision: Precision::F32,
            },
            (None, _) => CompressorSpec::default(),
        }
    }

    fn step_rule(&self, variant: Variant) -> StepRule {
        self.step.unwrap_or(if variant == Variant::Ef21W {
            StepRule::LAm
        } else {
            StepRule::LQm
        })
    }
}

/// Smoothness constants of `f = (1/n) Σ f_i` (§4.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Smoothness {
    /// L of f (the formula on all rows).
    pub l: f64,
    /// `L_i` of every client.
    pub l_i: Vec<f64>,
    /// Quadratic mean `√((1/n) Σ L_i²)`.
    pub l_qm: f64,
    /// Arithmetic mean `(1/n) Σ L_i`.
    pub l_am: f64,
}

impl Smoothness {
    /// Constants of `model`'s loss on `data` split by `partition` (`L` on every row of `data`), where
    /// the model states its smoothness ([`fedsim_nn::Model::smoothness`]); `None` otherwise.
    pub fn of_model(
        model: &dyn fedsim_nn::Model,
        data: &fedsim_data::Dataset,
        partition: &fedsim_data::Partition,
    ) -> Option<Self> {
        let all: Vec<u32> = (0..data.len() as u32).collect();
        let l = model.smoothness(data.view(), &all)?;
        let l_i = (0..partition.num_clients())
            .map(|k| model.smoothness(data.view(), partition.client(k)))
            .collect::<Option<Vec<f64>>>()?;
        let n = l_i.len().max(1) as f64;
        let l_qm = (l_i.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
        let l_am = l_i.iter().sum::<f64>() / n;
        Some(Self { l, l_i, l_qm, l_am })
    }
}

/// `ξ(α) = √(1−α)/(1 − √(1−α))` (0 at α = 1).
pub fn xi(alpha: f64) -> f64 {
    let s = (1.0 - alpha).max(0.0).sqrt();
    s / (1.0 - s)
}

/// The theoretical EF21 step `1/(L + L_c·ξ(α))`.
pub fn theory_step(l: f64, l_c: f64, alpha: f64) -> f64 {
    1.0 / (l + l_c * xi(alpha))
}

/// The EF21 family's server state (the client half keeps `g_i` / `e_i` in its [`ClientState`]).
#[derive(Debug)]
pub struct Ef21 {
    variant: Variant,
    config: Ef21Config,
    dim: usize,
    num_clients: usize,
    compressor: Option<Box<dyn Compressor>>,
    x: Vec<f64>,
    g: Vec<f64>,
    /// EF: Σ v_i of the round.
    v_sum: Vec<f64>,
    initialised: Vec<bool>,
    /// EF21+: the server's copy of every g_i (empty until the client initialises).
    mirror: Vec<Vec<f64>>,
    /// Aggregation weight of each client: 1/n, or w_i for EF21-W.
    weights: Vec<f64>,
    gamma: f64,
    constants: Option<Smoothness>,
    setup_error: Option<String>,
    bits_round: u64,
    bits_cum: u64,
    rounds_done: u64,
    scratch: Vec<f64>,
}

impl Ef21 {
    /// A new instance of `variant`.
    pub fn new(variant: Variant, config: Ef21Config) -> Self {
        Self {
            variant,
            config,
            dim: 0,
            num_clients: 0,
            compressor: None,
            x: Vec::new(),
            g: Vec::new(),
            v_sum: Vec::new(),
            initialised: Vec::new(),
            mirror: Vec::new(),
            weights: Vec::new(),
            gamma: 0.0,
            constants: None,
            setup_error: None,
            bits_round: 0,
            bits_cum: 0,
            rounds_done: 0,
            scratch: Vec::new(),
        }
    }

    /// The step size γ in use (after `init`).
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// The smoothness constants, when the model allowed computing them.
    pub fn constants(&self) -> Option<&Smoothness> {
        self.constants.as_ref()
    }

    /// The f64 model `x`.
    pub fn x(&self) -> &[f64] {
        &self.x
    }

    /// The server's `g` (EF21 variants).
    pub fn g(&self) -> &[f64] {
        &self.g
    }

    fn multiplier(&self) -> f64 {
        self.config.multiplier.unwrap_or(1.0)
    }

    /// Computes γ (and the weights) from the config and the constants; `Err` names what is missing.
    fn setup(
        &mut self,
        model: Option<&dyn fedsim_nn::Model>,
        data: Option<&fedsim_data::FederatedData>,
    ) -> Result<(), String> {
        let alpha = self.compressor.as_ref().and_then(|c| c.alpha());
        if let (Some(model), Some(data)) = (model, data) {
            if data.partition.num_clients() != self.num_clients {
                return Err(format!(
                    "the partition has {} clients, the strategy was given {}",
                    data.partition.num_clients(),
                    self.num_clients
                ));
            }
            self.constants = Smoothness::of_model(model, &data.train, &data.partition);
        }
        let n = self.num_clients.max(1) as f64;
        self.weights = vec![1.0 / n; self.num_clients];
        if self.variant == Variant::Ef21W {
            let c = self.constants.as_ref().ok_or(
                "ef21_w needs the smoothness constants L_i: use model kind \"logreg_nonconvex\" with data on the server",
            )?;
            let total: f64 = c.l_i.iter().sum();
            self.weights = c.l_i.iter().map(|l| l / total).collect();
        }
        self.gamma = match self.config.step_size {
            Some(s) => s,
            None => {
                let c = self.constants.as_ref().ok_or(
                    "the theoretical step size needs model kind \"logreg_nonconvex\" (and the data on the server); \
                     otherwise set strategy.step_size",
                )?;
                let alpha = alpha.ok_or(
                    "the compressor is not contractive (scaled Rand-k with k ≤ d/2): set strategy.step_size",
                )?;
                let l_c = match self.config.step_rule(self.variant) {
                    StepRule::LQm => c.l_qm,
                    StepRule::LAm => c.l_am,
                };
                self.multiplier() * theory_step(c.l, l_c, alpha)
            }
        };
        Ok(())
    }

    fn invalid(client: ClientId, msg: impl Into<String>) -> StrategyError {
        StrategyError::InvalidUpdate {
            client,
            msg: msg.into(),
        }
    }

    fn compressor(&self) -> Result<&dyn Compressor, String> {
        self.compressor
            .as_deref()
            .ok_or_else(|| "strategy used before init".to_string())
    }

    /// Folds an EF21-family update (already known to come from a valid client id).
    fn accept_ef21(&mut self, id: ClientId, update: &Payload) -> Result<(), StrategyError> {
        let i = id as usize;
        let w = self.weights[i];
        let plus = self.variant == Variant::Ef21Plus;
        let bad = |m: String| Self::invalid(id, m);
        let comp = self
            .compressor
            .as_deref()
            .ok_or_else(|| bad("strategy used before init".into()))?;
        let comp_err = |e: CompressError| Self::invalid(id, e.to_string());
        let (init_dense, init_c, diff, fresh) = (
            update.get(INIT_DENSE),
            update.get(INIT_COMPRESSED),
            update.get(DIFF),
            update.get(FRESH),
        );
        let present = [init_dense, init_c, diff, fresh]
            .iter()
            .filter(|t| t.is_some())
            .count();
        if present != 1 || update.tensors.len() != 1 {
            return Err(bad(format!(
                "expected exactly one of `{INIT_DENSE}`, `{INIT_COMPRESSED}`, `{DIFF}`{}",
                if plus {
                    format!(", `{FRESH}`")
                } else {
                    String::new()
                }
            )));
        }
        if fresh.is_some() && !plus {
            return Err(bad(format!("`{FRESH}` is only valid for ef21_plus")));
        }
        if init_dense.is_some() || init_c.is_some() {
            if self.initialised[i] {
                return Err(bad(
                    "second initialisation of g_i (did the client lose its state?)".into(),
                ));
            }
            let mut g0 = vec![0.0f64; self.dim];
            match (init_dense, init_c) {
                (Some(TensorData::F64 { values, .. }), _) if values.len() == self.dim => {
                    g0.copy_from_slice(values);
                }
                (Some(TensorData::F32 { values, .. }), _) if values.len() == self.dim => {
                    for (o, v) in g0.iter_mut().zip(values) {
                        *o = *v as f64;
                    }
                }
                (Some(_), _) => {
                    return Err(bad(format!(
                        "`{INIT_DENSE}` must be a dense vector of {} values",
                        self.dim
                    )));
                }
                (None, Some(TensorData::Bytes { bytes })) => {
                    comp.decode(bytes, &mut g0).map_err(comp_err)?;
                    self.bits_round += comp.paper_bits();
                }
                (None, _) => return Err(bad(format!("`{INIT_COMPRESSED}` must be a byte buffer"))),
            }
            if let Some(j) = g0.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("g0 value {j} is not finite")));
            }
            for (a, b) in self.g.iter_mut().zip(&g0) {
                *a += w * b;
            }
            if plus {
                self.mirror[i] = g0;
            }
            self.initialised[i] = true;
            return Ok(());
        }
        if !self.initialised[i] {
            return Err(bad("compressed update before g_i was initialised".into()));
        }
        let (name, t) = match (diff, fresh) {
            (Some(t), _) => (DIFF, t),
            (None, Some(t)) => (FRESH, t),
            (None, None) => return Err(bad("no update tensor".into())),
        };
        let TensorData::Bytes { bytes } = t else {
            return Err(bad(format!("`{name}` must be a byte buffer")));
        };
        if name == DIFF {
            comp.decode_add(bytes, w, &mut self.g).map_err(comp_err)?;
            if plus {
                // Validated above, cannot fail.
                comp.decode_add(bytes, 1.0, &mut self.mirror[i])
                    .map_err(comp_err)?;
            }
        } else {
            self.scratch.resize(self.dim, 0.0);
            comp.decode(bytes, &mut self.scratch).map_err(comp_err)?;
            for ((g, m), b) in self
                .g
                .iter_mut()
                .zip(&mut self.mirror[i])
                .zip(&self.scratch)
            {
                *g += w * (b - *m);
                *m = *b;
            }
        }
        self.bits_round += comp.paper_bits();
        Ok(())
    }
}

impl Strategy for Ef21 {
    fn name(&self) -> String {
        self.variant.kind().into()
    }

    fn init(&mut self, init: &Init<'_>) {
        self.dim = init.global.len();
        self.num_clients = init.num_clients;
        self.x = init.global.iter().map(|&v| v as f64).collect();
        self.g = vec![0.0; self.dim];
        self.initialised = vec![false; self.num_clients];
        if self.variant == Variant::Ef21Plus {
            self.mirror = vec![Vec::new(); self.num_clients];
        }
        let spec = self.config.compressor_spec(self.variant);
        self.compressor = Some(spec.build(self.dim));
        if let Err(e) = self.setup(init.model, init.data) {
            tracing::error!(strategy = self.variant.kind(), error = %e, "cannot start; every update will be rejected");
            self.setup_error = Some(e);
            return;
        }
        let comp = self
            .compressor
            .as_deref()
            .map(|c| c.name())
            .unwrap_or_default();
        match &self.constants {
            Some(c) => tracing::info!(
                strategy = self.variant.kind(),
                compressor = %comp,
                gamma = self.gamma,
                L = c.l,
                L_QM = c.l_qm,
                L_AM = c.l_am,
                "EF21 step size"
            ),
            None => {
                tracing::info!(strategy = self.variant.kind(), compressor = %comp, gamma = self.gamma, "EF21 step size")
            }
        }
    }

    fn broadcast(&self, _round: u64, _global: &[f32]) -> Payload {
        let mut p = Payload::new().with(MODEL_F64, TensorData::vector_f64(&self.x));
        match self.variant {
            Variant::Ef => p.push(GAMMA, TensorData::Scalar { value: self.gamma }),
            Variant::Ef21W => {
                let l_am = self.constants.as_ref().map_or(0.0, |c| c.l_am);
                p.push(L_AM, TensorData::Scalar { value: l_am });
            }
            _ => {}
        }
        p
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], _global: &[f32]) {
        self.bits_round = 0;
        if self.variant == Variant::Ef {
            self.v_sum.clear();
            self.v_sum.resize(self.dim, 0.0);
        }
    }

    fn validate_update(
        &self,
        client: ClientId,
        update: &Payload,
        _num_params: usize,
    ) -> Result<(), StrategyError> {
        update.validate().map_err(|m| Self::invalid(client, m))?;
        let comp = self.compressor().map_err(|m| Self::invalid(client, m))?;
        for t in &update.tensors {
            if let TensorData::Bytes { bytes } = &t.data {
                comp.check_header(bytes)
                    .map_err(|e| Self::invalid(client, format!("tensor `{}`: {e}", t.name)))?;
            }
        }
        Ok(())
    }

    fn accept(&mut self, reporter: Reporter, update: Payload) -> Result<(), StrategyError> {
        let id = reporter.id;
        if let Some(e) = &self.setup_error {
            return Err(Self::invalid(id, format!("strategy not set up: {e}")));
        }
        if id as usize >= self.num_clients {
            return Err(Self::invalid(id, "client id out of range"));
        }
        if self.variant != Variant::Ef {
            return self.accept_ef21(id, &update);
        }
        let comp = self
            .compressor
            .as_deref()
            .ok_or_else(|| Self::invalid(id, "strategy used before init"))?;
        match update.get(EF_V) {
            Some(TensorData::Bytes { bytes }) if update.tensors.len() == 1 => {
                comp.decode_add(bytes, 1.0, &mut self.v_sum)
                    .map_err(|e| Self::invalid(id, e.to_string()))?;
                self.bits_round += comp.paper_bits();
                self.initialised[id as usize] = true;
                Ok(())
            }
            _ => Err(Self::invalid(
                id,
                format!("expected one byte tensor `{EF_V}`"),
            )),
        }
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if self.setup_error.is_some() {
            return;
        }
        if self.variant == Variant::Ef {
            let n = self.num_clients.max(1) as f64;
            for (x, v) in self.x.iter_mut().zip(&self.v_sum) {
                *x -= v / n;
            }
        } else {
            for (x, g) in self.x.iter_mut().zip(&self.g) {
                *x -= self.gamma * g;
            }
        }
        for (o, x) in global.iter_mut().zip(&self.x) {
            *o = *x as f32;
        }
        self.bits_cum += self.bits_round;
        self.rounds_done += 1;
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        let n = self.num_clients.max(1) as f64;
        let mut m = vec![
            ("bits_paper".to_string(), self.bits_round as f64 / n),
            ("bits_paper_cum".to_string(), self.bits_cum as f64 / n),
        ];
        let seen = self.initialised.iter().filter(|&&b| b).count();
        if seen < self.num_clients {
            m.push(("ef21_initialised".into(), seen as f64));
        }
        if self.rounds_done == 1 {
            m.push(("ef21_gamma".into(), self.gamma));
            if let Some(a) = self.compressor.as_ref().and_then(|c| c.alpha()) {
                m.push(("ef21_alpha".into(), a));
            }
            if let Some(c) = &self.constants {
                m.push(("ef21_L".into(), c.l));
                m.push(("ef21_L_QM".into(), c.l_qm));
                m.push(("ef21_L_AM".into(), c.l_am));
            }
        }
        m
    }

    fn save_state(&self) -> Payload {
        let mut p = Payload::new()
            .with("x", TensorData::vector_f64(&self.x))
            .with("g", TensorData::vector_f64(&self.g))
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
            .with(
                "rounds_done",
                TensorData::Scalar {
                    value: self.rounds_done as f64,
                },
            );
        if self.variant == Variant::Ef21Plus {
            let mut all = Vec::with_capacity(self.num_clients * self.dim);
            for m in &self.mirror {
                if m.is_empty() {
                    all.extend(std::iter::repeat_n(0.0, self.dim));
                } else {
                    all.extend_from_slice(m);
                }
            }
            p.push("mirror", TensorData::vector_f64(&all));
        }
        p
    }

    fn load_state(&mut self, state: Payload) -> Result<(), StrategyError> {
        let bad = |m: &str| StrategyError::InvalidState(format!("{}: {m}", self.variant.kind()));
        let vec_of = |name: &str, len: usize| -> Result<Vec<f64>, StrategyError> {
            match state.get(name) {
                Some(TensorData::F64 { values, .. }) if values.len() == len => Ok(values.clone()),
                _ => Err(bad(&format!("`{name}` missing or not {len} f64 values"))),
            }
        };
        let x = vec_of("x", self.dim)?;
        let g = vec_of("g", self.dim)?;
        let initialised: Vec<bool> = match state.get("initialised") {
            Some(TensorData::Bytes { bytes }) if bytes.len() == self.num_clients => {
                bytes.iter().map(|&b| b != 0).collect()
            }
            _ => return Err(bad("`initialised` missing or wrong length")),
        };
        let bits_cum = state.scalar("bits_cum").map_err(|m| bad(&m))?;
        let rounds_done = state.scalar("rounds_done").map_err(|m| bad(&m))?;
        if self.variant == Variant::Ef21Plus {
            let all = vec_of("mirror", self.num_clients * self.dim)?;
            self.mirror = initialised
                .iter()
                .enumerate()
                .map(|(i, &init)| {
                    if init {
                        all[i * self.dim..(i + 1) * self.dim].to_vec()
                    } else {
                        Vec::new()
                    }
                })
                .collect();
        }
        self.x = x;
        self.g = g;
        self.initialised = initialised;
        self.bits_cum = bits_cum.max(0.0) as u64;
        self.rounds_done = rounds_done.max(0.0) as u64;
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
        let x = match task.get(MODEL_F64) {
            Some(TensorData::F64 { values, .. }) if values.len() == d => values.as_slice(),
            _ => {
                return Err(StrategyError::InvalidTask(format!(
                    "`{MODEL_F64}` must be a dense f64 vector of {d} values"
                )));
            }
        };
        let comp = self.config.compressor_spec(self.variant).build(d);
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
    match spec {
        CompressorSpec::Identity { precision }
        | CompressorSpec::TopK { precision, .. }
        | CompressorSpec::RandK { precision, .. } => *precision,
        CompressorSpec::Natural { .. } => Precision::F32,
    }
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

impl StrategyKind for Ef21Config {
    const KIND: &'static str = "ef21";
    const SUMMARY: &'static str = "EF21 (error feedback with contractive compression; EF21-PP under partial participation, EF21-SGD with batch_fraction)";
    const EXAMPLE: &'static str = "step_size = 0.5\ncompressor = { kind = \"top_k\", fraction = 0.1 }";

    fn capabilities(&self) -> Capabilities {
        self.capabilities_for(Variant::Ef21)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate(Variant::Ef21).map_err(super::keyed)
    }

    fn build(&self) -> Box<dyn Strategy> {
        Box::new(Ef21::new(Variant::Ef21, self.clone()))
    }
}

/// `[strategy] kind = "ef21_w"`: the EF21 family's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ef21WConfig(pub Ef21Config);

impl StrategyKind for Ef21WConfig {
    const KIND: &'static str = "ef21_w";
    const SUMMARY: &'static str = "EF21-W: EF21 with weights w_i = L_i / sum L_j (needs a model that states its smoothness)";
    const EXAMPLE: &'static str = "compressor = { kind = \"top_k\", fraction = 0.1 }";
    const EXAMPLE_SETTINGS: &'static [&'static str] =
        &["model={kind=\"logreg_nonconvex\"}", "data.classes=2"];

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities_for(Variant::Ef21W)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.0.validate(Variant::Ef21W).map_err(super::keyed)
    }

    fn build(&self) -> Box<dyn Strategy> {
        Box::new(Ef21::new(Variant::Ef21W, self.0.clone()))
    }
}

/// `[strategy] kind = "ef21_plus"`: the EF21 family's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ef21PlusConfig(pub Ef21Config);

impl StrategyKind for Ef21PlusConfig {
    const KIND: &'static str = "ef21_plus";
    const SUMMARY: &'static str = "EF21+: each client keeps the closer of the EF21 update and the fresh compressed gradient";
    const EXAMPLE: &'static str = "step_size = 0.5\ncompressor = { kind = \"rand_k\", fraction = 0.2 }";

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities_for(Variant::Ef21Plus)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.0.validate(Variant::Ef21Plus).map_err(super::keyed)
    }

    fn build(&self) -> Box<dyn Strategy> {
        Box::new(Ef21::new(Variant::Ef21Plus, self.0.clone()))
    }
}

/// `[strategy] kind = "ef"`: the EF21 family's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EfConfig(pub Ef21Config);

impl StrategyKind for EfConfig {
    const KIND: &'static str = "ef";
    const SUMMARY: &'static str = "EF: classic error feedback (baseline of the EF21 experiments)";
    const EXAMPLE: &'static str = "step_size = 0.5\ncompressor = { kind = \"natural\" }";

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities_for(Variant::Ef)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.0.validate(Variant::Ef).map_err(super::keyed)
    }

    fn build(&self) -> Box<dyn Strategy> {
        Box::new(Ef21::new(Variant::Ef, self.0.clone()))
    }
}

/// `[strategy] kind = "gd"`: the EF21 family's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GdConfig(pub Ef21Config);

impl StrategyKind for GdConfig {
    const KIND: &'static str = "gd";
    const SUMMARY: &'static str = "GD: uncompressed distributed gradient descent (EF21 with the identity compressor)";
    const EXAMPLE: &'static str = "step_size = 0.5";

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities_for(Variant::Gd)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.0.validate(Variant::Gd).map_err(super::keyed)
    }

    fn build(&self) -> Box<dyn Strategy> {
        Box::new(Ef21::new(Variant::Gd, self.0.clone()))
    }
}

impl Ef21Config {
    /// What `variant` with these settings needs: the smoothness constants for EF21-W's weights and
    /// for the theoretical step size (when `step_size` is not set).
    fn capabilities_for(&self, variant: Variant) -> Capabilities {
        Capabilities {
            update: UpdateKind::Other,
            needs_smoothness: variant == Variant::Ef21W || self.step_size.is_none(),
            client_state: variant != Variant::Gd,
            ..Capabilities::DENSE_DELTA
        }
    }
}

