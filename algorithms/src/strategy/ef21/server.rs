//! The server half of the EF21 family: set-up and step size, broadcast, folding updates, the round's
//! step, metrics and saved state.

use super::{
    DIFF, EF_V, Ef21Config, FRESH, GAMMA, INIT_COMPRESSED, INIT_DENSE, L_AM, MODEL_F64, Smoothness,
    StepRule, Variant, theory_step,
};
use crate::compress::{CompressError, Compressor};
use crate::strategy::{ClientState, Init, Reporter, Strategy, StrategyError};
use crate::{ClientId, LocalTrainer, Payload, TensorData};

/// The EF21 family's server state (the client half keeps `g_i` / `e_i` in its [`ClientState`]).
#[derive(Debug)]
pub struct Ef21 {
    pub(super) variant: Variant,
    pub(super) config: Ef21Config,
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

    pub(super) fn invalid(client: ClientId, msg: impl Into<String>) -> StrategyError {
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
    fn update_tensors(&self) -> Vec<String> {
        [INIT_DENSE, INIT_COMPRESSED, DIFF, FRESH, EF_V]
            .map(String::from)
            .to_vec()
    }

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
        let built = spec.validate().map(|v| v.build(self.dim));
        let setup = match built {
            Ok(c) => {
                self.compressor = Some(c);
                self.setup(init.model, init.data)
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = setup {
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
        self.client_update(trainer, state, task)
    }
}
