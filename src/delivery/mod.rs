//! Delivery: render a message from the templates, then hand it to the
//! channel's providers in order (retries, failover, circuit breaker).
//!
//! Providers get a [`Message`] holding the plaintext code and the rendered
//! [`Content`], and must not keep either: both are dropped (and wiped) as
//! soon as the send returns.

pub mod config;
mod console;
pub mod dev_phone;
mod dispatcher;
pub mod http;
pub mod inbound;
pub mod lookup;
mod message;
mod provider;
mod route;
pub mod smtp;
pub mod templates;
pub mod twilio;
pub mod web;

pub use console::ConsoleSender;
pub use dispatcher::Dispatcher;
pub use message::{Content, FailureKind, Message, Receipt, SendError};
pub use provider::Provider;
pub use route::{Breaker, BreakerConfig, Dispatch, RetryPolicy, Route};
pub use templates::{CallPrompt, TemplateError, Templates};
