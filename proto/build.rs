//! Compiles `proto/fedsim.proto` with protox (pure Rust, no system protoc) and generates the tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fedsim.proto");
    let fds = protox::compile(["proto/fedsim.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
