//! News of scopes for members that do not vote. A voter announces every scope value its
//! acceptor accepts to whoever waits on that scope on it (`agent/changes.rs`); a member that
//! does not vote accepts nothing, so its watches and waiting requests would hear of a change
//! only at their next read. Instead it asks the voters for news of the scopes it waits on
//! (`Frame::Subscribe`, about every second, each lasting a few seconds), and each voter sends
//! it news of those scopes as it accepts values of them (`Frame::News`). Only members of the
//! installed roster may subscribe (a scope's activity is for members only), news is taken
//! only from its voters, and either way it is a hint to read, never a substitute.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{peer_id, Runtime};
use crate::agent::changes::News;
use crate::core::{LockRecord, NodeId, RequestId};
use crate::mesh::wire::Frame;

/// Ticks between a member's subscriptions (0.9 s).
const SUBSCRIBE_EVERY: u64 = 3;
/// How long a subscription lasts at a voter unless renewed.
const LASTS: Duration = Duration::from_secs(5);
/// Most scopes one subscription names, and longest scope name taken.
const MOST_SCOPES: usize = 1024;
const LONGEST_SCOPE: usize = 1024;
/// Most (scope, member) subscriptions a voter keeps.
const MOST_SUBSCRIPTIONS: usize = 65_536;

/// A voter's subscribers: by scope, the members that asked and when.
#[derive(Default)]
pub(super) struct Subscribers {
    by_scope: HashMap<String, HashMap<NodeId, Instant>>,
}

impl Subscribers {
    fn count(&self) -> usize {
        self.by_scope.values().map(HashMap::len).sum()
    }

    fn forget_expired(&mut self, now: Instant) {
        for members in self.by_scope.values_mut() {
            members.retain(|_, at| now.duration_since(*at) < LASTS);
        }
        self.by_scope.retain(|_, members| !members.is_empty());
    }
}

impl Runtime {
    /// A member that does not vote asks every voter for news of the scopes it waits on.
    pub(super) fn subscribe_to_voters(&self) {
        if self.ticks % SUBSCRIBE_EVERY != 0 {
            return;
        }
        let Some(roster) = self.node.roster() else { return };
        let me = self.node.id();
        if roster.contains(me) || !roster.is_member(me) {
            return;
        }
        let scopes = self.changes.subscribed(MOST_SCOPES);
        if scopes.is_empty() {
            return;
        }
        let frame = Frame::Subscribe { from: me.clone(), scopes };
        for voter in &roster.voters {
            if let Some(p) = self.peers.get(&voter.name).filter(|p| peer_id(&p.info) == *voter) {
                self.mesh.send(p.info.mesh_addr, Some(&p.info.name), &frame);
            }
        }
    }

    /// A voter takes a member's subscription (only a member's, only while this node votes).
    pub(super) fn on_subscribe(&mut self, from: NodeId, scopes: Vec<String>) {
        let Some(roster) = self.node.roster() else { return };
        if !roster.contains(self.node.id()) || !roster.is_member(&from) {
            return;
        }
        let now = Instant::now();
        self.subscribers.forget_expired(now);
        for scope in scopes.into_iter().take(MOST_SCOPES).filter(|s| s.len() <= LONGEST_SCOPE) {
            if self.subscribers.count() >= MOST_SUBSCRIPTIONS {
                break;
            }
            self.subscribers.by_scope.entry(scope).or_default().insert(from.clone(), now);
        }
    }

    /// Sends news of a scope value this voter accepted to the members subscribed to it.
    pub(super) fn send_news(&self, scope: &str, record: &LockRecord) {
        let Some(members) = self.subscribers.by_scope.get(scope) else { return };
        let holders: Vec<RequestId> = record.holders.iter().map(|g| g.request_id.clone()).collect();
        let frame = Frame::News { from: self.node.id().clone(), scope: scope.to_string(), last_seq: record.events.last_seq, holders };
        for (member, at) in members {
            if at.elapsed() >= LASTS {
                continue;
            }
            if let Some(p) = self.peers.get(&member.name).filter(|p| peer_id(&p.info) == *member) {
                self.mesh.send(p.info.mesh_addr, Some(&p.info.name), &frame);
            }
        }
    }

    /// News from a voter of the installed roster wakes whoever waits on the scope here.
    pub(super) fn on_news(&mut self, from: NodeId, scope: String, last_seq: u64, holders: Vec<RequestId>) {
        if !self.node.roster().is_some_and(|r| r.contains(&from)) {
            return;
        }
        self.news_received += 1;
        self.changes.announce_news(&scope, News { last_seq, holders });
    }
}
