//! What the voice use cases answer each call webhook with: what the call
//! says, then whether it asks for keys or hangs up. The webhook layer turns
//! it into the provider's call instructions.

use crate::domain::voice::Menu;

/// What the call says, then what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStep {
    pub locale: Option<String>,
    pub say: Vec<String>,
    pub next: Next,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask for keys; `prompt` is spoken while waiting. No input ends the
    /// call with `goodbye`.
    Gather {
        menu: Menu,
        one_key: bool,
        prompt: String,
        goodbye: String,
        timeout_secs: u8,
    },
    Hangup,
}
