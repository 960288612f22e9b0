//! The HTTP plumbing every page shares: the session handle and its cookie,
//! the CSRF check that guards every POST, the security headers on every
//! response, and page rendering.

mod guard;
mod render;
mod session;

pub use guard::{csrf_guard, security_headers};
pub use render::{Templates, View};
pub use session::{Session, session_layer};
