//! Pure types and rules: no I/O, no clocks, no transport. Everything here is
//! unit-tested without a runtime.

pub mod call;
pub mod caller_ref;
pub mod channel;
pub mod code;
pub mod country;
pub mod destination;
pub mod extension;
pub mod fallback;
pub mod fraud;
pub mod limit;
pub mod lookup;
pub mod policy;
pub mod starts;
pub mod tenant;
pub mod verification;
pub mod verification_id;
pub mod voice;

pub use caller_ref::CallerRef;
pub use channel::Channel;
pub use code::{Code, CodeHash, CodeLength, KeyRing, MatchDigits};
pub use destination::Destination;
pub use extension::Extension;
pub use policy::Policy;
pub use tenant::TenantId;
pub use verification::{
    CheckOutcome, DeliveryReport, DeliveryStatus, Locale, PendingKind, Purpose, SendAttempt,
    SendOutcome, Status, Verification, VoiceMode,
};
pub use verification_id::VerificationId;
