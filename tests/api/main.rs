//! One integration-test binary (each links the whole crate): the real
//! server on ephemeral ports, called through the generated gRPC client.

mod fake_twilio;
mod helpers;
mod pki;
mod redis_server;
mod smtp_sink;

mod admin;
mod auth;
mod binary;
mod cli;
mod dev_phone;
mod drain;
mod email;
mod extensions;
mod fallback;
mod flows;
mod fraud;
mod fuzz_regressions;
mod gateway;
mod idempotency;
mod lifecycle;
mod limits;
mod loadtest;
mod locales;
mod lookup;
mod metrics;
mod model;
mod redis_cluster;
mod redis_deadlines;
mod redis_durability;
mod redis_sentinel;
mod redis_store;
mod references;
mod rotation;
mod server;
mod store_parity;
mod tenants;
mod tls;
mod twilio;
mod validation;
mod voice;
mod watch;
