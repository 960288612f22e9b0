//! verifyd: issues, delivers and checks one-time verification codes for
//! self-service password reset.

pub mod clock;
pub mod domain;

pub mod proto {
    #![allow(missing_debug_implementations, clippy::all)]
    tonic::include_proto!("verifyd.v1");

    /// The encoded descriptors of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("verifyd_descriptor");
}
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod grpc;
pub mod http;
pub mod ratelimit;
pub mod secret;
pub mod send_test;
pub mod service;
pub mod store;
pub mod telemetry;
