//! Generates the verifyd client from the service's proto with protox, a
//! pure-Rust protobuf compiler, so the build needs no system `protoc`. This
//! is what an integrator does with the published proto: the portal does not
//! depend on the verifyd crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/verifyd/v1/verifyd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../../proto"])?;
    tonic_prost_build::configure()
        // The portal only calls verifyd.
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
