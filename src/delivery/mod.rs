//! Delivery: render a message from the templates, then hand it to the
//! channel's providers in order (retries, failover, circuit breaker).
//!
//! Providers get a [`Message`] holding the plaintext code and the rendered
//! [`Content`], and must not keep either: both are dropped (and wiped) as
//! soon as the send returns.

mod console;
pub mod http;
mod message;
mod route;
pub mod setup;
pub mod smtp;
pub mod templates;
pub mod twilio;
pub mod web;

pub use console::ConsoleSender;
pub use message::{Content, FailureKind, Message, Receipt, SendError};
pub use route::{Breaker, BreakerConfig, Dispatch, RetryPolicy, Route};
pub use templates::{CallPrompt, TemplateError, Templates};

use crate::domain::Channel;

/// One way to deliver messages.
#[derive(Debug, Clone)]
pub enum Provider {
    Console(ConsoleSender),
    Twilio(twilio::Twilio),
    Http(http::HttpSms),
    Smtp(smtp::SmtpSender),
}

impl Provider {
    pub fn name(&self) -> &str {
        match self {
            Self::Console(_) => ConsoleSender::PROVIDER,
            Self::Twilio(twilio) => twilio.name(),
            Self::Http(http) => http.name(),
            Self::Smtp(smtp) => smtp.name(),
        }
    }

    pub async fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        match self {
            Self::Console(console) => console.send(message, content),
            Self::Twilio(twilio) => twilio.send(message, content).await,
            Self::Http(http) => http.send(message, content).await,
            Self::Smtp(smtp) => smtp.send(message, content).await,
        }
    }
}

/// The templates and each channel's route; a channel without one is off.
#[derive(Debug)]
pub struct Dispatcher {
    pub templates: Templates,
    pub sms: Option<Route>,
    pub voice: Option<Route>,
    pub email: Option<Route>,
}

impl Dispatcher {
    pub fn route(&self, channel: Channel) -> Option<&Route> {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Voice => self.voice.as_ref(),
            Channel::Email => self.email.as_ref(),
        }
    }
}
