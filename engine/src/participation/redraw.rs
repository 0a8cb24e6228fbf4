//! Redrawing rounds with a malicious majority: the participation side of the attacks of
//! [`fedsim_algorithms::attack`] (`attack.redraw_malicious_majority`, the FRL reference code's behaviour).

use fedsim_algorithms::attack::AttackConfig;

use super::Participation;
use crate::ClientId;

/// Most redraws of one round before [`RedrawMaliciousMajority`] gives up and keeps the last draw (a
/// population with a malicious majority would otherwise loop for ever).
pub const MAX_REDRAWS: u64 = 10_000;

/// A participation model whose rounds are drawn again while malicious clients are at least half of the
/// selection (from the attack's `start_round` on; see the module documentation).
pub struct RedrawMaliciousMajority {
    inner: Box<dyn Participation>,
    malicious: Vec<bool>,
    start_round: u64,
}

impl RedrawMaliciousMajority {
    /// Wraps `inner` for a population of `num_clients` clients attacked as `config` says.
    pub fn new(inner: Box<dyn Participation>, config: &AttackConfig, num_clients: usize) -> Self {
        Self {
            inner,
            malicious: config.malicious(num_clients),
            start_round: config.start_round,
        }
    }

    fn malicious_majority(&self, selected: &[ClientId]) -> bool {
        let mal = selected
            .iter()
            .filter(|&&c| self.malicious.get(c as usize) == Some(&true))
            .count();
        !selected.is_empty() && 2 * mal >= selected.len()
    }
}

impl Participation for RedrawMaliciousMajority {
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        let mut selected = self.inner.select(round, available);
        if round < self.start_round {
            return selected;
        }
        let mut attempt = 0;
        while self.malicious_majority(&selected) {
            attempt += 1;
            if attempt > MAX_REDRAWS {
                tracing::warn!(
                    round,
                    "malicious majority after {MAX_REDRAWS} redraws; keeping it"
                );
                break;
            }
            match self.inner.redraw(round, available, attempt) {
                Some(s) => selected = s,
                None => break,
            }
        }
        if attempt > 0 {
            tracing::debug!(
                round,
                redraws = attempt,
                "redrew a round with a malicious majority"
            );
        }
        selected
    }

    fn redraw(
        &mut self,
        round: u64,
        available: &[ClientId],
        attempt: u64,
    ) -> Option<Vec<ClientId>> {
        self.inner.redraw(round, available, attempt)
    }

    fn probabilities(&self) -> Option<&[f64]> {
        self.inner.probabilities()
    }

    fn save_state(&self) -> Vec<u8> {
        self.inner.save_state()
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.inner.load_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redraw_keeps_malicious_clients_a_minority_and_leaves_other_rounds_alone() {
        use crate::participation::models::{Bernoulli, Uniform};
        use fedsim_algorithms::attack::AttackKind;
        let n = 10;
        let config = AttackConfig {
            redraw_malicious_majority: true,
            ..AttackConfig {
                kind: AttackKind::Scaling,
                fraction: Some(0.5),
                clients: None,
                start_round: 1,
                scale: None,
                target: None,
                knowledge: Default::default(),
                redraw_malicious_majority: false,
            }
        };
        let mal = config.malicious(n);
        let count = |s: &[ClientId]| s.iter().filter(|&&c| mal[c as usize]).count();
        let available: Vec<ClientId> = (0..n as u32).collect();
        let models: Vec<Box<dyn Fn() -> Box<dyn Participation>>> = vec![
            Box::new(|| {
                Box::new(Uniform {
                    per_round: 4,
                    seed: 7,
                })
            }),
            Box::new(|| Box::new(Bernoulli::new(vec![0.4; 10], 7))),
        ];
        for make in models {
            let mut plain = make();
            let mut redrawn = RedrawMaliciousMajority::new(make(), &config, n);
            let (mut majority_rounds, mut kept) = (0, 0);
            for round in 0..300 {
                let a = plain.select(round, &available);
                let b = redrawn.select(round, &available);
                let majority = !a.is_empty() && 2 * count(&a) >= a.len();
                if round < config.start_round || !majority {
                    assert_eq!(a, b, "round {round}: a minority draw must not change");
                    kept += 1;
                } else {
                    majority_rounds += 1;
                    assert!(
                        b.is_empty() || 2 * count(&b) < b.len(),
                        "round {round}: {b:?}"
                    );
                }
            }
            assert!(
                majority_rounds > 20 && kept > 20,
                "{majority_rounds} / {kept}"
            );
        }
    }
}
