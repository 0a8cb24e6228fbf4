//! The instruction sets the matrix-product kernels can use, detected at run time, and the one in use.
//!
//! By default the widest kernel family the CPU supports is used: [`Isa::Avx512`] when the CPU has
//! AVX-512F and AVX-512VL (plus AVX2 and FMA), else [`Isa::Avx2`] with AVX2 and FMA, else [`Isa::Portable`]. The
//! environment variable `FEDSIM_KERNEL` (`portable`, `avx2`, `avx512` or `auto`), read once per
//! process, forces a family, for tests and benchmarks; a family the CPU cannot run falls back to the
//! widest one it can (with a warning on standard error).
//!
//! The AVX2 and AVX-512 kernels give bit-identical results (every element of a product is summed in
//! the same order with the same fused multiply-adds; only the number of elements computed side by
//! side differs). The portable kernels (`matrixmultiply`) sum in a different order, so they agree
//! with the others only to rounding.

use std::sync::OnceLock;

/// A family of matrix-product kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// `matrixmultiply` (any CPU).
    Portable,
    /// Hand-written AVX2 + FMA kernels (x86-64).
    Avx2,
    /// Hand-written AVX-512F + AVX-512VL kernels (x86-64), bit-identical to [`Isa::Avx2`].
    Avx512,
}

impl Isa {
    /// Every family, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// Short name, as accepted by `FEDSIM_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Descriptive name for reports.
    pub fn label(self) -> &'static str {
        match self {
            Isa::Portable => "portable (matrixmultiply)",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512f",
        }
    }

    /// Parses a `FEDSIM_KERNEL` value (`None` for `auto` or an unknown name).
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the family.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => has_avx2_fma(),
            Isa::Avx512 => has_avx512_kernels(),
        }
    }
}

/// Whether the AVX2 + FMA instructions are available.
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512F instructions are available.
#[inline]
pub(crate) fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 kernels can run: AVX-512F and AVX-512VL, plus AVX2 and FMA (which they
/// also use).
#[inline]
pub(crate) fn has_avx512_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma() && has_avx512f() && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The widest family this CPU runs.
pub fn widest() -> Isa {
    Isa::ALL
        .into_iter()
        .rev()
        .find(|i| i.is_available())
        .unwrap_or(Isa::Portable)
}

/// Every family this CPU runs, narrowest first.
pub fn available() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// The family used by the models' products: the widest available, unless `FEDSIM_KERNEL` asks for
/// another (read on first use, then fixed for the process, so every thread uses the same kernels).
pub fn selected() -> Isa {
    static SELECTED: OnceLock<Isa> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        let Ok(v) = std::env::var("FEDSIM_KERNEL") else {
            return widest();
        };
        if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("auto") {
            return widest();
        }
        match Isa::parse(&v) {
            Some(isa) if isa.is_available() => isa,
            Some(isa) => {
                let fallback = Isa::ALL
                    .into_iter()
                    .rev()
                    .find(|i| *i < isa && i.is_available());
                let fallback = fallback.unwrap_or(Isa::Portable);
                eprintln!(
                    "FEDSIM_KERNEL={v}: this CPU cannot run the {} kernels; using {}",
                    isa.name(),
                    fallback.name()
                );
                fallback
            }
            None => {
                eprintln!("FEDSIM_KERNEL={v}: unknown (portable, avx2, avx512, auto); using auto");
                widest()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_selection_is_available() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
            assert_eq!(Isa::parse(&isa.name().to_uppercase()), Some(isa));
        }
        assert_eq!(Isa::parse("auto"), None);
        assert!(selected().is_available());
        assert!(widest().is_available());
        assert_eq!(available().first(), Some(&Isa::Portable));
        assert!(!has_avx512_kernels() || has_avx2_fma());
    }
}
