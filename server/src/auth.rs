//! Per-client credentials: a token file that says which token may act for which client ids.
//!
//! Format: one rule per line, `IDS TOKEN`, where IDS is `*` (any id), one id (`7`) or an inclusive range
//! (`0-24`); `#` starts a comment. Example:
//!
//! ```text
//! # hospital A hosts clients 0-24, hospital B 25-49
//! 0-24  3f9c1e...
//! 25-49 a71d0b...
//! ```

use std::path::Path;

use fedsim_types::ClientId;

use crate::ServerError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ids {
    Any,
    Range(ClientId, ClientId),
}

/// Tokens and the client ids each may act for.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    rules: Vec<(Ids, String)>,
}

impl Credentials {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::File {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::parse(&text).map_err(|msg| ServerError::File {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses token-file text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(ids), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `IDS TOKEN`", n + 1));
            };
            let ids = parse_ids(ids).map_err(|e| format!("line {}: {e}", n + 1))?;
            if token.len() < 8 {
                return Err(format!(
                    "line {}: token is shorter than 8 characters",
                    n + 1
                ));
            }
            rules.push((ids, token.to_string()));
        }
        if rules.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Self { rules })
    }

    /// Whether `token` may act for every id in `ids`; the error names the first id it may not.
    pub fn check(&self, token: &str, ids: &[ClientId]) -> Result<(), String> {
        for &id in ids {
            let ok = self.rules.iter().any(|(r, t)| {
                constant_time_eq(t.as_bytes(), token.as_bytes())
                    && match r {
                        Ids::Any => true,
                        Ids::Range(a, b) => (*a..=*b).contains(&id),
                    }
            });
            if !ok {
                return Err(format!("the token is not valid for client {id}"));
            }
        }
        Ok(())
    }
}

fn parse_ids(s: &str) -> Result<Ids, String> {
    if s == "*" {
        return Ok(Ids::Any);
    }
    let num = |x: &str| {
        x.parse::<ClientId>()
            .map_err(|_| format!("`{x}` is not a client id"))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("empty range {s}"));
            }
            Ok(Ids::Range(a, b))
        }
        None => {
            let a = num(s)?;
            Ok(Ids::Range(a, a))
        }
    }
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cover_their_ids_only() {
        let c = Credentials::parse("# comment\n0-4 aaaaaaaa\n7 bbbbbbbb\n").unwrap();
        assert!(c.check("aaaaaaaa", &[0, 4]).is_ok());
        assert!(c.check("aaaaaaaa", &[5]).unwrap_err().contains("client 5"));
        assert!(c.check("bbbbbbbb", &[7]).is_ok());
        assert!(c.check("wrongtoken", &[7]).is_err());
        let any = Credentials::parse("* cccccccc").unwrap();
        assert!(any.check("cccccccc", &[123]).is_ok());
    }

    #[test]
    fn malformed_files_are_rejected() {
        assert!(Credentials::parse("").is_err());
        assert!(Credentials::parse("0-4").unwrap_err().contains("line 1"));
        assert!(Credentials::parse("5-1 aaaaaaaa").is_err());
        assert!(Credentials::parse("x aaaaaaaa").is_err());
        assert!(Credentials::parse("1 short").is_err());
    }
}
