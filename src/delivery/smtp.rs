//! Email over SMTP with lettre. Placeholder until the SMTP sender lands.

use serde::{Deserialize, Serialize};

use super::{Content, FailureKind, Message, Receipt, SendError};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub from: String,
}

#[derive(Debug, Clone)]
pub struct SmtpSender {
    name: String,
}

impl SmtpSender {
    pub fn new(name: &str, _config: &SmtpConfig) -> Result<Self, String> {
        Ok(Self {
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn send(&self, _message: &Message, _content: &Content) -> Result<Receipt, SendError> {
        Err(SendError {
            provider: self.name.clone(),
            kind: FailureKind::Rejected,
            reason: "not implemented".to_owned(),
        })
    }
}
