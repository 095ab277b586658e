//! News of scopes, for whoever waits on one: the runtime announces every scope value its
//! acceptor accepted, with the value's latest event number; a watch or a waiting lock request
//! subscribes to its own scope only. A hint that a read may show something new, never a
//! substitute for the read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Default)]
pub struct Changes {
    scopes: Mutex<HashMap<Arc<str>, watch::Sender<u64>>>,
}

impl Changes {
    /// Wakes the subscribers of `scope` if `last_seq` is newer than what they were told.
    pub fn announce(&self, scope: &str, last_seq: u64) {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = scopes.get(scope) {
            tx.send_if_modified(|seen| {
                let newer = last_seq > *seen;
                *seen = (*seen).max(last_seq);
                newer
            });
        }
    }

    pub fn subscribe(self: &Arc<Self>, scope: &str) -> Subscription {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match scopes.get(scope) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                scopes.insert(scope.into(), tx);
                rx
            }
        };
        Subscription { changes: self.clone(), scope: scope.into(), rx }
    }

    #[cfg(test)]
    fn scopes(&self) -> usize {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One subscriber's view of a scope's news; the scope is forgotten when its last one goes.
pub struct Subscription {
    changes: Arc<Changes>,
    scope: Arc<str>,
    rx: watch::Receiver<u64>,
}

impl Subscription {
    /// Waits until a value with an event numbered above `after` was accepted here; that
    /// number.
    pub async fn newer_than(&mut self, after: u64) -> u64 {
        loop {
            let seen = *self.rx.borrow_and_update();
            if seen > after {
                return seen;
            }
            if self.rx.changed().await.is_err() {
                // Cannot happen while we hold the map's sender; wait forever rather than spin.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut scopes = self.changes.scopes.lock().unwrap_or_else(|e| e.into_inner());
        // This receiver still counts until the end of `drop`.
        if scopes.get(&self.scope).is_some_and(|tx| tx.receiver_count() <= 1) {
            scopes.remove(&self.scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_hear_of_newer_events_of_their_scope_only_and_are_forgotten() {
        let changes = Arc::new(Changes::default());
        let mut a = changes.subscribe("a");
        let b = changes.subscribe("b");
        changes.announce("b", 5);
        changes.announce("a", 3);
        tokio::time::timeout(std::time::Duration::from_secs(5), a.newer_than(2)).await.unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), a.newer_than(3)).await;
        assert!(waited.is_err(), "nothing newer than 3 yet");
        changes.announce("a", 2); // an older value accepted late: no news
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), a.newer_than(3)).await.is_err());
        drop(b);
        assert_eq!(changes.scopes(), 1);
        drop(a);
        assert_eq!(changes.scopes(), 0);
    }
}
