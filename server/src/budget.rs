//! Memory for received updates: a byte budget shared by the service (uploads being received) and the
//! round driver (updates waiting for their turn in client-id order).
//!
//! An upload that fits in the budget is assembled and decoded in memory; one that does not is written
//! chunk by chunk to a spool file in the run directory and decoded only when the engine folds it in.
//! So the coordinator holds at most about `limit` bytes of updates (plus one update, which is always
//! allowed in memory) whatever the number of clients and the order their results arrive in: its memory
//! is O(model + limit), not O(clients × model).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fedsim_engine::engine::PayloadSource;
use fedsim_proto::wire;
use fedsim_types::{ClientId, Payload};

use crate::ids::random_hex;

/// The byte budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// Reserves `bytes` if they fit, or if nothing is reserved (one update always fits).
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used != 0 && used.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.peak.fetch_max(used + bytes, Ordering::Relaxed);
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Most bytes reserved at once since the last call (which starts a new period).
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.used(), Ordering::Relaxed)
    }
}

/// Bytes held against the budget, released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Gives back all but `bytes` of the reservation (what a decoded update keeps once its encoded
    /// bytes are freed).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A received update.
#[derive(Debug)]
pub enum Received {
    /// Decoded and validated, in memory.
    Memory(Payload, Reservation),
    /// The encoded payload in a spool file, not yet decoded.
    Spooled(SpoolFile),
}

impl Received {
    /// The decoded payload (reads and removes a spool file).
    pub fn into_payload(self) -> Result<Payload, String> {
        match self {
            Received::Memory(p, _) => Ok(p),
            Received::Spooled(f) => f.load(),
        }
    }
}

impl PayloadSource for Received {
    fn peek(&self) -> Option<&Payload> {
        match self {
            Received::Memory(p, _) => Some(p),
            Received::Spooled(_) => None,
        }
    }

    fn load(self: Box<Self>) -> Result<Payload, String> {
        self.into_payload()
    }
}

/// A spool file, removed when dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    limits: wire::DecodeLimits,
}

impl SpoolFile {
    /// A new (not yet created) spool file for `client`'s result of `round` in `dir`, to be decoded under
    /// `limits`.
    pub fn new(
        dir: &Path,
        round: u64,
        client: ClientId,
        limits: wire::DecodeLimits,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("r{round}-c{client}-{}.bin", random_hex(4)));
        Ok(Self { path, limits })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decodes (and validates) the spooled payload.
    pub fn load(self) -> Result<Payload, String> {
        let bytes = std::fs::read(&self.path).map_err(|e| format!("spooled update: {e}"))?;
        wire::decode_untrusted(bytes.into(), self.limits).map_err(|e| e.to_string())
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_the_limit_but_always_admit_one() {
        let b = MemoryBudget::new(10);
        let big = b.try_reserve(100).expect("one update always fits");
        assert!(b.try_reserve(1).is_none());
        drop(big);
        let r1 = b.try_reserve(6).unwrap();
        assert!(b.try_reserve(5).is_none());
        let r2 = b.try_reserve(4).unwrap();
        assert_eq!(b.used(), 10);
        drop((r1, r2));
        assert_eq!(b.used(), 0);
        assert_eq!(b.take_peak(), 100);
        assert_eq!(b.take_peak(), 0);
    }

    #[test]
    fn spool_files_round_trip_and_vanish() {
        let dir = std::env::temp_dir().join(format!("fedsim-spool-{}", std::process::id()));
        let f = SpoolFile::new(&dir, 3, 7, wire::DecodeLimits::tensors(1)).unwrap();
        let p = Payload::new().with("delta", fedsim_types::TensorData::vector(vec![1.0, -2.0]));
        std::fs::write(f.path(), wire::encode(&p)).unwrap();
        let path = f.path().to_path_buf();
        assert_eq!(f.load().unwrap(), p);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
