//! Generates the gRPC code and the descriptor set (for server reflection)
//! from `proto/` with protox, a pure-Rust protobuf compiler, so the build
//! needs no system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/verifyd/v1/verifyd.proto",
        "proto/verifyd/v1/admin.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }

    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Reflection on the tenant listener describes the tenant API only: the
    // operator API's schema is not advertised where tenants connect.
    let tenant_api = protox::compile([protos[0]], ["proto"])?;
    fs::write(
        out_dir.join("verifyd_descriptor.bin"),
        tenant_api.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
