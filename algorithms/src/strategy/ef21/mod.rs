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

mod client;
mod server;

use serde::{Deserialize, Serialize};

use super::Strategy;
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies, UpdateKind};
use crate::compress::{CompressorSpec, IdentityConfig, Precision};
use fedsim_types::ConfigError;

pub use client::{local_gradient, state_vec};
pub use server::Ef21;

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
    pub fn validate(&self, variant: Variant) -> Result<(), ConfigError> {
        if let Some(c) = &self.compressor {
            c.validate()?;
            if variant == Variant::Gd && !c.capabilities().identity {
                return Err(ConfigError::new(
                    "compressor",
                    "kind \"gd\" is uncompressed; use kind = \"identity\" (or leave it out)",
                ));
            }
        }
        if variant == Variant::Ef && self.init.is_some() {
            return Err(ConfigError::new(
                "init",
                "EF has no g_i^0 (it starts from e_i = 0)",
            ));
        }
        if let Some(m) = self.multiplier
            && !(m.is_finite() && m > 0.0)
        {
            return Err(ConfigError::new(
                "multiplier",
                format!("must be positive, got {m}"),
            ));
        }
        if let Some(s) = self.step_size
            && !(s.is_finite() && s > 0.0)
        {
            return Err(ConfigError::new(
                "step_size",
                format!("must be positive, got {s}"),
            ));
        }
        if let Some(p) = self.batch_fraction
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return Err(ConfigError::new(
                "batch_fraction",
                format!("must be in (0, 1], got {p}"),
            ));
        }
        Ok(())
    }

    fn compressor_spec(&self, variant: Variant) -> CompressorSpec {
        match (&self.compressor, variant) {
            (Some(c), _) => c.clone(),
            (None, Variant::Gd) => CompressorSpec::new(IdentityConfig {
                precision: Precision::F32,
            }),
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

/// Implements [`Kind<Strategies>`](Kind) for one kind of the family (`$ty` holds its [`Ef21Config`], in field `.0`
/// for a wrapper); `wrapper` also declares the `#[serde(transparent)]` newtype around [`Ef21Config`].
macro_rules! ef21_kind {
    (
        $ty:ident $(.$field:tt)?, $variant:ident, kind = $kind:literal, summary = $summary:literal,
        example = $example:literal $(, settings = $settings:expr)? $(,)?
    ) => {
        impl Kind<Strategies> for $ty {
            const KIND: &'static str = $kind;
            const SUMMARY: &'static str = $summary;
            const EXAMPLE: &'static str = $example;
            $(const EXAMPLE_SETTINGS: &'static [&'static str] = $settings;)?

            fn capabilities(&self) -> Capabilities {
                self$(.$field)?.capabilities_for(Variant::$variant)
            }

            fn validate(&self) -> Result<(), ConfigError> {
                self$(.$field)?.validate(Variant::$variant)
            }

            fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
                Box::new(Ef21::new(Variant::$variant, self$(.$field)?.clone()))
            }
        }
    };
    (wrapper $ty:ident, $variant:ident, kind = $kind:literal, $($rest:tt)*) => {
        #[doc = concat!("`[strategy] kind = \"", $kind, "\"`: the EF21 family's settings.")]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $ty(pub Ef21Config);

        ef21_kind!($ty.0, $variant, kind = $kind, $($rest)*);
    };
}

ef21_kind!(
    Ef21Config,
    Ef21,
    kind = "ef21",
    summary = "EF21 (error feedback with contractive compression; EF21-PP under partial participation, EF21-SGD with batch_fraction)",
    example = "step_size = 0.5\ncompressor = { kind = \"top_k\", fraction = 0.1 }",
);

ef21_kind!(
    wrapper Ef21WConfig,
    Ef21W,
    kind = "ef21_w",
    summary = "EF21-W: EF21 with weights w_i = L_i / sum L_j (needs a model that states its smoothness)",
    example = "compressor = { kind = \"top_k\", fraction = 0.1 }",
    settings = &["model={kind=\"logreg_nonconvex\"}", "data.classes=2"],
);

ef21_kind!(
    wrapper Ef21PlusConfig,
    Ef21Plus,
    kind = "ef21_plus",
    summary = "EF21+: each client keeps the closer of the EF21 update and the fresh compressed gradient",
    example = "step_size = 0.5\ncompressor = { kind = \"rand_k\", fraction = 0.2 }",
);

ef21_kind!(
    wrapper EfConfig,
    Ef,
    kind = "ef",
    summary = "EF: classic error feedback (baseline of the EF21 experiments)",
    example = "step_size = 0.5\ncompressor = { kind = \"natural\" }",
);

ef21_kind!(
    wrapper GdConfig,
    Gd,
    kind = "gd",
    summary = "GD: uncompressed distributed gradient descent (EF21 with the identity compressor)",
    example = "step_size = 0.5",
);

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
