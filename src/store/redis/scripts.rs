//! The Lua scripts, each with the prelude (and budget.lua where it takes
//! from a budget) prepended, loaded once per process, and their
//! invocations.

use std::sync::LazyLock;

use redis::{Cmd, Script, ToRedisArgs};

use crate::domain::limit::Quota;

const PRELUDE: &str = include_str!("lua/prelude.lua");
const BUDGET: &str = include_str!("lua/budget.lua");

/// The scripts. Each runs as EVALSHA and, when a node answers NOSCRIPT
/// (fresh or restarted), is loaded with SCRIPT LOAD and run again
/// (`RedisStore::run`).
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) resend: Script,
    pub(super) fallback_end: Script,
    pub(super) complete: Script,
    pub(super) check: Script,
    pub(super) get: Script,
    pub(super) cancel: Script,
    pub(super) delivery: Script,
    pub(super) press: Script,
    pub(super) acknowledge: Script,
    pub(super) block: Script,
    pub(super) idempotency_begin: Script,
    pub(super) idempotency_finish: Script,
    pub(super) idempotency_abandon: Script,
    pub(super) gcra: Script,
    pub(super) gcra_return: Script,
    pub(super) gcra_wait: Script,
    pub(super) gcra_all: Script,
    pub(super) deadlines_lease: Script,
    pub(super) deadlines_claim: Script,
    pub(super) deadlines_release: Script,
    pub(super) deadlines_leave: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
    let with_budget = |body: &str| format!("{BUDGET}\n{body}");
    Scripts {
        create: with_prelude(&with_budget(include_str!("lua/create.lua"))),
        resend: with_prelude(&with_budget(include_str!("lua/resend.lua"))),
        fallback_end: with_prelude(include_str!("lua/fallback_end.lua")),
        complete: with_prelude(include_str!("lua/complete.lua")),
        check: with_prelude(&with_budget(include_str!("lua/check.lua"))),
        get: with_prelude(include_str!("lua/get.lua")),
        cancel: with_prelude(include_str!("lua/cancel.lua")),
        delivery: with_prelude(include_str!("lua/delivery.lua")),
        press: with_prelude(include_str!("lua/press.lua")),
        acknowledge: with_prelude(include_str!("lua/acknowledge.lua")),
        block: Script::new(include_str!("lua/block.lua")),
        idempotency_begin: Script::new(include_str!("lua/idempotency_begin.lua")),
        idempotency_finish: Script::new(include_str!("lua/idempotency_finish.lua")),
        idempotency_abandon: Script::new(include_str!("lua/idempotency_abandon.lua")),
        gcra: Script::new(&with_budget(include_str!("lua/gcra.lua"))),
        gcra_return: Script::new(&with_budget(include_str!("lua/gcra_return.lua"))),
        gcra_wait: Script::new(&with_budget(include_str!("lua/gcra_wait.lua"))),
        gcra_all: Script::new(&with_budget(include_str!("lua/gcra_all.lua"))),
        deadlines_lease: Script::new(include_str!("lua/deadlines_lease.lua")),
        deadlines_claim: Script::new(include_str!("lua/deadlines_claim.lua")),
        deadlines_release: Script::new(include_str!("lua/deadlines_release.lua")),
        deadlines_leave: Script::new(include_str!("lua/deadlines_leave.lua")),
    }
});

/// A budget's quota as budget.lua takes it: the period (ms) and the burst,
/// or two empty strings for no budget.
pub(super) fn quota_args(invocation: &mut Invocation<'_>, quota: Option<Quota>) {
    match quota {
        Some(q) => invocation.arg(period_millis(q.period)).arg(q.burst),
        None => invocation.arg("").arg(""),
    };
}

/// A quota's period in the whole milliseconds budget.lua counts in,
/// rounded up. Truncated, a period under 1 ms (valid configuration, e.g.
/// `1us` to take a budget out of a load test's way) became 0, and a
/// budget of period 0 has no burst at all: a replica whose clock read 1 ms
/// behind another's was refused. Rounded up, a budget never refills
/// faster than configured.
pub(super) fn period_millis(period: std::time::Duration) -> u64 {
    u64::try_from(period.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One run of a script: its keys and arguments. The `redis` crate's own
/// `ScriptInvocation` sends itself and keeps its EVALSHA command to itself;
/// verifyd also sends a script in a pipeline, followed by `WAIT` on the
/// same connection (`RedisStore::run_durably`), so it builds the command.
pub(super) struct Invocation<'a> {
    script: &'a Script,
    keys: Vec<Vec<u8>>,
    /// Keys the script reaches by name rather than by `KEYS` (the
    /// deadline index), declared after the others so that Redis Cluster
    /// checks them before the script runs: a script never stops halfway
    /// on a key that moved.
    declared: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl<'a> Invocation<'a> {
    pub(super) fn of(script: &'a Script) -> Self {
        Self {
            script,
            keys: Vec::new(),
            declared: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds a key: `KEYS[i]` in the script.
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Declares a key the script reaches by name, after every `key`.
    pub(super) fn declare(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.declared);
        self
    }

    /// Adds an argument: `ARGV[i]` in the script.
    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    pub(super) fn script(&self) -> &'a Script {
        self.script
    }

    /// `EVALSHA sha numkeys keys… args…`.
    pub(super) fn command(&self) -> Cmd {
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.script.get_hash())
            .arg(self.keys.len() + self.declared.len())
            .arg(&self.keys)
            .arg(&self.declared)
            .arg(&self.args);
        command
    }
}

// Keys and arguments carry MACs and destinations: never printed.
impl std::fmt::Debug for Invocation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("script", &self.script.get_hash())
            .field("keys", &self.keys.len())
            .field("args", &self.args.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Invocation, SCRIPTS, period_millis, quota_args};
    use crate::domain::limit::Quota;

    #[test]
    fn a_budget_script_is_never_given_a_period_of_zero() {
        // `1us` is valid configuration: truncated, budget.lua got 0 and the
        // budget no burst at all.
        let mut invocation = Invocation::of(&SCRIPTS.gcra);
        quota_args(
            &mut invocation,
            Some(Quota {
                burst: 5,
                period: Duration::from_micros(1),
            }),
        );
        assert_eq!(invocation.args, [b"1".to_vec(), b"5".to_vec()]);
    }

    #[test]
    fn a_period_is_whole_milliseconds_rounded_up_and_never_zero() {
        assert_eq!(period_millis(Duration::from_micros(1)), 1);
        assert_eq!(period_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(period_millis(Duration::from_millis(360)), 360);
        assert_eq!(period_millis(Duration::MAX), u64::MAX);
    }
}
