//! Staleness functions of the asynchronous strategies (FedBuff, FedAsync): how much an update that
//! trained from a model `τ` server updates old counts.

use fedsim_types::ConfigError;
use serde::{Deserialize, Serialize};

/// `s(τ)`, a weight in (0, 1] that does not grow with the staleness τ (`staleness = { kind = … }`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Staleness {
    /// `s(τ) = 1`.
    Constant,
    /// `s(τ) = (1 + τ)^(−a)`; `a = 0.5` is FedBuff's `1/√(1+τ)`.
    Polynomial {
        /// The exponent `a ≥ 0`.
        a: f64,
    },
    /// `s(τ) = 1` for `τ ≤ b`, else `1 / (a(τ − b) + 1)` (FedAsync's hinge).
    Hinge {
        /// The slope `a ≥ 0`.
        a: f64,
        /// Staleness tolerated at full weight.
        b: u64,
    },
}

impl Default for Staleness {
    /// FedBuff's default, `1/√(1+τ)`.
    fn default() -> Self {
        Staleness::Polynomial { a: 0.5 }
    }
}

impl Staleness {
    /// The weight of an update of staleness `tau`.
    pub fn weight(&self, tau: u64) -> f64 {
        match *self {
            Staleness::Constant => 1.0,
            Staleness::Polynomial { a } => (1.0 + tau as f64).powf(-a),
            Staleness::Hinge { a, b } => {
                if tau <= b {
                    1.0
                } else {
                    1.0 / (a * (tau - b) as f64 + 1.0)
                }
            }
        }
    }

    /// Checks the parameters; `key` is the setting's name (e.g. `staleness`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let a = match *self {
            Staleness::Constant => return Ok(()),
            Staleness::Polynomial { a } | Staleness::Hinge { a, .. } => a,
        };
        if a.is_finite() && a >= 0.0 {
            Ok(())
        } else {
            Err(ConfigError::new(
                format!("{key}.a"),
                format!("must be a finite number ≥ 0, got {a}"),
            ))
        }
    }

    /// A short label for names and logs.
    pub fn label(&self) -> String {
        match self {
            Staleness::Constant => "constant".into(),
            Staleness::Polynomial { a } => format!("poly(a={a})"),
            Staleness::Hinge { a, b } => format!("hinge(a={a},b={b})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, proptest};

    #[test]
    fn values_match_the_formulas() {
        assert_eq!(Staleness::Constant.weight(7), 1.0);
        assert_eq!(Staleness::default().weight(0), 1.0);
        assert!((Staleness::default().weight(3) - 0.5).abs() < 1e-15);
        let hinge = Staleness::Hinge { a: 2.0, b: 1 };
        assert_eq!(hinge.weight(1), 1.0);
        assert!((hinge.weight(3) - 0.2).abs() < 1e-15);
        assert!(
            Staleness::Polynomial { a: -1.0 }
                .validate("staleness")
                .unwrap_err()
                .to_string()
                .contains("staleness.a")
        );
    }

    proptest! {
        #[test]
        fn weights_are_in_unit_interval_and_never_grow(a in 0.0f64..4.0, b in 0u64..5, tau in 0u64..1000) {
            for s in [Staleness::Constant, Staleness::Polynomial { a }, Staleness::Hinge { a, b }] {
                let (w0, w1) = (s.weight(tau), s.weight(tau + 1));
                prop_assert!(w0 > 0.0 && w0 <= 1.0);
                prop_assert!(w1 <= w0);
            }
        }
    }
}
