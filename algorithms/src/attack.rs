//! Poisoning attacks (the scenario's `[attack]` section), `../shared/algorithms.md` §5.5.
//!
//! Malicious clients are ordinary clients of the participation model: they are selected (or not) like
//! any other, so attacks compose with every participation model and scripted event. Which clients are
//! malicious is fixed for the run: `fraction = f` makes clients `0 .. ⌊N·f⌋ − 1` malicious (the
//! reference code's choice), or `clients = [...]` lists them. They attack from round `start_round`
//! (0-based) on and behave honestly before.
//!
//! [`Attacked`] wraps the scenario's strategy (built by [`crate::Scenario::build_strategy`], which both
//! runtimes use), so no strategy and no runtime knows about attacks:
//!
//! - **Per-client attacks** run in the client half, right after the honest local update, wherever the
//!   client lives (simulator thread or client process); randomness comes from the client's own stream:
//!   - `scaling`: the client submits the model `scale · x` (default `scale = 1e5`), i.e. the delta
//!     `(scale − 1)·x` — the FedAvg attack of the FRL reference code;
//!   - `sign_flip`: the delta `−scale · Δ` (default `scale = 1`);
//!   - `gaussian`: a delta of i.i.d. `N(0, scale²)` values (default `scale = 1`).
//! - **Colluding attacks** need the other attackers' updates of the round. The malicious clients train
//!   honestly, and the colluding adversary is simulated at the aggregation point: the wrapper buffers
//!   the round's updates (O(m·d) memory, only when a colluding attack is configured), replaces the
//!   malicious ones, then feeds all of them to the strategy in ascending client id:
//!   - `rank_reversal` (FRL only): every malicious client submits the reverse of the attackers'
//!     aggregate ranking ([`crate::strategy::frl::reverse_rankings`]). The reference code sums the
//!     rankings of up to 25 random malicious clients (selected or not); here the round's malicious
//!     reporters are used.
//!   - `agr_tailored` (weight-based strategies): every malicious client submits `μ − λ·σ`, with the
//!     halving search of [`crate::robust::agr_tailored`] against `target` (`trimmed_mean` or
//!     `multi_krum`; default: the strategy's aggregator when it is one of them, else `trimmed_mean`).
//!     With `knowledge = "partial"` (default, FRL's reference code) μ and σ come from the malicious
//!     reporters' honest deltas and the search simulates the aggregate over those; with
//!     `knowledge = "full"` μ and σ come from every honest delta of the round and the search
//!     simulates the aggregate the server will really compute (the malicious copies plus the benign
//!     reporters' deltas).
//!
//! Before `finish_round` the wrapper tells the strategy the number of malicious reporters
//! ([`Strategy::set_attackers`]): the `"oracle"` counts of the robust aggregators.
//!
//! `redraw_malicious_majority = true` (off by default) reproduces the reference code's selection: a
//! round in which malicious clients are at least half of the selected clients is drawn again until they
//! are a minority ([`RedrawMaliciousMajority`], a wrapper around the participation model, so both
//! runtimes select the same clients). It is an oracle choice (the server cannot know who is malicious)
//! and needs a participation model whose rounds are independent draws (`uniform`, `bernoulli`).

use rand::RngExt;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::strategy::fedavg::{Aggregator, FedAvgConfig};
use crate::strategy::frl::{self, Layer};
use crate::strategy::registry::{self, UpdateKind};
use crate::strategy::{ClientState, Init, Reporter, Strategy, StrategyError, StrategySpec, dense};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

/// The attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// FRL: colluding rank reversal.
    RankReversal,
    /// Submit `scale · x` (weight-based strategies).
    Scaling,
    /// Submit `−scale · Δ`.
    SignFlip,
    /// Submit Gaussian noise of standard deviation `scale`.
    Gaussian,
    /// Colluding `μ − λσ` tailored to a robust aggregator (Shejwalkar & Houmansadr).
    AgrTailored,
}

impl AttackKind {
    fn colluding(self) -> bool {
        matches!(self, AttackKind::RankReversal | AttackKind::AgrTailored)
    }
}

