//! The one rule for when a node's outputs may leave it (PROTOCOL §4, *early messages*; the
//! output contract in `lib.rs`), kept here once so that the runtime and the simulator run the
//! same code: they hand every `Outputs` batch to an `Outbox`, make the writes it asks for
//! durable in order, report each as durable, and send exactly what it releases.
//!
//! - A batch's messages and replies leave only after its writes, and every earlier batch's,
//!   are durable.
//! - Its `early` messages (which rely on no write of their own batch) leave at once if no
//!   earlier batch is still waiting for the disk, else with their batch.
//! - A batch without writes needs no disk: it leaves at once if nothing waits, else right
//!   after the batches before it.

use crate::prelude::*;

use alloc::collections::VecDeque;

use super::durable::Write;
use super::message::Envelope;
use super::node::{Outputs, Reply};

/// What may leave the node now.
#[derive(Debug, Default)]
pub struct Release {
    pub messages: Vec<Envelope>,
    pub replies: Vec<Reply>,
}

impl Release {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.replies.is_empty()
    }
}

/// Writes to make durable, in order, then to report with `Outbox::durable(seq)`.
#[derive(Debug)]
pub struct ToDisk {
    pub seq: u64,
    pub writes: Vec<Write>,
}

#[derive(Debug)]
struct Waiting {
    /// `Some` for a batch waiting for its own writes; `None` for one with none, waiting only
    /// for the batches before it.
    seq: Option<u64>,
    release: Release,
}

/// A node's outputs between the core and the world.
#[derive(Debug, Default)]
pub struct Outbox {
    waiting: VecDeque<Waiting>,
    next_seq: u64,
    #[cfg(feature = "broken-variants")]
    broken: Option<super::broken::Broken>,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// An outbox running a known-broken variant of the rule (the simulator must catch it).
    #[cfg(feature = "broken-variants")]
    pub fn with_broken(broken: Option<super::broken::Broken>) -> Outbox {
        Outbox { broken, ..Outbox::default() }
    }

    /// Takes one batch of the node's outputs: returns what may leave at once and, if the batch
    /// writes anything, the writes to make durable.
    pub fn submit(&mut self, out: Outputs) -> (Release, Option<ToDisk>) {
        let Outputs { writes, early, messages, replies } = out;
        let nothing_waits = self.waiting.is_empty();
        let mut now = Release::default();
        let mut later = Release { messages: Vec::new(), replies };
        if nothing_waits || super::broken::broken!(self, EarlyBeforeEarlierBatches) {
            now.messages = early;
        } else {
            later.messages = early;
        }
        later.messages.extend(messages);
        if (nothing_waits && writes.is_empty()) || super::broken::broken!(self, SendBeforeWrite) {
            now.messages.append(&mut later.messages);
            now.replies.append(&mut later.replies);
        }
        if writes.is_empty() {
            if !later.is_empty() {
                self.waiting.push_back(Waiting { seq: None, release: later });
            }
            return (now, None);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push_back(Waiting { seq: Some(seq), release: later });
        (now, Some(ToDisk { seq, writes }))
    }

    /// The writes of batch `seq`, and of every batch before it, are durable: returns what
    /// may leave now.
    pub fn durable(&mut self, seq: u64) -> Release {
        let mut out = Release::default();
        while let Some(front) = self.waiting.front() {
            if front.seq.is_some_and(|s| s > seq) {
                break;
            }
            let Some(w) = self.waiting.pop_front() else { break };
            out.messages.extend(w.release.messages);
            out.replies.extend(w.release.replies);
        }
        out
    }

    /// Batches still waiting for the disk (or behind one that is).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Body;
    use crate::roster::NodeId;

    /// A batch: `writes` round reservations, one message of each kind to `tag`.
    fn batch(writes: usize, tag: &str) -> Outputs {
        let to = |kind: &str| Envelope { from: NodeId::new("me", 1, [1; 32]), to: NodeId::new(format!("{kind}-{tag}"), 1, [2; 32]), roster: None, body: Body::RosterPull { have: None } };
        Outputs { writes: (0..writes as u64).map(Write::RoundReserved).collect(), early: vec![to("early")], messages: vec![to("late")], replies: Vec::new() }
    }

    fn names(r: &Release) -> Vec<String> {
        r.messages.iter().map(|e| e.to.name.clone()).collect()
    }

    #[test]
    fn a_batchs_messages_wait_for_its_writes_and_early_ones_only_for_earlier_batches() {
        let mut outbox = Outbox::new();
        // Nothing waits: the early message leaves at once, the rest with the sync.
        let (now, disk) = outbox.submit(batch(1, "a"));
        assert_eq!(names(&now), ["early-a"]);
        let a = disk.expect("a batch with writes goes to the disk").seq;
        // Behind a: even its early message waits (a's writes are not durable yet).
        let (now, disk) = outbox.submit(batch(1, "b"));
        assert!(now.is_empty());
        let b = disk.expect("writes").seq;
        // Without writes, behind b: waits for b, needs no sync of its own.
        let (now, disk) = outbox.submit(batch(0, "c"));
        assert!(now.is_empty() && disk.is_none());
        assert_eq!(outbox.waiting(), 3);
        assert_eq!(names(&outbox.durable(a)), ["late-a"]);
        assert_eq!(names(&outbox.durable(b)), ["early-b", "late-b", "early-c", "late-c"]);
        assert_eq!(outbox.waiting(), 0);
        // Nothing waits and nothing to write: all of it leaves at once.
        let (now, disk) = outbox.submit(batch(0, "d"));
        assert_eq!((names(&now), disk.is_none()), (vec!["early-d".to_string(), "late-d".into()], true));
    }

    #[test]
    fn one_sync_of_a_later_batch_releases_every_batch_up_to_it_in_order() {
        let mut outbox = Outbox::new();
        let seqs: Vec<u64> = ["a", "b", "c"].iter().map(|t| outbox.submit(batch(2, t)).1.expect("writes").seq).collect();
        assert_eq!(names(&outbox.durable(seqs[1])), ["late-a", "early-b", "late-b"]);
        assert_eq!(names(&outbox.durable(seqs[2])), ["early-c", "late-c"]);
        assert!(outbox.durable(seqs[2]).is_empty());
    }
}
