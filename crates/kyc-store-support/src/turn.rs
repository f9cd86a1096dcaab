//! The writer's turn of one SQLite database file, shared by everything in the process that writes
//! to it (the storage adapter and the credits ledger).
//!
//! SQLite lets one connection write at a time and makes the others poll (`busy_timeout`),
//! sleeping 1, 2, 5 … up to 100 ms between tries, in no order. Writers that queue on one fair,
//! first-come first-served lock first find the database free when their turn comes, so the lock
//! passes from one writer to the next at once. Two turns on one file (say, one for the store and
//! one for the ledger) would bring the polling back between them, so the process makes one
//! [`WriterTurn`] per file and hands clones of it to each. Writers in other processes still meet
//! on SQLite's lock and its busy timeout, which stays the guarantee; the turn only orders the
//! writers of this process.
//!
//! Take the turn before a pooled connection, never while holding one, so a writer waiting for its
//! turn holds nothing another writer needs.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// The turn of the writers of one database file (cheap to clone: clones share the turn).
#[derive(Debug, Clone, Default)]
pub struct WriterTurn(Arc<Mutex<()>>);

/// A writer's turn, held until dropped.
pub type Turn = OwnedMutexGuard<()>;

impl WriterTurn {
    /// A new turn, shared by nobody yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the writers before this one to finish; the turn is held until dropped.
    pub async fn take(&self) -> Turn {
        Arc::clone(&self.0).lock_owned().await
    }

    /// Whether `other` is this same turn.
    pub fn is_shared_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_one_turn_and_new_turns_do_not() {
        let turn = WriterTurn::new();
        let clone = turn.clone();
        assert!(turn.is_shared_with(&clone));
        assert!(!turn.is_shared_with(&WriterTurn::new()));
        let held = turn.take().await;
        assert!(
            clone.0.try_lock().is_err(),
            "the clone waits for the holder"
        );
        drop(held);
        assert!(clone.0.try_lock().is_ok());
    }
}
