//! HTTP listeners. The admin listener serves probes (and, later, metrics);
//! it is plaintext and never exposed outside the cluster. The public webhook
//! listener takes providers' signed callbacks.

pub mod admin;
pub mod webhooks;
