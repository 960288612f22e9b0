//! Canceling a pending verification: its code stops working and its live
//! call ends.

use super::{Verifier, errors::LookupError};
use crate::domain::{Status, TenantId, Verification, VerificationId};

impl Verifier {
    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Result<Verification, LookupError> {
        self.limits.request(tenant)?;
        let (v, canceled) = self
            .store
            .cancel(tenant, id, self.clock.now())
            .await?
            .ok_or(LookupError::NotFound)?;
        if !canceled {
            return Err(LookupError::NotPending(v.status));
        }
        tracing::info!("verification canceled");
        self.status_changed(&v, Some(Status::Pending), "canceled by the caller");
        self.end_live_call(&v);
        Ok(v)
    }
}