/// The scenario's `[attack]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackConfig {
    /// The attack.
    pub kind: AttackKind,
    /// Fraction f of malicious clients: clients `0 .. ⌊N·f⌋ − 1`.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Explicit malicious client ids (instead of `fraction`).
    #[serde(default)]
    pub clients: Option<Vec<ClientId>>,
    /// First round (0-based) in which malicious clients attack.
    #[serde(default)]
    pub start_round: u64,
    /// Strength: the model multiplier of `scaling` (default 1e5), the delta multiplier of `sign_flip`
    /// (default 1), the noise standard deviation of `gaussian` (default 1).
    #[serde(default)]
    pub scale: Option<f64>,
    /// The aggregator `agr_tailored` optimises against.
    #[serde(default)]
    pub target: Option<crate::robust::AgrTarget>,
    /// What `agr_tailored` attackers know of the round's updates.
    #[serde(default)]
    pub knowledge: Knowledge,
    /// Redraw rounds in which malicious clients are at least half of the selection (the reference
    /// code's behaviour; an oracle choice, off by default).
    #[serde(default)]
    pub redraw_malicious_majority: bool,
}

/// What the AGR-tailored attackers know (Shejwalkar & Houmansadr's threat models).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knowledge {
    /// Only the attackers' own honest updates (FRL's reference code).
    #[default]
    Partial,
    /// Every honest update of the round.
    Full,
}

/// The registered strategy kinds whose clients send dense deltas (with their default settings), for
/// error messages.
fn dense_delta_kinds() -> Vec<&'static str> {
    registry::all()
        .iter()
        .filter(|e| {
            toml::from_str(&e.example_table())
                .ok()
                .and_then(|t| StrategySpec::from_table(t).ok())
                .is_some_and(|s| s.capabilities().update == UpdateKind::DenseDelta)
        })
        .map(|e| e.kind)
        .collect()
}

