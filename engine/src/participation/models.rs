//! The participation models.

use rand::seq::index;

use super::Participation;
use crate::ClientId;
use fedsim_types::rng::{Purpose, stream, unit};

/// Every available client.
#[derive(Debug, Clone, Copy)]
pub struct Full;

impl Participation for Full {
    fn select(&mut self, _round: u64, available: &[ClientId]) -> Vec<ClientId> {
        available.to_vec()
    }

    fn selects_every_available(&self) -> bool {
        true
    }
}

/// A fixed number of clients per round, uniformly without replacement.
#[derive(Debug, Clone, Copy)]
pub struct Uniform {
    /// Clients per round (fewer when fewer are available).
    pub per_round: usize,
    /// Run seed.
    pub seed: u64,
}

impl Uniform {
    /// Draw number `attempt` of `round` (0: the round's selection; more: redraws).
    fn draw(&self, round: u64, available: &[ClientId], attempt: u64) -> Vec<ClientId> {
        let m = self.per_round.min(available.len());
        let mut rng = stream(self.seed, Purpose::Participation, round, attempt);
        let mut picked: Vec<ClientId> = index::sample(&mut rng, available.len(), m)
            .into_iter()
            .map(|i| available[i])
            .collect();
        picked.sort_unstable();
        picked
    }
}

impl Participation for Uniform {
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        self.draw(round, available, 0)
    }

    fn redraw(
        &mut self,
        round: u64,
        available: &[ClientId],
        attempt: u64,
    ) -> Option<Vec<ClientId>> {
        Some(self.draw(round, available, attempt))
    }
}

/// Independent Bernoulli participation with per-client probabilities.
#[derive(Debug, Clone)]
pub struct Bernoulli {
    p: Vec<f64>,
    seed: u64,
}

impl Bernoulli {
    /// Bernoulli participation with probabilities `p`.
    pub fn new(p: Vec<f64>, seed: u64) -> Self {
        Self { p, seed }
    }
}

impl Bernoulli {
    /// Coin flips number `attempt` of `round` (0: the round's selection; more: redraws).
    fn draw(&self, round: u64, available: &[ClientId], attempt: u64) -> Vec<ClientId> {
        // Salt 0 is the selection; redraws use salts that no other Bernoulli draw uses.
        let salt = if attempt == 0 { 0 } else { 1000 + attempt };
        available
            .iter()
            .copied()
            .filter(|&c| {
                unit(self.seed, Purpose::Participation, round, c as u64, salt) < self.p[c as usize]
            })
            .collect()
    }
}

impl Participation for Bernoulli {
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        self.draw(round, available, 0)
    }

    fn redraw(
        &mut self,
        round: u64,
        available: &[ClientId],
        attempt: u64,
    ) -> Option<Vec<ClientId>> {
        Some(self.draw(round, available, attempt))
    }

    fn probabilities(&self) -> Option<&[f64]> {
        Some(&self.p)
    }
}

/// Two-state Markov on/off chains, one per client (FedAU §2.6).
#[derive(Debug, Clone)]
pub struct Markov {
    p: Vec<f64>,
    on_to_off: Vec<f64>,
    off_to_on: Vec<f64>,
    state: Vec<bool>,
    /// Rounds already advanced.
    advanced: u64,
    seed: u64,
}

impl Markov {
    /// Chains with stationary probabilities `p` and parameter `q`; initial states ~ Bernoulli(p).
    pub fn new(p: Vec<f64>, q: f64, seed: u64) -> Self {
        let (mut up, mut down) = (Vec::with_capacity(p.len()), Vec::with_capacity(p.len()));
        for &pi in &p {
            let d = q * (1.0 / pi - 1.0);
            if d > 1.0 {
                up.push(q / d);
                down.push(1.0);
            } else {
                up.push(q);
                down.push(d);
            }
        }
        let state = (0..p.len())
            .map(|c| unit(seed, Purpose::Participation, u64::MAX, c as u64, 2) < p[c])
            .collect();
        Self {
            p,
            on_to_off: down,
            off_to_on: up,
            state,
            advanced: 0,
            seed,
        }
    }

    fn advance_to(&mut self, round: u64) {
        while self.advanced <= round {
            let r = self.advanced;
            for (c, s) in self.state.iter_mut().enumerate() {
                let u = unit(self.seed, Purpose::Participation, r, c as u64, 3);
                *s = if *s {
                    u >= self.on_to_off[c]
                } else {
                    u < self.off_to_on[c]
                };
            }
            self.advanced += 1;
        }
    }
}

