//! What the use cases send through: the templates and a route per channel.

use super::{provider::Provider, route::Route, templates::Templates};
use crate::domain::Channel;

/// The templates and each channel's route; a channel without one is off.
#[derive(Debug)]
pub struct Dispatcher {
    pub templates: Templates,
    pub sms: Option<Route>,
    pub voice: Option<Route>,
    pub email: Option<Route>,
    /// Risk signals before phone sends (`[lookup]`), when any tenant uses
    /// them.
    pub lookup: Option<super::lookup::Lookup>,
}

impl Dispatcher {
    pub fn route(&self, channel: Channel) -> Option<&Route> {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Voice => self.voice.as_ref(),
            Channel::Email => self.email.as_ref(),
        }
    }

    /// The voice route's provider named `name`, to end a call it placed.
    pub fn voice_provider(&self, name: &str) -> Option<Provider> {
        self.voice
            .as_ref()?
            .providers()
            .find(|(p, _)| p.name() == name)
            .map(|(p, _)| p.clone())
    }
}
