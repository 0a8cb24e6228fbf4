//! Criterion benchmark of every matrix product the models run (see
//! `examples/gemm_vs_libs/shapes.rs`), single-threaded with warm caches: this crate's kernels (each
//! family the CPU supports), `matrixmultiply` and `gemm`. Throughput is reported in FLOP/s
//! ("elem/s" = FLOP/s); the peak of the widest fused multiply-add is printed first, to turn the
//! figures into shares of peak.
//!
//! ```text
//! cargo bench -p fedsim-nn --bench gemm                     # everything
//! cargo bench -p fedsim-nn --bench gemm -- "CNN fc1 fwd"    # a filter on the benchmark names
//! ```
//!
//! `examples/gemm_vs_libs` prints the same comparison as one markdown table, faster.

#[path = "../examples/gemm_vs_libs/shapes.rs"]
mod shapes;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fedsim_nn::isa::{self, Isa};
use fedsim_nn::perf::{fma_peak_gflops, fma_probe_isa};
use shapes::{Lib, Operands, cases, max_rel_diff, run};

fn bench(c: &mut Criterion) {
    let peak = fma_peak_gflops(Duration::from_millis(200), 7);
    eprintln!("FMA peak: {peak:.1} GFLOP/s per core ({})", fma_probe_isa());
    let mut libs: Vec<Lib> = isa::available()
        .into_iter()
        .filter(|i| *i != Isa::Portable)
        .map(Lib::Ours)
        .collect();
    libs.extend([Lib::MatrixMultiply, Lib::Gemm]);
    for case in cases() {
        let name = if case.batch == 0 {
            format!("{} {}x{}x{}", case.label, case.m, case.n, case.k)
        } else {
            format!(
                "{} B={} {}x{}x{}",
                case.label, case.batch, case.m, case.n, case.k
            )
        };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(case.flops() as u64));
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(1));
        group.sample_size(20);
        for lib in &libs {
            let diff = max_rel_diff(*lib, libs[0], &case);
            assert!(
                diff < 1e-4,
                "{} disagrees on {}: {diff}",
                lib.name(),
                case.label
            );
            let mut ops = Operands::new(&case);
            group.bench_function(BenchmarkId::from_parameter(lib.name()), |b| {
                b.iter(|| run(*lib, &case, &mut ops))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
