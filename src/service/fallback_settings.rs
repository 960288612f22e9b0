//! `[fallback]` and `[tenants.NAME.fallback]`: the workflow a start runs by
//! default when it names none (`domain::fallback`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::channel_name::ChannelName;
use crate::domain::{
    Channel, Policy,
    fallback::{Workflow, WorkflowError},
};

/// `[fallback]`: the default workflow of every tenant without its own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// The channels a start tries in order, when it names no workflow and
    /// its channel is the first, e.g. `["sms", "voice"]`. Empty: none.
    pub channels: Vec<ChannelName>,
    /// How long each step waits for a check before the next.
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            step_timeout: Duration::from_secs(60),
        }
    }
}

/// `[tenants.NAME.fallback]`: a tenant's own default workflow, over the
/// server's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelName>>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub step_timeout: Option<Duration>,
}

impl FallbackConfig {
    /// These settings with a tenant's over them.
    pub fn over(&self, tenant: &FallbackOverrides) -> Self {
        Self {
            channels: tenant
                .channels
                .clone()
                .unwrap_or_else(|| self.channels.clone()),
            step_timeout: tenant.step_timeout.unwrap_or(self.step_timeout),
        }
    }

    /// The workflow, if any.
    ///
    /// # Errors
    /// When the channels or the timeout make none.
    pub fn workflow(&self) -> Result<Option<Workflow>, WorkflowError> {
        if self.channels.is_empty() {
            return Ok(None);
        }
        let channels = self.channels.iter().map(|&c| c.into()).collect();
        Workflow::new(channels, self.step_timeout).map(Some)
    }

    /// The first problem with these settings for a tenant whose policy
    /// is `policy` and who may use `allowed` (empty: every channel): its
    /// key under `fallback` and why.
    pub fn problem(
        &self,
        policy: &Policy,
        allowed: &[ChannelName],
    ) -> Option<(&'static str, String)> {
        let workflow = match self.workflow() {
            Ok(Some(workflow)) => workflow,
            Ok(None) => return None,
            Err(problem) => return Some((key(&problem), problem.to_string())),
        };
        if let Err(problem) = workflow.fits(workflow.channels()[0], |c| policy.for_channel(c)) {
            return Some((key(&problem), problem.to_string()));
        }
        let allowed: Vec<Channel> = allowed.iter().map(|&c| c.into()).collect();
        if !allowed.is_empty() && !workflow.channels().iter().all(|c| allowed.contains(c)) {
            return Some((
                "channels",
                "must be channels the tenant may use (its `channels`)".to_owned(),
            ));
        }
        None
    }
}

/// The configuration key a workflow problem is with.
fn key(problem: &WorkflowError) -> &'static str {
    match problem.field() {
        "fallback.step_timeout" => "step_timeout",
        _ => "channels",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_overrides_the_servers_workflow_and_each_is_checked_against_its_policy() {
        let server = FallbackConfig {
            channels: vec![ChannelName::Sms, ChannelName::Voice],
            ..FallbackConfig::default()
        };
        let policy = Policy::default();
        assert_eq!(server.problem(&policy, &[]), None);
        let off = server.over(&FallbackOverrides {
            channels: Some(Vec::new()),
            step_timeout: None,
        });
        assert_eq!(off.workflow(), Ok(None));
        let quick = server.over(&FallbackOverrides {
            channels: None,
            step_timeout: Some(Duration::from_secs(5)),
        });
        assert_eq!(
            quick.problem(&policy, &[]).map(|(key, _)| key),
            Some("step_timeout"),
            "shorter than the 30 s resend cooldown"
        );
        assert_eq!(
            server
                .problem(&policy, &[ChannelName::Sms])
                .map(|(key, _)| key),
            Some("channels"),
            "voice is not the tenant's"
        );
    }
}