impl Participation for Markov {
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        self.advance_to(round);
        available
            .iter()
            .copied()
            .filter(|&c| self.state[c as usize])
            .collect()
    }

    fn probabilities(&self) -> Option<&[f64]> {
        Some(&self.p)
    }

    fn save_state(&self) -> Vec<u8> {
        let mut out = self.advanced.to_le_bytes().to_vec();
        out.extend(self.state.iter().map(|&s| u8::from(s)));
        out
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.len() != 8 + self.state.len() {
            return Err(format!(
                "Markov state holds {} bytes, expected {}",
                state.len(),
                8 + self.state.len()
            ));
        }
        let mut r = [0u8; 8];
        r.copy_from_slice(&state[..8]);
        self.advanced = u64::from_le_bytes(r);
        for (s, &b) in self.state.iter_mut().zip(&state[8..]) {
            *s = b != 0;
        }
        Ok(())
    }
}

/// Cyclic on/off participation (FedAU §2.6), computed in closed form per round.
#[derive(Debug, Clone)]
pub struct Cyclic {
    p: Vec<f64>,
    /// (on length, off length, initial off rounds) per client.
    cycle: Vec<(u64, u64, u64)>,
}

impl Cyclic {
    /// Cycles of period `period` with on-fractions `p`.
    pub fn new(p: Vec<f64>, period: u64, seed: u64) -> Self {
        let cycle = p
            .iter()
            .enumerate()
            .map(|(c, &pi)| {
                let on = ((period as f64 * pi).round() as u64).max(1);
                let off = period.saturating_sub(on).max(1);
                let start =
                    (unit(seed, Purpose::Participation, u64::MAX, c as u64, 4) * off as f64) as u64;
                (on, off, start.min(off - 1))
            })
            .collect();
        Self { p, cycle }
    }

    /// Whether client `c` is on in `round`.
    pub fn is_on(&self, c: ClientId, round: u64) -> bool {
        let (on, off, start) = self.cycle[c as usize];
        round >= start && (round - start) % (on + off) < on
    }
}

impl Participation for Cyclic {
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        available
            .iter()
            .copied()
            .filter(|&c| self.is_on(c, round))
            .collect()
    }

    fn probabilities(&self) -> Option<&[f64]> {
        Some(&self.p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(n: u32) -> Vec<ClientId> {
        (0..n).collect()
    }

    fn frequency(m: &mut dyn Participation, n: u32, rounds: u64) -> Vec<f64> {
        let avail = all(n);
        let mut counts = vec![0u64; n as usize];
        for r in 0..rounds {
            for c in m.select(r, &avail) {
                counts[c as usize] += 1;
            }
        }
        counts.iter().map(|&k| k as f64 / rounds as f64).collect()
    }

    #[test]
    fn uniform_is_deterministic_sorted_and_distinct() {
        let avail = all(100);
        let a = Uniform {
            per_round: 10,
            seed: 7,
        }
        .select(3, &avail);
        assert_eq!(
            a,
            Uniform {
                per_round: 10,
                seed: 7
            }
            .select(3, &avail)
        );
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(
            a,
            Uniform {
                per_round: 10,
                seed: 7
            }
            .select(4, &avail)
        );
    }

    #[test]
    fn bernoulli_frequencies_match_probabilities() {
        let p = vec![0.05, 0.3, 0.9];
        let f = frequency(&mut Bernoulli::new(p.clone(), 1), 3, 20_000);
        for (a, b) in f.iter().zip(&p) {
            assert!((a - b).abs() < 0.015, "{a} vs {b}");
        }
    }

    #[test]
    fn markov_has_the_stationary_probability_and_is_sticky() {
        let p = vec![0.1, 0.5, 0.8];
        let mut m = Markov::new(p.clone(), 0.05, 2);
        let f = frequency(&mut m, 3, 40_000);
        for (a, b) in f.iter().zip(&p) {
            assert!((a - b).abs() < 0.04, "{a} vs {b}");
        }
        // Stickiness: consecutive rounds agree far more often than independent draws would.
        let mut m = Markov::new(vec![0.5], 0.05, 3);
        let seq: Vec<bool> = (0..2000).map(|r| !m.select(r, &[0]).is_empty()).collect();
        let same = seq.windows(2).filter(|w| w[0] == w[1]).count() as f64 / 1999.0;
        assert!(same > 0.9, "{same}");
    }

    #[test]
    fn markov_state_survives_a_checkpoint() {
        let p = vec![0.3; 50];
        let mut a = Markov::new(p.clone(), 0.1, 5);
        for r in 0..10 {
            a.select(r, &all(50));
        }
        let mut b = Markov::new(p, 0.1, 5);
        b.load_state(&a.save_state()).unwrap();
        for r in 10..30 {
            assert_eq!(a.select(r, &all(50)), b.select(r, &all(50)));
        }
    }

    #[test]
    fn cyclic_has_period_and_fraction() {
        let mut m = Cyclic::new(vec![0.25, 0.5], 100, 1);
        let f = frequency(&mut m, 2, 10_000);
        assert!(
            (f[0] - 0.25).abs() < 0.01 && (f[1] - 0.5).abs() < 0.01,
            "{f:?}"
        );
        let c = Cyclic::new(vec![0.3], 20, 9);
        for r in 40..100 {
            assert_eq!(c.is_on(0, r), c.is_on(0, r + 20));
        }
    }
}
