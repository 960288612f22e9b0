//! HTTP listeners. The admin listener serves probes (and, later, metrics);
//! it is plaintext and never exposed outside the cluster. The public webhook
//! listener for telephony providers comes with the voice channel.

pub mod admin;
