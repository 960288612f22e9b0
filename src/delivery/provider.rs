//! The providers a route sends through: every configured sender behind one
//! type.

use super::{
    console::ConsoleSender,
    dev_phone::DevPhone,
    http,
    message::{Content, Message, Receipt, SendError},
    smtp, twilio,
};

/// One way to deliver messages.
#[derive(Debug, Clone)]
pub enum Provider {
    Console(ConsoleSender),
    /// Dev mode's simulated phone, which takes the console's calls.
    DevPhone(DevPhone),
    Twilio(twilio::Twilio),
    Http(http::HttpSms),
    Smtp(smtp::SmtpSender),
}

impl Provider {
    pub fn name(&self) -> &str {
        match self {
            Self::Console(_) => ConsoleSender::PROVIDER,
            Self::DevPhone(_) => DevPhone::PROVIDER,
            Self::Twilio(twilio) => twilio.name(),
            Self::Http(http) => http.name(),
            Self::Smtp(smtp) => smtp.name(),
        }
    }

    pub async fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        match self {
            Self::Console(console) => console.send(message, content),
            Self::DevPhone(phone) => phone.send(message, content),
            Self::Twilio(twilio) => twilio.send(message, content).await,
            Self::Http(http) => http.send(message, content).await,
            Self::Smtp(smtp) => smtp.send(message, content).await,
        }
    }

    /// Ends a call this provider placed (its verification was decided,
    /// canceled or resent). Providers that place no calls have none to end.
    pub async fn end_call(&self, reference: &str) -> Result<(), SendError> {
        match self {
            Self::Twilio(twilio) => twilio.end_call(reference).await,
            Self::DevPhone(phone) => phone.end_call(reference),
            Self::Console(_) | Self::Http(_) | Self::Smtp(_) => Ok(()),
        }
    }
}
