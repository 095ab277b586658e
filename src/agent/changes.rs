//! News of scopes, for whoever waits on one: the runtime announces every scope value its
//! acceptor accepted (its latest event number and who holds it then); a watch or a waiting
//! lock request subscribes to its own scope only. A hint that a read may show something new,
//! never a substitute for the read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::core::{LockRecord, RequestId};

/// The latest news of a scope: a value accepted here with events up to `last_seq`, held then
/// by the grants of these acquire requests.
#[derive(Clone, Debug, Default)]
pub struct News {
    pub last_seq: u64,
    pub holders: Vec<RequestId>,
}

#[derive(Default)]
pub struct Changes {
    scopes: Mutex<HashMap<Arc<str>, watch::Sender<News>>>,
}

impl Changes {
    /// Wakes the subscribers of `scope` if this value has newer events than they were told of
    /// (every grant, release and expiry is an event).
    pub fn announce(&self, scope: &str, record: &LockRecord) {
        self.announce_news(scope, News { last_seq: record.events.last_seq, holders: record.holders.iter().map(|g| g.request_id.clone()).collect() });
    }

    /// The same, from news a voter sent (on a member that does not vote, whose own acceptor
    /// accepts nothing).
    pub fn announce_news(&self, scope: &str, news: News) {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = scopes.get(scope) {
            tx.send_if_modified(|seen| {
                if news.last_seq <= seen.last_seq {
                    return false;
                }
                *seen = news;
                true
            });
        }
    }

    /// The scopes someone here waits on (at most `most`).
    pub fn subscribed(&self, most: usize) -> Vec<String> {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes.keys().take(most).map(|s| s.to_string()).collect()
    }

    pub fn subscribe(self: &Arc<Self>, scope: &str) -> Subscription {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match scopes.get(scope) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(News::default());
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
    rx: watch::Receiver<News>,
}

impl Subscription {
    /// Waits until a value with an event numbered above `after` was accepted here.
    pub async fn newer_than(&mut self, after: u64) {
        self.until(|news| news.last_seq > after).await;
    }

    /// Waits until a value accepted here shows `request` holding the scope.
    pub async fn granted(&mut self, request: &RequestId) {
        self.until(|news| news.holders.contains(request)).await;
    }

    async fn until(&mut self, wanted: impl Fn(&News) -> bool) {
        loop {
            if wanted(&self.rx.borrow_and_update()) {
                return;
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
        let record = |last_seq| {
            let mut r = LockRecord::default();
            r.events.last_seq = last_seq;
            r
        };
        let soon = std::time::Duration::from_millis(50);
        changes.announce("b", &record(5));
        changes.announce("a", &record(3));
        tokio::time::timeout(std::time::Duration::from_secs(5), a.newer_than(2)).await.unwrap();
        assert!(tokio::time::timeout(soon, a.newer_than(3)).await.is_err(), "nothing newer than 3 yet");
        changes.announce("a", &record(2)); // an older value accepted late: no news
        assert!(tokio::time::timeout(soon, a.newer_than(3)).await.is_err());
        let me = RequestId("me".into());
        assert!(tokio::time::timeout(soon, a.granted(&me)).await.is_err());
        let mut held = record(4);
        held.apply(&crate::core::LockOp::Acquire(crate::core::Acquire {
            request_id: me.clone(),
            holder: "me".into(),
            lock_type: crate::core::LockType::Write,
            lease: crate::core::LeaseRule::Fixed(1_000_000),
            lock_delay_us: 0,
            wait: false,
            wait_lease_us: 1_000_000,
            priority: crate::core::Priority::Normal,
            reason: None,
            node: "n".into(),
            poll: false,
        }), 0, &crate::core::Limits::default());
        changes.announce("a", &held);
        tokio::time::timeout(std::time::Duration::from_secs(5), a.granted(&me)).await.unwrap();
        drop(b);
        assert_eq!(changes.scopes(), 1);
        drop(a);
        assert_eq!(changes.scopes(), 0);
    }
}
