//! The Lua scripts, each with the prelude (and budget.lua where it takes
//! from a budget) prepended, loaded once per process.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use super::record::millis_of;
use crate::domain::limit::Quota;

const PRELUDE: &str = include_str!("lua/prelude.lua");
const BUDGET: &str = include_str!("lua/budget.lua");

/// The scripts. `Script` runs EVALSHA and, when a node answers NOSCRIPT
/// (fresh or restarted), loads the script with SCRIPT LOAD and runs it again.
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) resend: Script,
    pub(super) complete: Script,
    pub(super) check: Script,
    pub(super) get: Script,
    pub(super) cancel: Script,
    pub(super) delivery: Script,
    pub(super) press: Script,
    pub(super) block: Script,
    pub(super) idempotency_begin: Script,
    pub(super) idempotency_finish: Script,
    pub(super) idempotency_abandon: Script,
    pub(super) gcra: Script,
    pub(super) gcra_return: Script,
    pub(super) gcra_wait: Script,
    pub(super) gcra_all: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
    let with_budget = |body: &str| format!("{BUDGET}\n{body}");
    Scripts {
        create: with_prelude(&with_budget(include_str!("lua/create.lua"))),
        resend: with_prelude(&with_budget(include_str!("lua/resend.lua"))),
        complete: with_prelude(include_str!("lua/complete.lua")),
        check: with_prelude(&with_budget(include_str!("lua/check.lua"))),
        get: with_prelude(include_str!("lua/get.lua")),
        cancel: with_prelude(include_str!("lua/cancel.lua")),
        delivery: with_prelude(include_str!("lua/delivery.lua")),
        press: with_prelude(include_str!("lua/press.lua")),
        block: Script::new(include_str!("lua/block.lua")),
        idempotency_begin: Script::new(include_str!("lua/idempotency_begin.lua")),
        idempotency_finish: Script::new(include_str!("lua/idempotency_finish.lua")),
        idempotency_abandon: Script::new(include_str!("lua/idempotency_abandon.lua")),
        gcra: Script::new(&with_budget(include_str!("lua/gcra.lua"))),
        gcra_return: Script::new(&with_budget(include_str!("lua/gcra_return.lua"))),
        gcra_wait: Script::new(&with_budget(include_str!("lua/gcra_wait.lua"))),
        gcra_all: Script::new(&with_budget(include_str!("lua/gcra_all.lua"))),
    }
});

/// A budget's quota as budget.lua takes it: the period (ms) and the burst,
/// or two empty strings for no budget.
pub(super) fn quota_args(invocation: &mut ScriptInvocation<'_>, quota: Option<Quota>) {
    match quota {
        Some(q) => invocation.arg(millis_of(q.period)).arg(q.burst),
        None => invocation.arg("").arg(""),
    };
}
