//! Reading a verification, and the delivery reports providers send about
//! its messages and calls.

use super::{Verifier, errors::LookupError};
use crate::domain::{DeliveryReport, TenantId, Verification, VerificationId};

impl Verifier {
    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Result<Verification, LookupError> {
        self.limits.request(tenant)?;
        self.store
            .read(tenant, id, self.clock.now())
            .await?
            .ok_or(LookupError::NotFound)
    }

    /// Applies a provider's delivery report (from a signed status callback)
    /// and tells watchers when it changed something. A report that the
    /// latest send failed brings the next fallback step forward: the
    /// deadline timer runs it once the resend wait allows. Reports for unknown or
    /// purged verifications are dropped: the provider cannot do better.
    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
    ) -> Result<(), LookupError> {
        // The resend wait a hastened fallback step keeps to, which no
        // channel changes.
        let policy = &self.settings.tenants.get(tenant).policy;
        match self
            .store
            .record_delivery(tenant, id, report, policy, self.clock.now())
            .await?
        {
            Some((true, _)) => {
                tracing::info!(provider_status = %report.status, "delivery status");
                Ok(())
            }
            Some((false, _)) => Ok(()),
            None => Err(LookupError::NotFound),
        }
    }
}
