//! A channel's route: its providers in order of preference, each behind a
//! circuit breaker, with bounded retries.
//!
//! Timeouts, 5xx, 429 and unreachable providers are retried with
//! exponential backoff and jitter, then
//! the next provider is tried; a provider's refusal (4xx) goes straight to
//! the next provider; a refused destination ends the send, since no provider
//! will do better. Everything happens within the caller's budget.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{
    message::{Content, FailureKind, Message, Receipt, SendError},
    provider::Provider,
};
use crate::{
    clock::Clock,
    telemetry::{self, Metrics},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// The longest one request to a provider may take.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// Retries per provider after a timeout or 5xx.
    pub retries: u32,
    /// The pause before the first retry; it doubles for each later one.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter" on the upper half: a random pause in `[d/2, d]`, so
    /// replicas retrying after a shared outage do not arrive together.
    fn jittered(d: Duration) -> Duration {
        if d.is_zero() {
            return d;
        }
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=d - half)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed sends that open the circuit.
    pub failures: u32,
    /// How long an open circuit skips the provider before one probe.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: SystemTime,
    },
    /// One probe is in flight; everyone else still skips the provider.
    HalfOpen,
}

/// Skips a provider that keeps failing, and lets one send probe it again
/// once `open_for` has passed on the service clock.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<BreakerState>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a send may use the provider now.
    fn allow(&self, now: SystemTime) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    fn succeeded(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) =
            BreakerState::Closed { failures: 0 };
    }

    /// Ends a probe that could not run: the provider may be probed again
    /// at once.
    fn released(&self, now: SystemTime) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if *state == BreakerState::HalfOpen {
            *state = BreakerState::Open { until: now };
        }
    }

    fn failed(&self, now: SystemTime) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let open = BreakerState::Open {
            until: now + self.config.open_for,
        };
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 < self.config.failures => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            _ => open,
        };
    }
}

/// One try at one provider, as recorded on the verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub provider: String,
    pub at: SystemTime,
    pub result: Result<Receipt, SendError>,
}

/// Everything a send did, and how it ended.
#[derive(Debug)]
pub struct Dispatch {
    pub attempts: Vec<Attempt>,
    pub result: Result<Receipt, SendError>,
}

impl Dispatch {
    /// A send that failed before any provider was tried.
    pub fn failed(provider: &str, kind: FailureKind, reason: &str, at: SystemTime) -> Self {
        let error = SendError::new(provider, kind, reason);
        Self {
            attempts: vec![Attempt {
                provider: provider.to_owned(),
                at,
                result: Err(error.clone()),
            }],
            result: Err(error),
        }
    }
}