impl AttackConfig {
    /// Checks values against the scenario, naming the bad key.
    pub fn validate(&self, clients: usize, strategy: &StrategySpec) -> Result<(), ConfigError> {
        match (&self.fraction, &self.clients) {
            (Some(f), None) => {
                if !(0.0..=1.0).contains(f) {
                    return Err(ConfigError::new(
                        "attack.fraction",
                        format!("must be in [0, 1], got {f}"),
                    ));
                }
            }
            (None, Some(ids)) => {
                if let Some(c) = ids.iter().find(|&&c| c as usize >= clients) {
                    return Err(ConfigError::new(
                        "attack.clients",
                        format!("client {c} does not exist ({clients} clients)"),
                    ));
                }
            }
            _ => {
                return Err(ConfigError::new(
                    "attack",
                    "set exactly one of fraction and clients",
                ));
            }
        }
        if let Some(s) = self.scale
            && !s.is_finite()
        {
            return Err(ConfigError::new(
                "attack.scale",
                format!("must be finite, got {s}"),
            ));
        }
        if self.knowledge == Knowledge::Full && self.kind != AttackKind::AgrTailored {
            return Err(ConfigError::new(
                "attack.knowledge",
                "applies only to attack.kind = \"agr_tailored\"",
            ));
        }
        let update = strategy.capabilities().update;
        match self.kind {
            AttackKind::RankReversal if update != UpdateKind::Rankings => Err(ConfigError::new(
                "attack.kind",
                format!(
                    "\"rank_reversal\" needs a strategy whose clients send rankings (frl), not {}",
                    strategy.kind()
                ),
            )),
            AttackKind::RankReversal => Ok(()),
            _ if update != UpdateKind::DenseDelta => Err(ConfigError::new(
                "attack.kind",
                format!(
                    "{:?} needs a strategy that sends dense model deltas ({}), not {}",
                    self.kind,
                    dense_delta_kinds().join(", "),
                    strategy.kind()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Per-client malicious flags for `n` clients.
    pub fn malicious(&self, n: usize) -> Vec<bool> {
        let mut m = vec![false; n];
        if let Some(f) = self.fraction {
            let k = ((n as f64) * f).floor() as usize;
            m[..k.min(n)].fill(true);
        }
        for &c in self.clients.iter().flatten() {
            if let Some(x) = m.get_mut(c as usize) {
                *x = true;
            }
        }
        m
    }
}

/// A strategy with some clients malicious (see the module documentation).
pub struct Attacked {
    inner: Box<dyn Strategy>,
    config: AttackConfig,
    malicious: Vec<bool>,
    target: crate::robust::AgrTarget,
    layers: Vec<Layer>,
    round: u64,
    buffer: Vec<(Reporter, Payload)>,
    attackers: usize,
    dim: usize,
}

impl Attacked {
    /// Wraps `inner` for a population of `num_clients` clients; `spec` is the strategy's section (for
    /// the default target of `agr_tailored`).
    pub fn new(
        inner: Box<dyn Strategy>,
        config: AttackConfig,
        num_clients: usize,
        spec: &StrategySpec,
    ) -> Self {
        let target =
            config
                .target
                .unwrap_or(match spec.config::<FedAvgConfig>().map(|c| &c.aggregator) {
                    Some(Aggregator::MultiKrum { .. } | Aggregator::Krum { .. }) => {
                        crate::robust::AgrTarget::MultiKrum
                    }
                    _ => crate::robust::AgrTarget::TrimmedMean,
                });
        Self {
            malicious: config.malicious(num_clients),
            inner,
            config,
            target,
            layers: Vec::new(),
            round: 0,
            buffer: Vec::new(),
            attackers: 0,
            dim: 0,
        }
    }

    fn attacking(&self, client: ClientId, round: u64) -> bool {
        round >= self.config.start_round && self.malicious.get(client as usize) == Some(&true)
    }

    fn collude(&mut self) -> Result<(), StrategyError> {
        let mal: Vec<usize> = (0..self.buffer.len())
            .filter(|&i| self.attacking(self.buffer[i].0.id, self.round))
            .collect();
        if mal.is_empty() {
            return Ok(());
        }
        match self.config.kind {
            AttackKind::RankReversal => {
                let mut ups: Vec<(ClientId, Payload)> = mal
                    .iter()
                    .map(|&i| (self.buffer[i].0.id, std::mem::take(&mut self.buffer[i].1)))
                    .collect();
                let res = frl::collude_rank_reversal(&self.layers, &mut ups);
                for (&i, (_, p)) in mal.iter().zip(ups) {
                    self.buffer[i].1 = p;
                }
                res
            }
            AttackKind::AgrTailored => {
                // Every reporter's honest delta (the malicious clients trained honestly), by position.
                let mut deltas: Vec<&[f32]> = Vec::with_capacity(self.buffer.len());
                for (r, p) in &self.buffer {
                    match p.get(dense::DELTA) {
                        Some(TensorData::F32 { values, .. }) if values.len() == self.dim => {
                            deltas.push(values)
                        }
                        _ => {
                            return Err(StrategyError::InvalidUpdate {
                                client: r.id,
                                msg: format!("no `{}` of {} values", dense::DELTA, self.dim),
                            });
                        }
                    }
                }
                let own: Vec<&[f32]> = mal.iter().map(|&i| deltas[i]).collect();
                let mal_delta = match self.config.knowledge {
                    Knowledge::Partial => {
                        crate::robust::agr_tailored(&own, &own, mal.len(), self.target)
                    }
                    Knowledge::Full => {
                        let benign: Vec<&[f32]> = (0..deltas.len())
                            .filter(|i| !mal.contains(i))
                            .map(|i| deltas[i])
                            .collect();
                        crate::robust::agr_tailored(&deltas, &benign, mal.len(), self.target)
                    }
                };
                for &i in &mal {
                    self.buffer[i]
                        .1
                        .push(dense::DELTA, TensorData::vector(mal_delta.clone()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Strategy for Attacked {
    fn name(&self) -> String {
        let n = self.malicious.iter().filter(|&&m| m).count();
        format!(
            "{}+attack({:?}, {n} malicious from round {})",
            self.inner.name(),
            self.config.kind,
            self.config.start_round
        )
    }

    fn init(&mut self, init: &Init<'_>) {
        self.layers = match init.model {
            Some(m) => frl::layers_of(m),
            None => vec![Layer {
                name: "all".into(),
                range: 0..init.global.len(),
            }],
        };
        self.inner.init(init);
    }

    fn broadcast(&self, round: u64, global: &[f32]) -> Payload {
        self.inner.broadcast(round, global)
    }

    fn begin_round(&mut self, round: u64, selected: &[ClientId], global: &[f32]) {
        self.round = round;
        self.dim = global.len();
        self.buffer.clear();
        self.attackers = 0;
        self.inner.begin_round(round, selected, global);
    }

    fn update_tensors(&self) -> Vec<String> {
        self.inner.update_tensors()
    }

    fn validate_update(
        &self,
        client: ClientId,
        update: &Payload,
        num_params: usize,
    ) -> Result<(), StrategyError> {
        self.inner.validate_update(client, update, num_params)
    }

    fn accept(&mut self, reporter: Reporter, update: Payload) -> Result<(), StrategyError> {
        let colluding = self.config.kind.colluding() && self.round >= self.config.start_round;
        if colluding {
            // Held until the round closes; the strategy still sees updates in ascending client id.
            self.buffer.push((reporter, update));
            return Ok(());
        }
        self.inner.accept(reporter, update)?;
        if self.attacking(reporter.id, self.round) {
            self.attackers += 1;
        }
        Ok(())
    }

    fn finish_round(&mut self, round: u64, global: &mut [f32], reported: &[ClientId]) {
        if !self.buffer.is_empty() {
            if let Err(e) = self.collude() {
                tracing::warn!(round, error = %e, "colluding attack skipped this round");
            }
            for (r, p) in std::mem::take(&mut self.buffer) {
                match self.inner.accept(r, p) {
                    Ok(()) => {
                        if self.attacking(r.id, round) {
                            self.attackers += 1;
                        }
                    }
                    Err(e) => tracing::warn!(round, client = r.id, error = %e, "update rejected"),
                }
            }
        }
        self.inner.set_attackers(self.attackers);
        self.inner.finish_round(round, global, reported);
    }

    fn set_attackers(&mut self, n: usize) {
        self.inner.set_attackers(n);
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        let mut m = self.inner.round_metrics();
        m.push(("malicious_reporters".into(), self.attackers as f64));
        m
    }

    fn save_state(&self) -> Payload {
        self.inner.save_state()
    }

    fn load_state(&mut self, state: Payload) -> Result<(), StrategyError> {
        self.inner.load_state(state)
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let mut update = self.inner.local_update(trainer, state, task)?;
        if !self.attacking(trainer.client, trainer.round) || self.config.kind.colluding() {
            return Ok(update);
        }
        let d = trainer.model.num_params();
        let delta = match self.config.kind {
            AttackKind::Scaling => {
                let x = dense::task_model(task, d)?;
                let s = self.config.scale.unwrap_or(1e5);
                x.iter().map(|v| ((s - 1.0) * *v as f64) as f32).collect()
            }
            AttackKind::SignFlip => {
                let honest = update
                    .dense(dense::DELTA, d)
                    .map_err(StrategyError::InvalidTask)?;
                let s = self.config.scale.unwrap_or(1.0);
                honest.iter().map(|v| (-s * *v as f64) as f32).collect()
            }
            AttackKind::Gaussian => {
                let s = self.config.scale.unwrap_or(1.0).abs();
                let normal = Normal::new(0.0f64, s)
                    .map_err(|e| StrategyError::InvalidTask(format!("attack.scale: {e}")))?;
                // A fresh stream drawn from the client's own (deterministic) stream.
                let seed: u64 = trainer.rng.random();
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
                (0..d).map(|_| normal.sample(&mut rng) as f32).collect()
            }
            AttackKind::RankReversal | AttackKind::AgrTailored => return Ok(update),
        };
        update.push(dense::DELTA, TensorData::vector(delta));
        Ok(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::fedavg::{Count, FedAvg, FedAvgConfig, OracleTag};
    use crate::strategy::frl::{Frl, FrlConfig, pack_permutation, ranking, reverse_rankings, vote};
    use crate::strategy::testutil::one_update;

    fn cfg(kind: AttackKind, fraction: f64) -> AttackConfig {
        AttackConfig {
            kind,
            fraction: Some(fraction),
            clients: None,
            start_round: 1,
            scale: None,
            target: None,
            knowledge: Knowledge::Partial,
            redraw_malicious_majority: false,
        }
    }

    fn fedavg(aggregator: Aggregator) -> (StrategySpec, Box<dyn Strategy>) {
        let c = FedAvgConfig {
            aggregator,
            ..FedAvgConfig::default()
        };
        (StrategySpec::new(c.clone()), Box::new(FedAvg::new(c)))
    }

    fn init(s: &mut dyn Strategy, global: &[f32], n: usize) {
        s.init(&Init {
            global,
            num_clients: n,
            probabilities: None,
            model: None,
            data: None,
        });
    }

    fn delta(p: &Payload) -> Vec<f32> {
        match p.get(dense::DELTA) {
            Some(TensorData::F32 { values, .. }) => values.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn malicious_ids_and_validation() {
        let a = cfg(AttackKind::Scaling, 0.2);
        assert_eq!(
            a.malicious(10),
            [
                true, true, false, false, false, false, false, false, false, false
            ]
        );
        let (spec, _) = fedavg(Aggregator::Mean);
        assert!(a.validate(10, &spec).is_ok());
        let e = cfg(AttackKind::RankReversal, 0.1)
            .validate(10, &spec)
            .unwrap_err();
        assert_eq!(e.key, "attack.kind");
        assert!(e.message.contains("frl"), "{e}");
        let frl = StrategySpec::new(FrlConfig::default());
        assert!(cfg(AttackKind::Gaussian, 0.1).validate(10, &frl).is_err());
        let both = AttackConfig {
            clients: Some(vec![3]),
            ..cfg(AttackKind::Scaling, 0.1)
        };
        assert!(
            both.validate(10, &spec)
                .unwrap_err()
                .message
                .contains("exactly one")
        );
        let ids = AttackConfig {
            fraction: None,
            clients: Some(vec![12]),
            ..cfg(AttackKind::Scaling, 0.0)
        };
        assert!(ids.validate(10, &spec).unwrap_err().message.contains("12"));
    }

    #[test]
    fn per_client_attacks_replace_the_delta_from_start_round() {
        let global = vec![0.5f32; 4];
        for kind in [
            AttackKind::Scaling,
            AttackKind::SignFlip,
            AttackKind::Gaussian,
        ] {
            let (spec, inner) = fedavg(Aggregator::Mean);
            let s = Attacked::new(inner, cfg(kind, 0.5), 2, &spec);
            let honest = delta(&one_update(&s, 1, 3, &global));
            // Round 0: before start_round, the malicious client is honest.
            assert_eq!(
                delta(&one_update(&s, 0, 0, &global)),
                delta(&one_update(&s, 1, 0, &global))
            );
            let mal = delta(&one_update(&s, 0, 3, &global));
            match kind {
                AttackKind::Scaling => {
                    assert!(mal.iter().all(|&v| (v - 0.5 * (1e5 - 1.0)).abs() < 1.0))
                }
                AttackKind::SignFlip => {
                    let h0 = delta(&one_update(s.inner.as_ref(), 0, 3, &global));
                    assert_eq!(mal, h0.iter().map(|v| -v).collect::<Vec<_>>());
                }
                _ => {
                    assert_ne!(mal, honest);
                    // Deterministic: the same client and round give the same noise.
                    assert_eq!(mal, delta(&one_update(&s, 0, 3, &global)));
                }
            }
        }
    }

    fn accept_all(s: &mut dyn Strategy, ups: Vec<Payload>) {
        for (i, p) in ups.into_iter().enumerate() {
            s.accept(
                Reporter {
                    id: i as u32,
                    num_samples: 1,
                    staleness: 0,
                },
                p,
            )
            .unwrap();
        }
    }

    #[test]
    fn rank_reversal_submits_the_reverse_of_the_attackers_aggregate() {
        let n = 50;
        let global: Vec<f32> = (0..n).map(|i| ((i * 37) % 50) as f32).collect();
        let honest: Vec<Vec<u32>> = (0..4)
            .map(|u| {
                ranking(
                    &(0..n)
                        .map(|i| ((i * (u + 3) * 11) % 53) as f32)
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let spec = StrategySpec::new(FrlConfig::default());
        let mut s = Attacked::new(
            Box::new(Frl::new(FrlConfig::default())),
            cfg(AttackKind::RankReversal, 0.5),
            4,
            &spec,
        );
        init(&mut s, &global, 4);
        let mut g = global.clone();
        s.begin_round(1, &[0, 1, 2, 3], &g);
        let ups = honest
            .iter()
            .map(|r| {
                Payload::new().with(
                    "ranking.all",
                    TensorData::Bytes {
                        bytes: pack_permutation(r),
                    },
                )
            })
            .collect();
        accept_all(&mut s, ups);
        s.finish_round(1, &mut g, &[0, 1, 2, 3]);
        let mal = reverse_rankings(&[&honest[0], &honest[1]]);
        let want = vote(&[&mal, &mal, &honest[2], &honest[3]]);
        assert_eq!(ranking(&g), want);
        assert!(
            s.round_metrics()
                .contains(&("malicious_reporters".into(), 2.0))
        );
    }

    #[test]
    fn agr_tailored_and_oracle_trimmed_mean() {
        // Four clients, two malicious; oracle b = 2 trims exactly two values from each end.
        let global = vec![0.0f32; 3];
        let ups: Vec<Vec<f32>> = vec![
            vec![1.0, 2.0, 3.0],
            vec![1.5, 2.5, 2.0],
            vec![1.2, 2.2, 3.3],
            vec![0.8, 1.9, 2.7],
            vec![1.1, 2.1, 3.1],
        ];
        let payload =
            |d: &Vec<f32>| Payload::new().with(dense::DELTA, TensorData::vector(d.clone()));
        let agg = Aggregator::TrimmedMean {
            trim: Count::Oracle(OracleTag::Oracle),
        };
        // Honest baseline: no attack, b = 0 (no attacker known) → the plain mean.
        let (_, mut plain) = fedavg(agg);
        init(plain.as_mut(), &global, 5);
        let mut g0 = global.clone();
        plain.begin_round(1, &[], &g0);
        accept_all(plain.as_mut(), ups.iter().map(payload).collect());
        plain.finish_round(1, &mut g0, &[]);
        assert!((g0[0] - 1.12).abs() < 1e-6);

        let (spec, inner) = fedavg(agg);
        let mut s = Attacked::new(inner, cfg(AttackKind::AgrTailored, 0.4), 5, &spec);
        init(&mut s, &global, 5);
        let mut g = global.clone();
        s.begin_round(1, &[], &g);
        accept_all(&mut s, ups.iter().map(payload).collect());
        s.finish_round(1, &mut g, &[]);
        // The attackers' μ − λσ replaced their updates; the trimmed mean (b = 2) of five values is the
        // median, which the crafted values drag below the honest median.
        let refs: Vec<&[f32]> = ups[..2].iter().map(Vec::as_slice).collect();
        let mal =
            crate::robust::agr_tailored(&refs, &refs, 2, crate::robust::AgrTarget::TrimmedMean);
        let mut all: Vec<Vec<f32>> = vec![mal.clone(), mal];
        all.extend(ups[2..].iter().cloned());
        let want =
            crate::robust::trimmed_mean(&all.iter().map(Vec::as_slice).collect::<Vec<_>>(), 2);
        assert_eq!(g, want);
        let honest_median =
            crate::robust::median(&ups.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_ne!(g, honest_median);
    }

    #[test]
    fn full_knowledge_agr_tailored_uses_every_honest_update() {
        let global = vec![0.0f32; 3];
        let ups: Vec<Vec<f32>> = vec![
            vec![1.0, 2.0, 3.0],
            vec![1.5, 2.5, 2.0],
            vec![1.2, 2.2, 3.3],
            vec![0.8, 1.9, 2.7],
            vec![1.1, 2.1, 3.1],
        ];
        let agg = Aggregator::TrimmedMean {
            trim: Count::Oracle(OracleTag::Oracle),
        };
        let (spec, inner) = fedavg(agg);
        let config = AttackConfig {
            knowledge: Knowledge::Full,
            ..cfg(AttackKind::AgrTailored, 0.4)
        };
        config.validate(5, &spec).unwrap();
        let mut s = Attacked::new(inner, config, 5, &spec);
        init(&mut s, &global, 5);
        let mut g = global.clone();
        s.begin_round(1, &[], &g);
        accept_all(
            &mut s,
            ups.iter()
                .map(|d| Payload::new().with(dense::DELTA, TensorData::vector(d.clone())))
                .collect(),
        );
        s.finish_round(1, &mut g, &[]);
        // μ, σ over all five honest deltas; the search simulates the real aggregate (two malicious
        // copies plus the three benign deltas).
        let all: Vec<&[f32]> = ups.iter().map(Vec::as_slice).collect();
        let mal =
            crate::robust::agr_tailored(&all, &all[2..], 2, crate::robust::AgrTarget::TrimmedMean);
        let partial = crate::robust::agr_tailored(
            &all[..2],
            &all[..2],
            2,
            crate::robust::AgrTarget::TrimmedMean,
        );
        assert_ne!(mal, partial);
        let mut real: Vec<&[f32]> = vec![&mal, &mal];
        real.extend_from_slice(&all[2..]);
        assert_eq!(g, crate::robust::trimmed_mean(&real, 2));
        // Knowledge only means something for agr_tailored.
        let wrong = AttackConfig {
            knowledge: Knowledge::Full,
            ..cfg(AttackKind::Scaling, 0.4)
        };
        assert!(
            wrong
                .validate(5, &spec)
                .unwrap_err()
                .to_string()
                .contains("attack.knowledge")
        );
    }
}
