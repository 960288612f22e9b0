//! HTTP listeners. The admin listener serves probes (and, later, metrics);
//! it is plaintext and never exposed outside the cluster. The public webhook
//! listener takes providers' signed callbacks and, in dev mode, serves the
//! simulated phone's page.

pub mod admin;
pub mod dev_phone;
pub mod webhooks;
