//! Per-section timers inside the models' training steps (development only).
//!
//! A [`Section`] records its lifetime under a name when the `profile` feature is on and compiles to
//! nothing otherwise. This module depends on nothing else in the crate, so the kernels
//! (`gemm`) and the throughput helpers (`perf`) can both use it without importing each other.

#[cfg(feature = "profile")]
use std::time::{Duration, Instant};

/// Accumulated time per named section of the models' steps (only with the `profile` feature).
#[cfg(feature = "profile")]
mod sections {
    use std::cell::RefCell;
    use std::time::Duration;

    thread_local! {
        static TIMES: RefCell<Vec<(&'static str, Duration, u64)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn add(name: &'static str, d: Duration) {
        TIMES.with(|t| {
            let mut t = t.borrow_mut();
            match t.iter_mut().find(|e| e.0 == name) {
                Some(e) => {
                    e.1 += d;
                    e.2 += 1;
                }
                None => t.push((name, d, 1)),
            }
        });
    }

    pub(crate) fn take() -> Vec<(&'static str, Duration, u64)> {
        TIMES.with(|t| std::mem::take(&mut *t.borrow_mut()))
    }
}

/// A timed section of a model step: records its lifetime under `name` when the `profile` feature
/// is on, and is a no-op otherwise.
pub(crate) struct Section {
    #[cfg(feature = "profile")]
    name: &'static str,
    #[cfg(feature = "profile")]
    start: Instant,
}

impl Section {
    /// Starts a section.
    #[inline(always)]
    pub(crate) fn new(name: &'static str) -> Self {
        #[cfg(not(feature = "profile"))]
        let _ = name;
        Self {
            #[cfg(feature = "profile")]
            name,
            #[cfg(feature = "profile")]
            start: Instant::now(),
        }
    }
}

/// Without the `profile` feature a section records nothing; the empty `Drop` keeps the explicit
/// `drop(section)` that ends a section before its scope does meaningful in both builds.
#[cfg(not(feature = "profile"))]
impl Drop for Section {
    #[inline(always)]
    fn drop(&mut self) {}
}

#[cfg(feature = "profile")]
impl Drop for Section {
    fn drop(&mut self) {
        sections::add(self.name, self.start.elapsed());
    }
}

/// Time spent in each named section of the models on this thread since the last call, as
/// `(name, total, calls)` (only with the `profile` feature).
#[cfg(feature = "profile")]
pub fn profile_report() -> Vec<(&'static str, Duration, u64)> {
    sections::take()
}
