//! verifyd: issues, delivers and checks one-time verification codes for
//! self-service password reset.

// A function is one idea: past clippy.toml's threshold (80 lines), split it.
// Tests are exempt: a table of cases reads best whole. (`--all-targets`
// lints the library without cfg(test) too, so no service code escapes.)
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod clock;
pub mod domain;

pub mod proto {
    #![allow(missing_debug_implementations, clippy::all, clippy::too_many_lines)]
    tonic::include_proto!("verifyd.v1");

    /// The encoded descriptors of the tenant API (not the operator API's),
    /// for server reflection on the tenant listener.
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
