//! This replica's part in the shared deadlines (`deadlines`): its name in
//! the leases, its connection for the scans, and the scan under way.

use std::{
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use rand::{RngCore as _, TryRngCore as _};

use super::connection::Connection;

/// This replica's part in the shared deadlines.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// Names this replica in the leases.
    pub(super) owner: String,
    /// Each tag is read alone (Redis Cluster) rather than a bucket at once.
    pub(super) cluster: bool,
    /// A connection of its own, so that requests never queue behind a
    /// scan's reads.
    pub(super) connection: Connection,
    scan: Mutex<Scan>,
}

#[derive(Debug)]
pub(super) struct Scan {
    /// When the next scan is due; `None` until the first call, which
    /// schedules the first scan a period on (a replica starting has
    /// nothing of its own due, and the others read meanwhile).
    pub(super) next: Option<SystemTime>,
    /// The buckets of the scan under way still to read.
    pub(super) left: Vec<u32>,
}

impl Deadlines {
    pub(super) fn new(cluster: bool, connection: Connection) -> Self {
        let mut id = [0u8; 8];
        rand::rngs::OsRng.unwrap_err().fill_bytes(&mut id);
        Self {
            owner: hex::encode(id),
            cluster,
            connection,
            scan: Mutex::new(Scan {
                next: None,
                left: Vec::new(),
            }),
        }
    }

    pub(super) fn scan(&self) -> std::sync::MutexGuard<'_, Scan> {
        self.scan.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
