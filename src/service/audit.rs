//! The audit log: one structured event per status change, for security
//! teams, under the `verifyd::audit` tracing target (so a log pipeline can
//! route it apart). Each event names the tenant, the verification, the
//! channel, the old and new status, the masked destination and why, and
//! the caller's reference and tags when the start gave some (the only line
//! that carries them); never a code, key or full destination. Fields are recorded as strings, not
//! through `Display`: the JSON formatter writes a string in one piece.

use crate::domain::{Status, Verification};

/// Records that `v` moved from `from` (`None`: it was just created) to its
/// current status, because of `reason`.
pub fn status_changed(v: &Verification, from: Option<Status>, reason: &'static str) {
    if from == Some(v.status) {
        return;
    }
    // Absent fields are left out of the line (tracing skips a `None`).
    let tags = v.caller_ref.tags_json();
    tracing::info!(
        target: "verifyd::audit",
        event = "status_changed",
        tenant = v.tenant.as_str(),
        verification = v.id.as_str(),
        channel = v.delivery.channel.as_str(),
        from = from.map_or("none", Status::as_str),
        to = v.status.as_str(),
        destination = v.masked_destination().as_str(),
        reason,
        reference = v.caller_ref.reference.as_deref(),
        tags = tags.as_deref(),
        "verification status changed"
    );
}
