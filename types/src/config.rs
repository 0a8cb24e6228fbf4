//! Configuration errors: every problem in a scenario names the key it is about.

/// A scenario value that is missing, malformed, out of range or inconsistent with another key.
///
/// `key` is the dotted path of the offending key (`strategy.server_lr`, `participation.p`,
/// `model.layers[3]`); it is empty only for problems of the document as a whole (a TOML syntax error
/// whose position the message gives).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// Dotted path of the key the problem is about.
    pub key: String,
    /// What is wrong, for a person to read.
    pub message: String,
}

impl ConfigError {
    /// A problem with the key `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A problem of the whole document rather than of one key.
    pub fn document(message: impl Into<String>) -> Self {
        Self::new("", message)
    }

    /// The same problem seen from a parent section: `at("strategy")` turns key `server_lr` into
    /// `strategy.server_lr`.
    #[must_use]
    pub fn at(mut self, section: &str) -> Self {
        self.key = match (section.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => section.to_string(),
            (false, false) if self.key.starts_with('[') => format!("{section}{}", self.key),
            (false, false) => format!("{section}.{}", self.key),
        };
        self
    }

    fn render(&self) -> String {
        if self.key.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.key, self.message)
        }
    }
}

/// Checks that a setting is a positive finite number.
pub fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("must be positive, got {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_their_sections() {
        let e = ConfigError::new("server_lr", "must be positive, got 0").at("strategy");
        assert_eq!(e.key, "strategy.server_lr");
        assert_eq!(e.to_string(), "strategy.server_lr: must be positive, got 0");
        let e = ConfigError::new("[2].units", "must be at least 1").at("model.layers");
        assert_eq!(e.key, "model.layers[2].units");
        assert_eq!(
            ConfigError::document("bad TOML").at("").to_string(),
            "bad TOML"
        );
        assert_eq!(ConfigError::document("missing").at("data").key, "data");
    }

    #[test]
    fn positive_refuses_zero_negative_and_non_finite() {
        assert!(positive("lr", 0.1).is_ok());
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = positive("lr", v).unwrap_err();
            assert_eq!(e.key, "lr");
        }
    }
}
