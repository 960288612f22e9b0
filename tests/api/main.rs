//! One integration-test binary (each links the whole crate): the real
//! server on ephemeral ports, called through the generated gRPC client.

mod helpers;

mod binary;
mod flows;
mod idempotency;
mod lifecycle;
mod limits;
mod server;
mod validation;
mod watch;
