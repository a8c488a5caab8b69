//! Compiles proto/ with protox (pure Rust, no system protoc) and emits a file descriptor set
//! for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/confidant/v1/inference.proto",
        "proto/confidant/v1/privacy.proto",
        "proto/confidant/v1/attestation.proto",
        // The Open Inference Protocol (KServe v2; the paths Triton serves).
        "proto/inference/grpc_predict_v2.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("confidant_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        .compile_fds(fds)?;
    Ok(())
}