#[derive(Debug)]
pub struct Route {
    providers: Vec<(Provider, Breaker)>,
    retry: RetryPolicy,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Route {
    pub fn new(
        providers: Vec<Provider>,
        retry: RetryPolicy,
        breaker: BreakerConfig,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        for provider in &providers {
            metrics.set_circuit_open(provider.name(), false);
        }
        Self {
            providers: providers
                .into_iter()
                .map(|p| (p, Breaker::new(breaker)))
                .collect(),
            retry,
            clock,
            metrics,
        }
    }

    pub fn providers(&self) -> impl Iterator<Item = (&Provider, &Breaker)> {
        self.providers.iter().map(|(p, b)| (p, b))
    }

    /// Sends through the first provider that takes the message, within
    /// `budget`. Each provider gets an equal share of the time left, so one
    /// that hangs cannot use up the time of those after it.
    pub async fn send(&self, message: &Message, content: &Content, budget: Duration) -> Dispatch {
        let give_up = Instant::now() + budget;
        let mut attempts = Vec::new();
        let mut last_error = None;
        for (index, (provider, breaker)) in self.providers.iter().enumerate() {
            if !breaker.allow(self.clock.now()) {
                self.metrics
                    .provider_skipped(message.delivery.channel, provider.name());
                let skipped = self.error(
                    provider,
                    FailureKind::NotTried,
                    "circuit open: provider skipped",
                );
                attempts.push(self.attempt(provider, Err(skipped.clone())));
                last_error = Some(skipped);
                continue;
            }
            let providers_left = u32::try_from(self.providers.len() - index).unwrap_or(u32::MAX);
            let share = give_up.saturating_duration_since(Instant::now()) / providers_left;
            let until = Instant::now() + share;
            let tried = self
                .try_provider(provider, breaker, message, content, until, &mut attempts)
                .await;
            let open = !matches!(breaker.state(), BreakerState::Closed { .. });
            self.metrics.set_circuit_open(provider.name(), open);
            match tried {
                Tried::Accepted(receipt) => {
                    return Dispatch {
                        attempts,
                        result: Ok(receipt),
                    };
                }
                Tried::Final(error) => {
                    return Dispatch {
                        attempts,
                        result: Err(error),
                    };
                }
                Tried::Next(error) => last_error = Some(error),
            }
        }
        let error = last_error
            .unwrap_or_else(|| SendError::new("", FailureKind::NotTried, "no provider to try"));
        Dispatch {
            attempts,
            result: Err(error),
        }
    }

    /// One provider, with retries, until `until`. Every way out settles the
    /// breaker, so a half-open probe always resolves.
    async fn try_provider(
        &self,
        provider: &Provider,
        breaker: &Breaker,
        message: &Message,
        content: &Content,
        until: Instant,
        attempts: &mut Vec<Attempt>,
    ) -> Tried {
        let mut backoff = self.retry.backoff;
        let mut retry = 0;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            let timeout = self.retry.attempt_timeout.min(remaining);
            let result = if timeout.is_zero() {
                Err(self.error(
                    provider,
                    FailureKind::NotTried,
                    "no time left for this provider",
                ))
            } else {
                let span = telemetry::provider_span(
                    provider.name(),
                    message.delivery.channel.as_str(),
                    retry,
                );
                let began = std::time::Instant::now();
                let result = tokio::time::timeout(timeout, provider.send(message, content))
                    .instrument(span)
                    .await
                    .unwrap_or_else(|_| {
                        Err(self.error(
                            provider,
                            FailureKind::Transient,
                            &format!("timed out after {}ms", timeout.as_millis()),
                        ))
                    });
                self.metrics.provider_try(
                    message.delivery.channel,
                    provider.name(),
                    result.is_ok(),
                    began.elapsed(),
                );
                result
            };
            attempts.push(self.attempt(provider, result.clone()));
            let error = match result {
                Ok(receipt) => {
                    breaker.succeeded();
                    return Tried::Accepted(receipt);
                }
                Err(error) => error,
            };
            match error.kind {
                // The provider works; the destination does not.
                FailureKind::Destination => {
                    breaker.succeeded();
                    return Tried::Final(error);
                }
                FailureKind::Rejected | FailureKind::Unconfirmed => {
                    breaker.failed(self.clock.now());
                    return Tried::Next(error);
                }
                // Our budget ran out before the provider got a try: not its
                // fault, but a probe must still end.
                FailureKind::NotTried => {
                    breaker.released(self.clock.now());
                    return Tried::Next(error);
                }
                FailureKind::Transient | FailureKind::Unsent => {
                    let pause = RetryPolicy::jittered(backoff);
                    let fits = Instant::now() + pause < until;
                    if retry == self.retry.retries || !fits {
                        breaker.failed(self.clock.now());
                        return Tried::Next(error);
                    }
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    retry += 1;
                }
            }
        }
    }

    fn error(&self, provider: &Provider, kind: FailureKind, reason: &str) -> SendError {
        SendError::new(provider.name(), kind, reason)
    }

    fn attempt(&self, provider: &Provider, result: Result<Receipt, SendError>) -> Attempt {
        Attempt {
            provider: provider.name().to_owned(),
            at: self.clock.now(),
            result,
        }
    }
}

/// How one provider's tries ended.
enum Tried {
    Accepted(Receipt),
    /// No provider can do better.
    Final(SendError),
    /// Try the next provider.
    Next(SendError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_probes_once_later() {
        let breaker = Breaker::new(BreakerConfig {
            failures: 3,
            open_for: Duration::from_secs(30),
        });
        for _ in 0..2 {
            assert!(breaker.allow(T0));
            breaker.failed(T0);
        }
        breaker.succeeded();
        for _ in 0..3 {
            assert!(breaker.allow(T0));
            breaker.failed(T0);
        }
        assert!(!breaker.allow(T0 + Duration::from_secs(29)), "open");
        assert!(breaker.allow(T0 + Duration::from_secs(30)), "one probe");
        assert!(!breaker.allow(T0 + Duration::from_secs(30)), "only one");
        breaker.failed(T0 + Duration::from_secs(30));
        assert!(!breaker.allow(T0 + Duration::from_secs(59)), "open again");
        assert!(breaker.allow(T0 + Duration::from_secs(60)));
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let d = Duration::from_millis(200);
        for _ in 0..1_000 {
            let j = RetryPolicy::jittered(d);
            assert!(j >= d / 2 && j <= d, "{j:?}");
        }
        assert_eq!(RetryPolicy::jittered(Duration::ZERO), Duration::ZERO);
    }
}
