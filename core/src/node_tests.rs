//! Node-level tests on a tiny in-memory cluster that delivers every message at once. The
//! simulator explores schedules; these pin down specific ones.

use std::collections::VecDeque;

use super::*;

/// A node's identity in these tests: its certificate key follows from its name, as a node
/// keeps its certificate when its data dir is wiped.
fn nid(name: impl Into<String>, incarnation: u64) -> NodeId {
    let name = name.into();
    let key = signer(&name).key_hash();
    NodeId::new(name, incarnation, key)
}

/// The key of the node named `name` (an Ed25519 key from a seed made of the name).
fn signer(name: &str) -> proof::Ed25519Signer {
    let mut seed = [0u8; 32];
    for (k, b) in seed.iter_mut().zip(name.bytes()) {
        *k = b;
    }
    proof::Ed25519Signer::from_seed(&seed)
}

/// A node of these tests, with its name's key.
fn new_node(config: Config, id: NodeId, durable: Durable) -> Node {
    let signer = Box::new(signer(&id.name));
    Node::new(config, id, durable, Time(0), 7, signer)
}

/// A roster as a forger sends it: with a proof that proves nothing.
fn unproven(roster: Roster, under: RosterId) -> Body {
    Body::Commit { links: vec![proof::Link { roster, proof: proof::Proof { ballot: Ballot { round: 5, proposer: 5 }, under, signatures: Vec::new() } }] }
}

struct Cluster {
    nodes: Vec<Node>,
    disks: Vec<Durable>,
    inbox: VecDeque<Envelope>,
    replies: Vec<Reply>,
    now: Time,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let ids: Vec<NodeId> = (0..n).map(|i| nid(format!("n{i}"), 100 + i as u64)).collect();
        let nodes = ids.iter().map(|id| new_node(Config::default(), id.clone(), Durable::default())).collect();
        let mut c = Cluster { nodes, disks: vec![Durable::default(); n], inbox: VecDeque::new(), replies: Vec::new(), now: Time(0) };
        for i in 0..n {
            c.nodes[i].bootstrap(Time(0), ids.clone(), 5).unwrap();
        }
        c.settle();
        c
    }

    /// Delivers messages for a while, dropping those `drop` selects; then drops whatever is
    /// left in flight.
    fn deliver_dropping(&mut self, drop: impl Fn(&Envelope) -> bool) {
        for _ in 0..200 {
            for _ in 0..20 {
                self.collect();
                let inbox: Vec<Envelope> = self.inbox.drain(..).filter(|e| !drop(e)).collect();
                for e in inbox {
                    let to = self.index(&e.to);
                    self.nodes[to].handle_message(self.now, e);
                }
            }
            if !self.pass_while_resend_pending() {
                break;
            }
        }
        self.collect();
        self.inbox.clear();
    }

    /// While a removal waits for vouches to run out (`vouch`), lets 50 ms pass, firing
    /// timers; whether it did.
    fn pass_while_resend_pending(&mut self) -> bool {
        if !self.nodes.iter().any(Node::resend_pending) {
            return false;
        }
        self.now = self.now.plus_micros(50_000);
        for n in &mut self.nodes {
            n.handle_timeout(self.now);
        }
        true
    }

    fn index(&self, id: &NodeId) -> usize {
        self.nodes.iter().position(|n| n.id() == id).unwrap()
    }

    /// Collects every node's output (persisting writes first), without delivering.
    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            let out = self.nodes[i].drain();
            for w in out.writes {
                self.disks[i].apply(w);
            }
            self.inbox.extend(out.early);
            self.inbox.extend(out.messages);
            self.replies.extend(out.replies);
        }
    }

    /// Delivers messages until none are left; while a removal waits for vouches to run out
    /// (`vouch`), lets time pass in steps of 50 ms, firing timers.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.collect();
            while let Some(e) = self.inbox.pop_front() {
                let to = self.index(&e.to);
                self.nodes[to].handle_message(self.now, e);
                self.collect();
            }
            if !self.pass_while_resend_pending() {
                return;
            }
        }
    }

    /// A request through `node`, once every node's timers due by now have fired (a test that
    /// moves the clock on skips the vouches asked for meanwhile, `vouch`).
    fn request(&mut self, node: usize, client: u64, key: Key, op: Op) {
        for n in &mut self.nodes {
            n.handle_timeout(self.now);
        }
        self.settle();
        self.nodes[node].handle_request(self.now, Request { client, key, op, timeout_us: 5_000_000 });
    }

    fn take_reply(&mut self, client: u64) -> Reply {
        let at = self.replies.iter().position(|r| r.client == client).expect("a reply");
        self.replies.remove(at)
    }
}

fn acquire(id: &str) -> Op {
    Op::Lock(LockOp::Acquire(Acquire {
        request_id: RequestId(id.into()),
        holder: id.into(),
        lock_type: LockType::Write,
        lease: LeaseRule::Fixed(10_000_000),
        lock_delay_us: 0,
        wait: false,
        wait_lease_us: 1_000_000,
        priority: Priority::Normal,
        reason: None,
        node: "n0".into(),
        poll: false,
    }))
}

fn scope() -> Key {
    Key::Scope("db-migration".into())
}

/// Takes node `i`'s output for inspection, then hands it to the cluster as `collect` would.
fn inspect(c: &mut Cluster, i: usize) -> Outputs {
    let out = c.nodes[i].drain();
    for w in out.writes.clone() {
        c.disks[i].apply(w);
    }
    c.inbox.extend(out.early.iter().cloned());
    c.inbox.extend(out.messages.iter().cloned());
    c.replies.extend(out.replies.iter().cloned());
    out
}

/// Delivers the oldest message waiting and takes its receiver's output for inspection.
fn deliver_next(c: &mut Cluster) -> Outputs {
    let Some(message) = c.inbox.pop_front() else { panic!("a message to deliver") };
    let to = c.index(&message.to);
    c.nodes[to].handle_message(c.now, message);
    inspect(c, to)
}

#[test]
fn only_a_proposers_prepare_and_accept_leave_before_their_batch_is_durable() {
    let mut c = Cluster::new(3);
    let release = Op::Lock(LockOp::Release { request_id: RequestId("a-release".into()), grant: GrantRef { holder: "a".into(), which: Which::Token(1) } });
    // The first ballot reserves its rounds in the same batch: its Prepares wait for the disk.
    c.request(0, 1, scope(), acquire("a"));
    let first = inspect(&mut c, 0);
    assert!(first.writes.iter().any(|w| matches!(w, Write::RoundReserved(_))));
    assert!(first.early.is_empty(), "{:?}", first.early);
    assert!(first.messages.iter().any(|m| matches!(m.body, Body::Prepare { .. })));
    // A voter's promise waits for its own write.
    let voter = deliver_next(&mut c);
    assert!(voter.early.is_empty() && voter.messages.iter().any(|m| matches!(m.body, Body::Promise { .. })));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Lock(LockResult::Locked { .. }))));
    // The owner's next value goes straight to Accept, within the reserved rounds: early.
    c.request(0, 2, scope(), release);
    let fast = inspect(&mut c, 0);
    assert!(fast.writes.iter().any(|w| matches!(w, Write::Slot(..))), "its own acceptance is in the batch");
    assert_eq!(fast.early.iter().filter(|m| matches!(m.body, Body::Accept { .. })).count(), 2, "{fast:?}");
    assert!(fast.messages.is_empty() && fast.replies.is_empty());
    // The voters' acceptances wait for their writes; so does the answer.
    let voter = deliver_next(&mut c);
    assert!(voter.early.is_empty() && voter.messages.iter().any(|m| matches!(m.body, Body::Accepted { .. })));
    c.settle();
    assert!(matches!(c.take_reply(2).result, Ok(Answer::Lock(LockResult::Released))));
}

#[test]
fn bootstrap_installs_the_same_first_roster_everywhere() {
    let c = Cluster::new(3);
    let first = c.nodes[0].roster().cloned().unwrap();
    assert_eq!(first.version, 1);
    for n in &c.nodes {
        assert_eq!(n.roster(), Some(&first));
    }
}

#[test]
fn a_grant_needs_a_majority_and_the_second_writer_is_busy() {
    let mut c = Cluster::new(3);
    c.request(0, 1, scope(), acquire("a"));
    c.settle();
    let reply = c.take_reply(1);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))), "{reply:?}");
    assert!(reply.agreed.len() >= 2 && reply.voters == 3);
    c.request(2, 2, scope(), acquire("b"));
    c.settle();
    assert!(matches!(c.take_reply(2).result, Ok(Answer::Lock(LockResult::Busy { .. }))));
}

#[test]
fn without_a_majority_nothing_is_granted() {
    let mut c = Cluster::new(3);
    // Messages to and from n1 and n2 are lost: n0 is alone.
    c.request(0, 1, scope(), acquire("a"));
    c.collect();
    c.inbox.clear();
    for t in 1..=12 {
        c.now = Time(t * 500_000);
        c.nodes[0].handle_timeout(c.now);
        c.collect();
        c.inbox.retain(|e| e.to == *c.nodes[0].id() && e.from == *c.nodes[0].id());
    }
    let reply = c.take_reply(1);
    assert_eq!(reply.result, Err(Failure::NoQuorum));
}

#[test]
fn a_ballot_keeps_the_roster_it_started_under() {
    // Regression (simulator, PROTOCOL §11.2): a ballot counted over roster v1 must not tag
    // its Accepts with v2 installed meanwhile, or v2 voters could make it win with too few.
    let mut c = Cluster::new(3);
    c.request(0, 1, scope(), acquire("a"));
    c.collect();
    let prepares: Vec<Envelope> = c.inbox.drain(..).collect();
    assert!(prepares.iter().all(|e| e.roster.map(|r| r.version) == Some(1)));
    // Meanwhile a roster change is decided elsewhere, and n0 learns of it.
    let d = nid("n3", 103);
    c.request(1, 9, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(d.clone()), expected_version: None }));
    c.collect();
    let mut pending: VecDeque<Envelope> = c.inbox.drain(..).collect();
    while let Some(e) = pending.pop_front() {
        if e.to == d {
            continue; // n3 does not exist in this test
        }
        let to = c.index(&e.to);
        c.nodes[to].handle_message(c.now, e);
        let out = c.nodes[to].drain();
        for w in out.writes {
            c.disks[to].apply(w);
        }
        c.replies.extend(out.replies);
        pending.extend(out.early.into_iter().chain(out.messages).filter(|m| !matches!(m.body, Body::Accept { key: Key::Scope(_), .. } | Body::Promise { key: Key::Scope(_), .. })));
    }
    assert_eq!(c.nodes[0].roster().map(|r| r.version), Some(2));
    // Now the old ballot's promises arrive; its Accepts must still say v1.
    for e in prepares {
        let to = c.index(&e.to);
        c.nodes[to].handle_message(c.now, e);
    }
    c.collect();
    let accepts: Vec<&Envelope> = c.inbox.iter().filter(|e| matches!(e.body, Body::Accept { key: Key::Scope(_), .. })).collect();
    for a in &accepts {
        assert_eq!(a.roster.map(|r| r.version), Some(1), "an Accept of a v1 ballot tagged {:?}", a.roster);
    }
}

#[test]
fn a_roster_change_is_installed_everywhere_and_swept() {
    let mut c = Cluster::new(4);
    // Start with a three-voter cluster that n3 joins.
    let mut c3 = Cluster::new(3);
    let n3 = new_node(Config::default(), nid("n3", 103), Durable::default());
    c3.nodes.push(n3);
    c3.disks.push(Durable::default());
    c3.request(0, 1, scope(), acquire("a"));
    c3.settle();
    let id3 = c3.nodes[3].id().clone();
    c3.request(1, 2, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(id3.clone()), expected_version: Some(1) }));
    c3.settle();
    assert!(matches!(c3.take_reply(2).result, Ok(Answer::Roster(RosterResult::Changed(_)))));
    for n in &c3.nodes {
        let r = n.roster().unwrap();
        assert_eq!((r.version, r.sweep_done), (2, true), "{} has {r:?}", n.id());
        assert!(r.contains(&id3));
    }
    // The swept scope now sits on the new voter too.
    assert!(c3.disks[3].slots.contains_key(&scope()));
    // A compare-and-set on a stale version is refused.
    c3.request(2, 3, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Remove(id3), expected_version: Some(1) }));
    c3.settle();
    assert!(matches!(c3.take_reply(3).result, Ok(Answer::Roster(RosterResult::Refused(RosterRefusal::Moved { current: 2 })))));
    c.settle();
}

/// A harness with named nodes, a message filter (to lose chosen messages) and time.
struct Net {
    nodes: Vec<Node>,
    queue: VecDeque<Envelope>,
    replies: Vec<Reply>,
    now: u64,
}

type Filter<'a> = &'a dyn Fn(&Envelope) -> bool;

fn keep_all(_: &Envelope) -> bool {
    false
}

impl Net {
    fn new(names: &[&str], durables: Vec<Durable>, config: Config) -> Net {
        let nodes = names
            .iter()
            .zip(durables)
            .enumerate()
            .map(|(i, (name, d))| new_node(config.clone(), nid(*name, i as u64 + 1), d))
            .collect();
        Net { nodes, queue: VecDeque::new(), replies: Vec::new(), now: 0 }
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.id().name == name).unwrap()
    }

    fn id(&self, name: &str) -> NodeId {
        self.nodes[self.idx(name)].id().clone()
    }

    fn collect(&mut self, i: usize) {
        let out = self.nodes[i].drain();
        self.queue.extend(out.early);
        self.queue.extend(out.messages);
        self.replies.extend(out.replies);
    }

    /// Delivers queued messages (dropping those `drop` selects) until none are left.
    /// Delivers every message (but those `drop` selects); while a removal waits for vouches
    /// to run out (`vouch`), lets time pass too, firing timers.
    fn pump(&mut self, drop: Filter) {
        self.deliver(drop);
        for _ in 0..200 {
            if !self.nodes.iter().any(Node::resend_pending) {
                break;
            }
            self.run(50_000, drop);
        }
    }

    fn deliver(&mut self, drop: Filter) {
        while let Some(e) = self.queue.pop_front() {
            if drop(&e) {
                continue;
            }
            let i = self.idx(&e.to.name);
            self.nodes[i].handle_message(Time(self.now), e);
            self.collect(i);
        }
    }

    /// Lets `us` of time pass, firing timers and delivering messages.
    fn run(&mut self, us: u64, drop: Filter) {
        let end = self.now + us;
        self.deliver(drop);
        while let Some(t) = self.nodes.iter().filter_map(Node::next_timeout).map(|t| t.0).filter(|t| *t <= end).min() {
            self.now = self.now.max(t);
            for i in 0..self.nodes.len() {
                if self.nodes[i].next_timeout().is_some_and(|x| x.0 <= self.now) {
                    self.nodes[i].handle_timeout(Time(self.now));
                    self.collect(i);
                }
            }
            self.deliver(drop);
        }
        self.now = end;
    }

    fn request(&mut self, node: &str, client: u64, key: Key, op: Op) {
        let i = self.idx(node);
        self.nodes[i].handle_request(Time(self.now), Request { client, key, op, timeout_us: 20_000_000 });
        self.collect(i);
    }

    fn bootstrap(&mut self, voters: &[&str]) {
        let ids: Vec<NodeId> = voters.iter().map(|n| self.id(n)).collect();
        for v in voters {
            let i = self.idx(v);
            self.nodes[i].bootstrap(Time(self.now), ids.clone(), 5).unwrap();
            self.collect(i);
        }
        self.pump(&keep_all);
        // The other nodes learn the roster as they would by pulling it.
        let first = self.nodes[self.idx(voters[0])].roster().cloned().unwrap();
        let links = self.nodes[self.idx(voters[0])].chain().to_vec();
        for i in 0..self.nodes.len() {
            let from = self.id(voters[0]);
            let to = self.nodes[i].id().clone();
            self.queue.push_back(Envelope { from, to, roster: Some(first.id()), body: Body::Commit { links: links.clone() } });
        }
        self.pump(&keep_all);
    }

    /// Makes `names` members that do not vote (voters take ballots from members only), one
    /// roster change at a time through `via`.
    fn admit_members(&mut self, via: &str, names: &[&str]) {
        for (i, name) in names.iter().enumerate() {
            let change = RosterChange::AddMember(self.id(name));
            let client = 900_000 + i as u64;
            self.request(via, client, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: None }));
            self.run(100_000, &keep_all);
            assert!(matches!(self.result(client), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", self.result(client));
        }
        // The other nodes learn the roster as they would by pulling it.
        let roster = self.nodes[self.idx(via)].roster().cloned().unwrap();
        let links = self.nodes[self.idx(via)].chain().to_vec();
        for i in 0..self.nodes.len() {
            let (from, to) = (self.id(via), self.nodes[i].id().clone());
            self.queue.push_back(Envelope { from, to, roster: Some(roster.id()), body: Body::Commit { links: links.clone() } });
        }
        self.pump(&keep_all);
        assert!(self.nodes.iter().all(|n| n.roster() == Some(&roster)), "every node installed the members' roster");
    }

    fn result(&self, client: u64) -> Option<&Result<Answer, Failure>> {
        self.replies.iter().rev().find(|r| r.client == client).map(|r| &r.result)
    }
}

fn acquire_for(holder: &str, lease_us: u64, wait: bool) -> Op {
    Op::Lock(LockOp::Acquire(Acquire {
        request_id: RequestId(format!("req-{holder}")),
        holder: holder.into(),
        lock_type: LockType::Write,
        lease: LeaseRule::Fixed(lease_us),
        lock_delay_us: 0,
        wait,
        wait_lease_us: 5_000_000,
        priority: Priority::Normal,
        reason: None,
        node: String::new(),
        poll: false,
    }))
}

fn is_locked(result: Option<&Result<Answer, Failure>>) -> bool {
    matches!(result, Some(Ok(Answer::Lock(LockResult::Locked { .. }))))
}

/// Regression (review, PROTOCOL §11.8): a value accepted by a single voter at a high round,
/// for a scope no sweep listed, must not override a record chosen later under a roster two
/// changes on. Sweeps record a round floor above every round promised before; every later
/// ballot goes above it.
#[test]
fn a_minority_value_at_a_high_round_does_not_survive_two_roster_changes() {
    let names = ["A", "B", "C", "D", "E", "P"];
    let mut durables: Vec<Durable> = names.iter().map(|_| Durable::default()).collect();
    // P restarted often: its ballot rounds are far above everybody else's.
    durables[5].round_reserved = 100_000;
    let config = Config { sweep_check_us: 1_000_000_000, ..Config::default() };
    let mut net = Net::new(&names, durables, config);
    net.bootstrap(&["A", "B", "C"]);
    net.admit_members("A", &["P"]);

    // Z acquires via P: the Prepare reaches A and B, the Accept only A; then P is gone.
    net.request("P", 100, scope(), acquire_for("Z", 1_000_000, false));
    let to_a_only = |e: &Envelope| {
        e.from.name == "P" && (e.to.name == "C" || (e.to.name == "B" && matches!(e.body, Body::Accept { .. })))
    };
    net.pump(&to_a_only);
    let without_p = |e: &Envelope| e.from.name == "P" || e.to.name == "P";

    // Two roster changes through C; A's scope lists are lost, so the scope is never listed.
    let lose_a_list = |e: &Envelope| without_p(e) || (e.from.name == "A" && matches!(e.body, Body::KeyList { .. }));
    for (client, name) in [(200, "D"), (201, "E")] {
        let change = RosterChange::Add(net.id(name));
        net.request("C", client, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: None }));
        net.run(200_000, &lose_a_list);
    }
    assert!(net.nodes.iter().take(5).all(|n| n.roster().is_some_and(|r| r.version == 4 && r.sweep_done)));

    // C1 acquires via C with the quorum {C, D, E}.
    let c_alone = |e: &Envelope| without_p(e) || (e.from.name == "C" && (e.to.name == "A" || e.to.name == "B"));
    net.request("C", 300, scope(), acquire_for("C1", 30_000_000, false));
    net.run(100_000, &c_alone);
    assert!(is_locked(net.result(300)), "C1: {:?}", net.result(300));

    // Two seconds later C2 acquires via D with the quorum {A, D, E}: C1 still holds.
    net.run(2_000_000, &without_p);
    let d_without_b_c = |e: &Envelope| without_p(e) || (e.from.name == "D" && (e.to.name == "B" || e.to.name == "C"));
    net.request("D", 400, scope(), acquire_for("C2", 30_000_000, false));
    net.run(2_000_000, &d_without_b_c);
    assert!(!is_locked(net.result(400)), "C2 was granted while C1 held: {:?}", net.result(400));
}

/// Regression (review, PROTOCOL §12 P4): once an Accept carrying alice's grant went out,
/// "busy" may only come from a ballot above it, so no later proposer can complete her grant.
#[test]
fn busy_after_an_accept_went_out_is_committed_above_it() {
    let names = ["A", "B", "C", "P1", "P2", "P3"];
    let mut durables: Vec<Durable> = names.iter().map(|_| Durable::default()).collect();
    // P2 restarted before: its first ballot is above P1's.
    durables[4].round_reserved = 100;
    let mut net = Net::new(&names, durables, Config::default());
    net.bootstrap(&["A", "B", "C"]);
    net.admit_members("A", &["P1", "P2", "P3"]);

    net.request("P1", 1, scope(), acquire_for("D", 30_000_000, false));
    net.run(10_000, &keep_all);
    assert!(is_locked(net.result(1)));
    // D's release reaches A only; then P1 is gone.
    let release = Op::Lock(LockOp::Release {
        request_id: RequestId("rel-D".into()),
        grant: GrantRef { holder: "D".into(), which: Which::Token(1) },
    });
    net.request("P1", 2, scope(), release);
    net.pump(&|e: &Envelope| e.from.name == "P1" && matches!(e.body, Body::Accept { .. }) && e.to.name != "A");
    let without_p1 = |e: &Envelope| e.from.name == "P1" || e.to.name == "P1";

    // alice's acquire via P2: promises from A and B (lock free on A), her Accept reaches A only.
    net.request("P2", 3, scope(), acquire_for("alice", 30_000_000, false));
    let first_try = |e: &Envelope| {
        without_p1(e) || (e.from.name == "P2" && (e.to.name == "C" || (e.to.name == "B" && matches!(e.body, Body::Accept { .. }))))
    };
    net.pump(&first_try);
    // P2 retries without A: B and C still hold D's grant, which is chosen.
    let without_a = |e: &Envelope| without_p1(e) || (e.from.name == "P2" && e.to.name == "A");
    while net.result(3).is_none() {
        net.run(100_000, &without_a);
    }
    assert!(matches!(net.result(3), Some(Ok(Answer::Lock(LockResult::Busy { .. })))), "{:?}", net.result(3));

    // Later, eve reads through P3 with the quorum {A, B}: alice must hold nothing.
    let a_b = |e: &Envelope| without_p1(e) || e.to.name == "P2" || (e.from.name == "P3" && e.to.name == "C");
    net.request("P3", 5, scope(), Op::Lock(LockOp::Read));
    net.run(1_000_000, &a_b);
    match net.result(5) {
        Some(Ok(Answer::Lock(LockResult::Record(record)))) => {
            assert!(record.holders.iter().all(|g| g.holder != "alice"), "alice was told busy yet holds: {record:?}");
        }
        other => panic!("read failed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Exclusion from the client's request to the record (review; PROTOCOL §11.10, §11.11). Operations are shaped as the
// HTTP API builds them (src/api/lock.rs): request ids scoped by holder and fresh per call
// unless the client names one, the default holder USER@CLIENT_IP. Each schedule gave two
// processes one write lock (or a reader and a writer) before grant identity and the arrival
// and cancel rules.

fn api_id(holder: &str, rid: &str) -> RequestId {
    RequestId(format!("{holder}\u{0}{rid}"))
}

fn api_lock(holder: &str, rid: &str, lock_type: LockType, lease_us: u64, wait: bool) -> Op {
    Op::Lock(LockOp::Acquire(Acquire {
        request_id: api_id(holder, rid),
        holder: holder.into(),
        lock_type,
        lease: LeaseRule::Fixed(lease_us),
        lock_delay_us: 0,
        wait,
        wait_lease_us: 3_000_000,
        priority: Priority::Normal,
        reason: None,
        node: String::new(),
        poll: false,
    }))
}

fn api_unlock(holder: &str, rid: &str, which: Which) -> Op {
    Op::Lock(LockOp::Release { request_id: api_id(holder, rid), grant: GrantRef { holder: holder.into(), which } })
}

fn locked_token(result: Option<&Result<Answer, Failure>>) -> Option<u64> {
    match result {
        Some(Ok(Answer::Lock(LockResult::Locked { token, .. }))) => Some(*token),
        _ => None,
    }
}

fn three() -> Net {
    let names = ["A", "B", "C"];
    let mut net = Net::new(&names, vec![Durable::default(); 3], Config::default());
    net.bootstrap(&names);
    net
}

/// C is cut off from A and B (both ways); its proposer keeps retrying within the deadline.
fn c_cut(e: &Envelope) -> bool {
    (e.from.name == "C") != (e.to.name == "C")
}

/// H's bare unlock waits at C, cut off; H unlocks via A and locks again (token 2);
/// when C heals, its unlock must not free token 2 (it arrived before that grant existed).
#[test]
fn a_delayed_bare_unlock_does_not_free_a_later_grant_of_the_same_holder() {
    let mut net = three();
    let h = "admin@10.0.0.5";
    net.request("A", 1, scope(), api_lock(h, "r1", LockType::Write, 60_000_000, false));
    net.run(10_000, &keep_all);
    assert_eq!(locked_token(net.result(1)), Some(1));
    net.request("C", 2, scope(), api_unlock(h, "u1", Which::Held));
    net.run(1_000_000, &c_cut);
    assert!(net.result(2).is_none());
    net.request("A", 3, scope(), api_unlock(h, "u2", Which::Held));
    net.run(50_000, &c_cut);
    assert!(matches!(net.result(3), Some(Ok(Answer::Lock(LockResult::Released)))));
    net.request("A", 4, scope(), api_lock(h, "r2", LockType::Write, 60_000_000, false));
    net.run(50_000, &c_cut);
    let t2 = locked_token(net.result(4)).expect("locked again");
    net.run(2_000_000, &keep_all);
    assert!(matches!(net.result(2), Some(Ok(Answer::Lock(LockResult::NotHolder)))), "stale unlock: {:?}", net.result(2));
    net.request("B", 5, scope(), api_lock("bob@10.0.0.9", "b1", LockType::Write, 60_000_000, false));
    net.run(50_000, &keep_all);
    let tb = locked_token(net.result(5));
    assert!(tb.is_none(), "bob granted token {tb:?} while {h} trusts token {t2}");
}

/// A release of h's read grant naming token 1 waits at C; h rejoins the same read
/// phase (token 1 again) via A; the stale release must not free the rejoined grant.
#[test]
fn a_delayed_release_by_token_does_not_free_a_readers_rejoined_grant() {
    let mut net = three();
    let (h, x, w) = ("ops@10.0.0.5", "x@10.0.0.6", "w@10.0.0.7");
    net.request("A", 1, scope(), api_lock(x, "x1", LockType::Read, 60_000_000, false));
    net.run(10_000, &keep_all);
    net.request("A", 2, scope(), api_lock(h, "h1", LockType::Read, 60_000_000, false));
    net.run(10_000, &keep_all);
    assert_eq!((locked_token(net.result(1)), locked_token(net.result(2))), (Some(1), Some(1)));
    let Some(Ok(Answer::Lock(LockResult::Locked { grant: first, .. }))) = net.result(2).cloned() else { panic!() };
    net.request("C", 3, scope(), api_unlock(h, "u1", Which::Token(1)));
    net.run(1_000_000, &c_cut);
    net.request("A", 4, scope(), api_unlock(h, "u2", Which::Grant { token: 1, id: first }));
    net.run(50_000, &c_cut);
    assert!(matches!(net.result(4), Some(Ok(Answer::Lock(LockResult::Released)))));
    net.request("A", 5, scope(), api_lock(h, "h2", LockType::Read, 60_000_000, false));
    net.run(50_000, &c_cut);
    assert_eq!(locked_token(net.result(5)), Some(1), "h reads again in the same phase");
    net.run(2_000_000, &keep_all);
    assert!(matches!(net.result(3), Some(Ok(Answer::Lock(LockResult::NotHolder)))), "stale release: {:?}", net.result(3));
    let Some(Ok(Answer::Lock(LockResult::Locked { grant: xg, .. }))) = net.result(1).cloned() else { panic!() };
    net.request("A", 6, scope(), api_unlock(x, "xu", Which::Grant { token: 1, id: xg }));
    net.run(50_000, &keep_all);
    assert!(matches!(net.result(6), Some(Ok(Answer::Lock(LockResult::Released)))));
    net.request("B", 7, scope(), api_lock(w, "w1", LockType::Write, 60_000_000, false));
    net.run(50_000, &keep_all);
    let tw = locked_token(net.result(7));
    assert!(tw.is_none(), "writer granted token {tw:?} while reader {h} trusts its read grant");
}

/// Two processes share the default holder. P1 stalls past its lease, P2 gets token
/// 2; a renewal naming no grant must not tell P1 it holds P2's grant.
#[test]
fn a_renewal_naming_no_grant_never_hands_one_grant_to_two_processes() {
    let mut net = three();
    let h = "admin@10.0.0.5";
    net.request("A", 1, scope(), api_lock(h, "p1", LockType::Write, 1_000_000, false));
    net.run(10_000, &keep_all);
    assert_eq!(locked_token(net.result(1)), Some(1));
    net.run(2_000_000, &keep_all);
    net.request("B", 2, scope(), api_lock(h, "p2", LockType::Write, 30_000_000, false));
    net.run(10_000, &keep_all);
    let t2 = locked_token(net.result(2)).expect("P2 holds");
    let renew = |which| Op::Lock(LockOp::Renew { grant: GrantRef { holder: h.into(), which }, lease: LeaseRule::Fixed(30_000_000) });
    net.request("C", 3, scope(), renew(Which::Held));
    net.run(10_000, &keep_all);
    let t1 = locked_token(net.result(3));
    assert!(t1.is_none(), "P1's bare renewal was answered locked (token {t1:?}) for P2's grant {t2}");
    // Naming its own grant, P1 learns it is gone.
    net.request("C", 4, scope(), renew(Which::Token(1)));
    net.run(10_000, &keep_all);
    assert!(matches!(net.result(4), Some(Ok(Answer::Lock(LockResult::NotHolder)))));
}

/// w waits via B; its connection breaks and it retries the same request id at C,
/// which collects the handed-over grant and answers "locked". B's handler, at its deadline,
/// cancels by request id: the cancel must keep the reported grant.
#[test]
fn a_cancel_keeps_a_grant_that_a_retry_elsewhere_reported() {
    let mut net = three();
    let (a, w, bob) = ("a@10.0.0.1", "w@10.0.0.7", "bob@10.0.0.9");
    net.request("A", 1, scope(), api_lock(a, "a1", LockType::Write, 30_000_000, false));
    net.run(10_000, &keep_all);
    net.request("B", 2, scope(), api_lock(w, "w1", LockType::Write, 30_000_000, true));
    net.run(10_000, &keep_all);
    assert!(matches!(net.result(2), Some(Ok(Answer::Lock(LockResult::Queued { .. })))));
    net.request("A", 3, scope(), api_unlock(a, "au", Which::Token(1)));
    net.run(10_000, &keep_all);
    net.request("C", 4, scope(), api_lock(w, "w1", LockType::Write, 30_000_000, true));
    net.run(10_000, &keep_all);
    let tw = locked_token(net.result(4)).expect("handler 2 tells w it holds");
    net.request("B", 5, scope(), Op::Lock(LockOp::Cancel { request_id: api_id(w, "w1") }));
    net.run(10_000, &keep_all);
    assert!(matches!(net.result(5), Some(Ok(Answer::Lock(LockResult::Collected { token, .. }))) if *token == tw), "{:?}", net.result(5));
    net.request("A", 6, scope(), api_lock(bob, "b1", LockType::Write, 30_000_000, false));
    net.run(10_000, &keep_all);
    let tb = locked_token(net.result(6));
    assert!(tb.is_none(), "bob granted token {tb:?} while w trusts token {tw}");
}

/// A sweep lists scopes a page at a time (review: one listing of ~650,000 scopes no longer fit
/// a frame, so no sweep finished and every later roster change was refused for good). With
/// pages of two names, seven scopes take four pages; each is rewritten (prepared) under the
/// new roster, the change completes, and the next one is allowed.
#[test]
fn a_sweep_lists_scopes_in_pages_and_completes() {
    let names = ["A", "B", "C", "D", "E"];
    let config = Config { sweep_page: 2, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 5], config);
    net.bootstrap(&["A", "B", "C"]);
    let scopes: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
    for (i, name) in scopes.iter().enumerate() {
        net.request(["A", "B", "C"][i % 3], 10 + i as u64, Key::Scope(name.clone()), acquire_for(&format!("h{i}"), 60_000_000, false));
    }
    net.run(100_000, &keep_all);
    assert!((0..7).all(|i| is_locked(net.result(10 + i))));
    // Counts the pages A is asked for and the scopes prepared at A as messages go by.
    let pages = std::cell::Cell::new(0);
    let prepared = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let count = |e: &Envelope| {
        match &e.body {
            Body::ListKeys { .. } if e.to.name == "A" => pages.set(pages.get() + 1),
            Body::Prepare { key: Key::Scope(name), .. } if e.to.name == "A" => {
                prepared.borrow_mut().insert(name.clone());
            }
            _ => {}
        }
        false
    };
    for (client, name) in [(100, "D"), (101, "E")] {
        prepared.borrow_mut().clear();
        net.request("C", client, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(net.id(name)), expected_version: None }));
        while net.result(client).is_none() || net.nodes.iter().any(|n| n.roster().is_some_and(|r| !r.sweep_done)) {
            net.run(1_000, &count);
            assert!(net.now < 60_000_000, "the sweep did not finish");
        }
        assert!(matches!(net.result(client), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(client));
        assert_eq!(prepared.borrow().iter().cloned().collect::<Vec<_>>(), scopes, "every scope is rewritten under the new roster");
    }
    assert!(pages.get() >= 8, "two sweeps of seven scopes in pages of two: {} listings", pages.get());
    assert!(net.nodes.iter().all(|n| n.roster().is_some_and(|r| r.version == 3 && r.sweep_done)));
}

/// After a roster change one voter sweeps: the decider, at once. The other voters check for an
/// unswept roster every 20 ms here, dozens of times while the decider's listing is held up,
/// yet they see its page requests and leave the sweep to it. When the sweeper is cut off,
/// another voter takes over once `sweep_takeover_us` passed without a page request, and
/// finishes.
#[test]
fn one_voter_sweeps_at_a_time_and_another_takes_over_when_it_stops() {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeSet;
    let names = ["A", "B", "C", "D", "E"];
    let config = Config { sweep_page: 2, sweep_check_us: 20_000, sweep_takeover_us: 2_000_000, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 5], config);
    net.bootstrap(&["A", "B", "C"]);
    for i in 0..7u64 {
        net.request(["A", "B", "C"][i as usize % 3], 10 + i, Key::Scope(format!("s{i}")), acquire_for(&format!("h{i}"), 60_000_000, false));
    }
    net.run(100_000, &keep_all);
    let sweepers = RefCell::new(BTreeSet::<String>::new());
    // Pages answered to C are lost while `slow`; everything to or from C once `cut`.
    let slow = Cell::new(false);
    let cut = Cell::new(false);
    let cut_at_first_page = Cell::new(false);
    let watch = |e: &Envelope| {
        let page_to_c = e.to.name == "C" && matches!(e.body, Body::KeyList { .. });
        if page_to_c && cut_at_first_page.get() {
            cut.set(true);
        }
        let drop = (slow.get() && page_to_c) || (cut.get() && (e.from.name == "C" || e.to.name == "C"));
        if matches!(e.body, Body::ListKeys { .. }) && !drop {
            sweepers.borrow_mut().insert(e.from.name.clone());
        }
        drop
    };
    let swept = |net: &Net, version: u64, nodes: &[&str]| {
        nodes.iter().all(|n| net.nodes[net.idx(n)].roster().is_some_and(|r| r.version == version && r.sweep_done))
    };

    // D joins; C decides and sweeps while the other voters' checks fire again and again.
    slow.set(true);
    net.request("C", 100, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(net.id("D")), expected_version: None }));
    net.run(300_000, &watch);
    slow.set(false);
    while !swept(&net, 2, &["A", "B", "C", "D"]) {
        net.run(1_000, &watch);
        assert!(net.now < 30_000_000, "the sweep of v2 did not finish");
    }
    assert_eq!(sweepers.take(), BTreeSet::from(["C".to_string()]), "only the decider sweeps");

    // E joins; C decides, asks for its first page and is cut off at once.
    cut_at_first_page.set(true);
    let start = net.now;
    net.request("C", 101, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(net.id("E")), expected_version: None }));
    while !swept(&net, 3, &["A", "B", "D", "E"]) {
        net.run(1_000, &watch);
        assert!(net.now < start + 30_000_000, "nobody took the sweep of v3 over: {:?}", net.nodes.iter().map(|n| (n.id().name.clone(), n.roster().map(|r| (r.version, r.sweep_done)), n.sweeping(), n.stats().unproven_rosters, n.rejected.clone())).collect::<Vec<_>>());
    }
    assert!(matches!(net.result(101), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(101));
    assert!(cut.get());
    assert!(net.now >= start + 2_000_000, "another voter took over before the takeover time: {} µs, {:?}", net.now - start, sweepers.borrow());
    let sweepers = sweepers.take();
    assert!(sweepers.contains("C") && sweepers.len() == 2, "the decider, then one other voter: {sweepers:?}");
}

/// A roster change chosen while its proposer is cut off is installed and swept all the same:
/// the voters that accepted it read the roster register from their periodic check. (Found by
/// the simulator's liveness check: nobody installed such a change, and no later one could be
/// made.)
#[test]
fn a_roster_change_chosen_while_its_proposer_is_cut_off_is_installed_and_swept() {
    let config = Config { sweep_check_us: 20_000, ..Config::default() };
    let mut net = Net::new(&["A", "B", "C", "D"], vec![Durable::default(); 4], config);
    net.bootstrap(&["A", "B", "C"]);
    net.request("A", 1, scope(), acquire_for("a", 60_000_000, false));
    net.run(100_000, &keep_all);
    assert!(is_locked(net.result(1)));
    // C's ballot for the change runs until its Accepts go out; they reach A and B, and from
    // then on nothing to or from C arrives.
    let accepts_sent = std::cell::Cell::new(false);
    let cut_but_accepts = |e: &Envelope| {
        let accept_from_c = e.from.name == "C" && matches!(e.body, Body::Accept { key: Key::Roster, .. });
        if accept_from_c {
            accepts_sent.set(true);
        }
        accepts_sent.get() && (e.from.name == "C" || e.to.name == "C") && !(accept_from_c && e.to.name != "C")
    };
    net.request("C", 2, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(net.id("D")), expected_version: None }));
    let start = net.now;
    while !["A", "B", "D"].iter().all(|n| net.nodes[net.idx(n)].roster().is_some_and(|r| r.version == 2 && r.sweep_done)) {
        net.run(10_000, &cut_but_accepts);
        assert!(net.now < start + 30_000_000, "the chosen change was never installed and swept: {:?}", net.nodes.iter().map(|n| (n.roster().map(|r| (r.version, r.sweep_done)), n.sweeping())).collect::<Vec<_>>());
    }
    // The scope was swept onto the new roster: a grant through D still finds it held.
    net.request("D", 3, scope(), acquire_for("b", 60_000_000, false));
    net.run(1_000_000, &cut_but_accepts);
    assert!(matches!(net.result(3), Some(Ok(Answer::Lock(LockResult::Busy { .. })))), "{:?}", net.result(3));
}

fn add_change(net: &Net, add: &str, expected: Option<u64>) -> Op {
    Op::Roster(RosterOp::Change { change: RosterChange::Add(net.id(add)), expected_version: expected })
}

/// Red team of the catch-up read: no message is lost, but C's Accepts of its change reach A at
/// once and B, D, E late; A's periodic check fires in between and reads the register (found
/// v1 chosen there), so B, D, E refuse C's late Accepts and C retries. C's change is the
/// roster in the end, and C must say so — it answered `Moved` ("refused") before the fix.
#[test]
fn a_catch_up_read_overtaking_a_changes_accepts_does_not_turn_its_success_into_a_refusal() {
    use std::cell::{Cell, RefCell};
    let names = ["A", "B", "C", "D", "E", "F"];
    let config = Config { sweep_check_us: 20_000, phase_timeout_us: 1_000, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 6], config);
    net.bootstrap(&["A", "B", "C", "D", "E"]);
    let held = RefCell::new(Vec::new());
    let a_read = Cell::new(false);
    let hold_late_accepts = |e: &Envelope| {
        let late = e.from.name == "C" && e.to.name != "A" && matches!(e.body, Body::Accept { key: Key::Roster, .. });
        if e.from.name == "A" && matches!(e.body, Body::Prepare { key: Key::Roster, .. }) {
            a_read.set(true);
        }
        if late {
            held.borrow_mut().push(e.clone());
        }
        late
    };
    net.request("C", 7, Key::Roster, add_change(&net, "F", Some(1)));
    net.pump(&hold_late_accepts);
    assert_eq!(held.borrow().len(), 3, "C's Accepts to B, D, E are on their way");
    // A's periodic check fires while they travel (only A's timers run).
    let ai = net.idx("A");
    while !a_read.get() {
        let t = net.nodes[ai].next_timeout().unwrap().0;
        net.now = net.now.max(t);
        net.nodes[ai].handle_timeout(Time(net.now));
        net.collect(ai);
        net.pump(&hold_late_accepts);
        assert!(net.now < 1_000_000, "A's check never read the register");
    }
    net.queue.extend(held.take());
    net.run(5_000_000, &keep_all);
    let roster = net.nodes[net.idx("C")].roster().cloned().unwrap();
    assert!(roster.version == 2 && roster.contains(&net.id("F")), "the roster is C's change: {roster:?}");
    let answer = net.result(7).cloned();
    assert!(matches!(answer, Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "C answers {answer:?}");
}

/// Red team: the decider of a change is cut off right after its Accepts went out; a majority
/// took them, and the catch-up installs and sweeps the change meanwhile. When the decider
/// heals, its retry must not answer that its change was refused (contract 6: after an Accept
/// carrying the effect, only success, `timeout` or a refusal committed instead of it). It
/// answered `Moved` before the fix (also before the catch-up existed).
#[test]
fn the_decider_of_a_change_finished_while_it_was_cut_off_is_not_told_it_was_refused() {
    use std::cell::Cell;
    let config = Config { sweep_check_us: 20_000, ..Config::default() };
    let mut net = Net::new(&["A", "B", "C", "D"], vec![Durable::default(); 4], config);
    net.bootstrap(&["A", "B", "C"]);
    let accepts_sent = Cell::new(false);
    let healed = Cell::new(false);
    let cut_but_accepts = |e: &Envelope| {
        let accept_from_c = e.from.name == "C" && matches!(e.body, Body::Accept { key: Key::Roster, .. });
        if accept_from_c {
            accepts_sent.set(true);
        }
        !healed.get() && accepts_sent.get() && (e.from.name == "C" || e.to.name == "C") && !(accept_from_c && e.to.name != "C")
    };
    net.request("C", 2, Key::Roster, add_change(&net, "D", Some(1)));
    net.run(15_000_000, &cut_but_accepts);
    let at_a = net.nodes[net.idx("A")].roster().map(|r| (r.version, r.sweep_done));
    assert_eq!(at_a, Some((2, true)), "the catch-up installed and swept the change");
    assert!(net.result(2).is_none(), "C still retries its change");
    healed.set(true);
    net.run(5_000_000, &cut_but_accepts);
    let answer = net.result(2).cloned();
    assert!(
        matches!(answer, Some(Ok(Answer::Roster(RosterResult::Changed(_)))) | Some(Err(Failure::Timeout))),
        "C's change took effect, but C answers {answer:?}"
    );
}

// A red-team review of grant identity (PROTOCOL §11.10, §11.11): each schedule broke the first
// version of the rules.

fn api_renew(holder: &str, which: Which, lease_us: u64) -> Op {
    Op::Lock(LockOp::Renew { grant: GrantRef { holder: holder.into(), which }, lease: LeaseRule::Fixed(lease_us) })
}

fn api_poll(holder: &str, rid: &str) -> Op {
    let Op::Lock(LockOp::Acquire(mut a)) = api_lock(holder, rid, LockType::Write, 30_000_000, true) else { unreachable!() };
    a.poll = true;
    Op::Lock(LockOp::Acquire(a))
}

fn locked_grant(result: Option<&Result<Answer, Failure>>) -> Option<(u64, u64)> {
    match result {
        Some(Ok(Answer::Lock(LockResult::Locked { token, grant, .. }))) => Some((*token, *grant)),
        _ => None,
    }
}

/// Two processes share the default holder h and each holds a read grant of phase 1. P2
/// releases "its" lock by fencing_token 1 (the API allowed it for reads): the rule frees the
/// first of h's grants provably older than the release, P1's. P2's own short grant then
/// expires, a writer is granted, and P1 still trusts its read grant.
#[test]
fn a_release_by_a_read_token_frees_only_the_releasing_process_grant() {
    let mut net = three();
    let (h, w) = ("ops@10.0.0.5", "w@10.0.0.7");
    net.request("A", 1, scope(), api_lock(h, "p1", LockType::Read, 60_000_000, false));
    net.run(1_000_000, &keep_all);
    let (t1, g1) = locked_grant(net.result(1)).expect("P1 reads");
    net.request("A", 2, scope(), api_lock(h, "p2", LockType::Read, 5_000_000, false));
    net.run(1_000_000, &keep_all);
    let (t2, g2) = locked_grant(net.result(2)).expect("P2 reads");
    assert_eq!((t1, t2), (1, 1));
    // Released (today: P1's grant) or refused (naming a read grant by token is ambiguous).
    net.request("A", 3, scope(), api_unlock(h, "p2-unlock", Which::Token(1)));
    net.run(10_000, &keep_all);
    net.request("A", 4, scope(), Op::Lock(LockOp::Read));
    net.run(10_000, &keep_all);
    let Some(Ok(Answer::Lock(LockResult::Record(record)))) = net.result(4).cloned() else { panic!("read") };
    let left: Vec<u64> = record.holders.iter().map(|g| g.id).collect();
    // P1 (sent at t=0, lease 60 s) trusts until about t=59.4 s. P2's grant runs out at ~6 s.
    net.run(8_000_000, &keep_all);
    net.request("B", 5, scope(), api_lock(w, "w1", LockType::Write, 60_000_000, false));
    net.run(10_000, &keep_all);
    let tw = locked_token(net.result(5));
    assert!(
        tw.is_none(),
        "P2's release by token freed P1's grant {g1} (left {left:?}, P2's was {g2}); writer granted token {tw:?} at t={}us while P1 trusts its read grant",
        net.now
    );
}

/// The same ambiguity for renewals: P2 renews by fencing_token 1 and is answered "locked" for
/// P1's grant; P1 then releases its grant by id, P2's own grant runs out, and a writer is
/// granted while P2 trusts its renewal (failure 2 again, through a read token).
#[test]
fn a_renewal_by_a_read_token_renews_only_the_renewing_process_grant() {
    let mut net = three();
    let (h, w) = ("ops@10.0.0.5", "w@10.0.0.7");
    net.request("A", 1, scope(), api_lock(h, "p1", LockType::Read, 60_000_000, false));
    net.run(1_000_000, &keep_all);
    let (_, g1) = locked_grant(net.result(1)).expect("P1 reads");
    net.request("A", 2, scope(), api_lock(h, "p2", LockType::Read, 5_000_000, false));
    net.run(2_000_000, &keep_all);
    let (_, g2) = locked_grant(net.result(2)).expect("P2 reads");
    // t = 3 s: P2 renews for 30 s, naming its fencing token; it trusts until ~32.7 s.
    net.request("A", 3, scope(), api_renew(h, Which::Token(1), 30_000_000));
    net.run(1_000_000, &keep_all);
    let renewed = locked_grant(net.result(3));
    // P1 is done with its read and releases exactly its grant.
    net.request("A", 4, scope(), api_unlock(h, "p1-unlock", Which::Grant { token: 1, id: g1 }));
    net.run(5_000_000, &keep_all);
    net.request("B", 5, scope(), api_lock(w, "w1", LockType::Write, 60_000_000, false));
    net.run(10_000, &keep_all);
    let tw = locked_token(net.result(5));
    // Refusing the renewal is fine (P2's trust then ends at ~6 s); answering it "locked" is
    // fine only for P2's own grant, which then keeps the writer out.
    assert!(
        renewed.is_none_or(|(_, g)| g == g2 && tw.is_none()),
        "P2's renewal by token answered {renewed:?} (P1's grant is {g1}, P2's {g2}); writer granted {tw:?} at t={}us while P2 trusts its renewal",
        net.now
    );
}

/// Failure 4, later: w's retry at C collects the handed-over grant ("locked"), w works and
/// releases it; then B's handler (still polling for the broken connection) cancels at its
/// deadline. The cancel is answered `Cancelled`, which the handler turns into "busy": a
/// definite failure for a request that was granted and used.
#[test]
fn a_cancel_after_a_collected_grant_ended_does_not_say_it_was_never_granted() {
    let mut net = three();
    let (a, w) = ("a@10.0.0.1", "w@10.0.0.7");
    net.request("A", 1, scope(), api_lock(a, "a1", LockType::Write, 30_000_000, false));
    net.run(10_000, &keep_all);
    net.request("B", 2, scope(), api_lock(w, "w1", LockType::Write, 30_000_000, true));
    net.run(10_000, &keep_all);
    net.request("A", 3, scope(), api_unlock(a, "au", Which::Token(1)));
    net.run(10_000, &keep_all);
    net.request("C", 4, scope(), api_lock(w, "w1", LockType::Write, 30_000_000, true));
    net.run(10_000, &keep_all);
    let (tw, gw) = locked_grant(net.result(4)).expect("w told locked via C");
    net.request("C", 5, scope(), api_unlock(w, "wu", Which::Grant { token: tw, id: gw }));
    net.run(10_000, &keep_all);
    assert!(matches!(net.result(5), Some(Ok(Answer::Lock(LockResult::Released)))));
    net.request("B", 6, scope(), Op::Lock(LockOp::Cancel { request_id: api_id(w, "w1") }));
    net.run(10_000, &keep_all);
    assert!(
        !matches!(net.result(6), Some(Ok(Answer::Lock(LockResult::Cancelled)))),
        "cancel of a request that was granted (token {tw}) answered Cancelled, i.e. HTTP \"busy\""
    );
}

/// The handler's polls are new arrivals. w waits via B (handler 1) and, its connection broken,
/// retries the same request id at C (handler 2); handler 2's deadline cancels it and answers
/// "busy". Before handler 1's next poll (500 ms) the scope's request log drops w1's Ended
/// entry (a busy scope: here log_capacity 4). The poll then finds nothing and, arriving fresh,
/// is not TooOld: w1 is queued anew and later granted, though w was told "busy".
#[test]
fn a_poll_after_a_cancel_does_not_requeue_a_request_answered_busy() {
    let names = ["A", "B", "C"];
    let config = Config { limits: Limits { log_capacity: 4, ..Limits::default() }, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 3], config);
    net.bootstrap(&names);
    let (a, w) = ("a@10.0.0.1", "w@10.0.0.7");
    net.request("A", 1, scope(), api_lock(a, "a1", LockType::Write, 30_000_000, false));
    net.run(10_000, &keep_all);
    assert_eq!(locked_token(net.result(1)), Some(1));
    net.request("B", 2, scope(), api_lock(w, "w1", LockType::Write, 30_000_000, true));
    net.run(10_000, &keep_all);
    net.request("C", 3, scope(), api_lock(w, "w1", LockType::Write, 30_000_000, true));
    net.run(10_000, &keep_all);
    assert!(matches!(net.result(3), Some(Ok(Answer::Lock(LockResult::Queued { .. })))));
    // Handler 2's deadline: cancel, answered Cancelled, so the client hears "busy".
    net.request("C", 4, scope(), Op::Lock(LockOp::Cancel { request_id: api_id(w, "w1") }));
    net.run(100_000, &keep_all);
    assert!(matches!(net.result(4), Some(Ok(Answer::Lock(LockResult::Cancelled)))));
    // Other clients are refused (each refusal is logged): w1's Ended entry is dropped.
    for i in 0..5 {
        net.request("A", 10 + i, scope(), api_lock(&format!("x{i}@10.0.1.1"), "x", LockType::Write, 30_000_000, false));
        net.run(10_000, &keep_all);
    }
    // Handler 1 polls (as the API sends every call after a Queued answer).
    net.request("B", 20, scope(), api_poll(w, "w1"));
    net.run(10_000, &keep_all);
    let poll = net.result(20).cloned();
    net.request("A", 21, scope(), api_unlock(a, "au", Which::Token(1)));
    net.run(10_000, &keep_all);
    net.request("B", 22, scope(), api_poll(w, "w1"));
    net.run(10_000, &keep_all);
    let later = locked_token(net.result(22));
    assert!(later.is_none(), "w1 was answered busy (cancelled), yet its next poll got {poll:?} and then token {later:?}");
}

/// Review: a definite answer drawn from the request log must be as young as the answer. w's
/// first attempt (via A) is refused, but only A accepts that value; w abandons the call and
/// retries at C, which is cut off and holds the copy; w abandons that too and retries via B,
/// which answers busy from the log entry A made first. Once the (full) log forgets the entry,
/// C's copy — older than the busy answer — must be refused as too old, not granted. Before
/// log answers renewed their entries, the entry's age counted from A's first apply, before C's
/// copy arrived, and C granted it.
#[test]
fn a_copy_held_before_a_busy_answered_from_the_log_is_never_granted() {
    let names = ["A", "B", "C"];
    let config = Config { limits: Limits { log_capacity: 4, ..Limits::default() }, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 3], config);
    net.bootstrap(&names);
    let (a, w) = ("a@10.0.0.1", "w@10.0.0.7");
    net.request("A", 1, scope(), api_lock(a, "a1", LockType::Write, 3_000_000, false));
    net.run(10_000, &keep_all);
    assert_eq!(locked_token(net.result(1)), Some(1));
    // Attempt 1 via A (its fast path): refused at A, whose Accepts are lost. w gives up on it.
    net.request("A", 2, scope(), api_lock(w, "r1", LockType::Write, 30_000_000, false));
    net.pump(&|e: &Envelope| e.from.name == "A" && e.to.name != "A" && matches!(e.body, Body::Accept { .. }));
    net.run(400_000, &|e: &Envelope| e.from.name == "A" && e.to.name != "A");
    // Attempt 2 at C, which is cut off from now on. w gives up on it too.
    net.request("C", 3, scope(), api_lock(w, "r1", LockType::Write, 30_000_000, false));
    net.run(10_000, &c_cut);
    // Attempt 3 via B: busy, drawn from the entry A's value holds.
    net.request("B", 4, scope(), api_lock(w, "r1", LockType::Write, 30_000_000, false));
    while net.result(4).is_none() && net.now < 3_000_000 {
        net.run(10_000, &c_cut);
    }
    assert!(matches!(net.result(4), Some(Ok(Answer::Lock(LockResult::Busy { .. })))), "{:?}", net.result(4));
    // Three more refusals fill the log.
    for i in 0..3 {
        net.request("A", 10 + i, scope(), api_lock(&format!("x{i}@10.0.1.1"), "x", LockType::Write, 30_000_000, false));
        net.run(10_000, &c_cut);
    }
    net.run(4_000_000, &c_cut);
    assert!(net.result(3).is_none(), "C still holds its copy");
    // C heals: its ballot expires a's grant (logged), which pushes r1's entry out.
    net.run(3_000_000, &keep_all);
    let late = locked_token(net.result(3));
    assert!(late.is_none(), "w was told busy, yet its copy held at C got token {late:?}: {:?}", net.result(3));
}

// Peer input that no honest node sends (issue: "validation instead of panics").

fn two_writers() -> LockRecord {
    let mut record = LockRecord::default();
    for (i, holder) in ["x", "y"].iter().enumerate() {
        let op = acquire(holder);
        let _ = record.apply(&op_lock(op), 0, &Limits::default());
        // Force a second writer beside the first, as a forged value would carry.
        if i == 1 {
            let mut second = record.holders[0].clone();
            second.holder = (*holder).into();
            second.id = record.next_lease_seq + 1;
            record.next_lease_seq += 1;
            record.holders.push(second);
        }
    }
    record
}

fn op_lock(op: Op) -> LockOp {
    match op {
        Op::Lock(l) => l,
        Op::Roster(_) => unreachable!(),
    }
}

/// A review crashed voters in a loop with an Accept whose record has two write holders: the
/// voter stored it, and its next ballot on the scope tripped the record invariant check. Now
/// the voter refuses it (stores nothing, answers nothing), counts it, and serves the scope.
#[test]
fn an_accept_with_an_invalid_record_is_refused_and_changes_nothing() {
    let mut c = Cluster::new(3);
    let roster = c.nodes[0].roster().unwrap().id();
    let forged = Value::Lock(two_writers());
    assert!(crate::validate::value(&scope(), &forged, &Limits::default()).is_err());
    let rogue = nid("rogue", 999);
    let to = c.nodes[0].id().clone();
    let ballot = Ballot { round: 1 << 40, proposer: 999 };
    c.nodes[0].handle_message(c.now, Envelope { from: rogue.clone(), to, roster: Some(roster), body: Body::Accept { key: scope(), ballot, value: forged } });
    let out = c.nodes[0].drain();
    assert!(out.writes.is_empty() && out.messages.is_empty() && out.early.is_empty(), "{out:?}");
    assert_eq!(c.nodes[0].stats().invalid_from_peers, 1);
    let rejected = c.nodes[0].take_rejected();
    assert!(rejected.len() == 1 && rejected[0].0 == rogue && matches!(&rejected[0].1, Refused::Invalid(w) if w.contains("writer")), "{rejected:?}");
    // The voter serves the scope as if nothing had come.
    c.request(0, 1, scope(), acquire("a"));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))));
}

/// A promise carrying an invalid record counts as a refusal: the proposer never reads it.
#[test]
fn a_promise_with_an_invalid_record_counts_as_a_refusal() {
    let mut c = Cluster::new(3);
    c.request(0, 1, scope(), acquire("a"));
    c.collect();
    // Deliver n0's Prepares; replace n1's promise with one carrying a forged record.
    let mut forged_once = false;
    while let Some(mut e) = c.inbox.pop_front() {
        if let Body::Promise { accepted, .. } = &mut e.body {
            if e.from == *c.nodes[1].id() && !forged_once {
                forged_once = true;
                *accepted = Some(crate::message::AcceptedValue { ballot: Ballot { round: 1 << 40, proposer: 1 }, value: Value::Lock(two_writers()), roster: e.roster });
            }
        }
        let to = c.index(&e.to);
        c.nodes[to].handle_message(c.now, e);
        c.collect();
    }
    assert!(forged_once);
    assert_eq!(c.nodes[0].stats().invalid_from_peers, 1);
    let reply = c.take_reply(1);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))), "{reply:?}");
}

/// A Commit of a roster that no ballot could choose (no voters; voters out of order) is
/// refused before anything looks at it.
#[test]
fn a_commit_of_a_malformed_roster_is_refused() {
    let mut c = Cluster::new(3);
    let installed = c.nodes[0].roster().cloned().unwrap();
    let rogue = nid("rogue", 999);
    let to = c.nodes[0].id().clone();
    for roster in [Roster { voters: vec![], version: 9, ..installed.clone() }, Roster { voters: installed.voters.iter().rev().cloned().collect(), version: 9, ..installed.clone() }] {
        c.nodes[0].handle_message(c.now, Envelope { from: rogue.clone(), to: to.clone(), roster: None, body: unproven(roster, installed.id()) });
    }
    assert_eq!(c.nodes[0].roster(), Some(&installed));
    assert_eq!(c.nodes[0].stats().invalid_from_peers, 2);
}

// A red team of peer-input validation: values that passed the first `validate` and still
// hurt. Each failed before rounds, scope names and roster counters from peers were bounded;
// the last is a probe that held.

/// Forged by a non-member ("rogue"): a Commit of the installed roster at version u64::MAX
/// (same cluster, same voters, swept), and an Accept of it into the roster register. Both
/// passed `validate::roster`, and the next roster change computed `version + 1`
/// (`Roster::changed`) and panicked with an overflow. Now both are refused.
#[test]
fn a_roster_at_version_u64_max_from_a_peer_is_refused() {
    let mut c = Cluster::new(3);
    let installed = c.nodes[0].roster().cloned().unwrap();
    let top = Roster { version: u64::MAX, sweep_done: true, ..installed.clone() };
    assert!(crate::validate::roster(&top).is_err());
    let rogue = nid("rogue", 999);
    for i in 0..3 {
        let to = c.nodes[i].id().clone();
        c.nodes[i].handle_message(c.now, Envelope { from: rogue.clone(), to: to.clone(), roster: None, body: unproven(top.clone(), installed.id()) });
        let ballot = Ballot { round: 1 << 20, proposer: 999 };
        let body = Body::Accept { key: Key::Roster, ballot, value: Value::Roster(top.clone()) };
        c.nodes[i].handle_message(c.now, Envelope { from: rogue.clone(), to, roster: Some(top.id()), body });
    }
    c.collect();
    c.inbox.retain(|e| e.to != rogue);
    assert_eq!(c.nodes[0].stats().invalid_from_peers, 2, "both forged values are refused");
    assert_eq!(c.nodes[0].roster(), Some(&installed));
    let change = RosterOp::Change { change: RosterChange::Remove(c.nodes[2].id().clone()), expected_version: None };
    c.request(0, 1, Key::Roster, Op::Roster(change));
    for _ in 0..50 {
        c.settle(); // panicked: attempt to add with overflow (roster.rs, Roster::changed)
        c.now = c.now.plus_micros(200_000);
        for n in &mut c.nodes {
            n.handle_timeout(c.now);
        }
    }
    c.settle();
    let reply = c.take_reply(1);
    assert!(reply.result.is_ok(), "{reply:?}");
}

/// A non-member's Accept carried any scope name: `validate::value` checked the record, not
/// the key (the HTTP edge caps names at 200 bytes; peers were not held to it). Nine Accepts
/// with 1 MiB names (each fits a frame) made every voter's first sweep page larger than
/// the mesh's MAX_FRAME (8 MiB): the page was dropped at encode, no sweep could finish, and
/// no roster change could complete again (the PROTOCOL §11.14 regression, from peer input).
/// Now such names are refused.
#[test]
fn scope_names_from_peers_are_bounded_so_sweep_pages_fit_a_frame() {
    const MAX_FRAME: usize = 8 << 20;
    let mut c = Cluster::new(3);
    let roster = c.nodes[0].roster().unwrap().id();
    let rogue = nid("rogue", 999);
    let to = c.nodes[0].id().clone();
    for i in 0..9 {
        let name = format!("{i}{}", "x".repeat(1 << 20));
        let body = Body::Accept { key: Key::Scope(name), ballot: Ballot { round: 5, proposer: 999 }, value: Value::Lock(LockRecord::default()) };
        let e = Envelope { from: rogue.clone(), to: to.clone(), roster: Some(roster), body };
        assert!(bincode::serde::encode_to_vec(&e, bincode::config::standard()).unwrap().len() < MAX_FRAME, "each Accept fits a frame");
        c.nodes[0].handle_message(c.now, e);
    }
    let _ = c.nodes[0].drain();
    assert_eq!(c.nodes[0].stats().invalid_from_peers, 9, "the Accepts are refused");
    // A member's sweep asks for the first page.
    let sweeper = c.nodes[1].id().clone();
    c.nodes[0].handle_message(c.now, Envelope { from: sweeper, to: to.clone(), roster: Some(roster), body: Body::ListKeys { sweep: 1, after: None } });
    let out = c.nodes[0].drain();
    let page = out.messages.iter().find(|e| matches!(e.body, Body::KeyList { .. })).expect("a page");
    let len = bincode::serde::encode_to_vec(page, bincode::config::standard()).unwrap().len();
    assert!(len <= MAX_FRAME, "a sweep page of {len} bytes cannot be sent (MAX_FRAME {MAX_FRAME})");
}

/// A non-member's Prepare at round u64::MAX (proposer u64::MAX) is promised and persisted:
/// no ballot can ever exceed it (rounds saturate), so the scope can never be locked again,
/// and every node that hears the refusal jumps its own rounds to u64::MAX. (The overflow
/// the fuzzer found was made saturating; this is what saturation leaves behind.)
#[test]
fn a_prepare_at_round_u64_max_from_a_peer_does_not_wedge_a_scope() {
    let mut c = Cluster::new(3);
    let roster = c.nodes[0].roster().unwrap().id();
    let rogue = nid("rogue", 999);
    for i in 0..3 {
        let to = c.nodes[i].id().clone();
        let body = Body::Prepare { key: scope(), ballot: Ballot { round: u64::MAX, proposer: u64::MAX } };
        c.nodes[i].handle_message(c.now, Envelope { from: rogue.clone(), to, roster: Some(roster), body });
    }
    c.collect();
    c.inbox.retain(|e| e.to != rogue);
    for attempt in 0..20u64 {
        c.request(0, 1 + attempt, scope(), acquire(&format!("a{attempt}")));
        for _ in 0..50 {
            c.settle();
            c.now = c.now.plus_micros(200_000);
            for n in &mut c.nodes {
                n.handle_timeout(c.now);
            }
        }
        c.settle();
        if let Some(r) = c.replies.iter().find(|r| r.client == 1 + attempt) {
            if matches!(r.result, Ok(Answer::Lock(LockResult::Locked { .. }))) {
                return;
            }
        }
    }
    panic!("no acquire on the scope ever succeeds after one forged Prepare at round u64::MAX: {:?}", c.replies.iter().map(|r| &r.result).collect::<Vec<_>>());
}

/// One message from a non-member, a Refuse saying "promised round u64::MAX" (nothing checks
/// its sender before `max_round_seen` takes it), moves n0's rounds to u64::MAX for good.
/// There `Ballot::successor` saturates: n0's fast path sends its next value at the very
/// ballot the voters already accepted, and `Acceptor::accept_promising` takes it for a
/// duplicate — acknowledged, not stored. n0 answers "released" and "locked" for values no
/// voter holds. Result: b is told it holds token 2, and c is granted token 2 as well, both
/// within their leases.
#[test]
fn a_round_at_u64_max_from_a_peer_cannot_make_the_fast_path_lose_writes() {
    let mut c = Cluster::new(3);
    let roster = c.nodes[0].roster().unwrap().id();
    let rogue = nid("rogue", 999);
    let to = c.nodes[0].id().clone();
    let why = crate::message::Refusal::Promised(Ballot { round: u64::MAX, proposer: 0 });
    let body = Body::Refuse { key: Key::Scope("anything".into()), ballot: Ballot { round: 1, proposer: 1 }, why };
    c.nodes[0].handle_message(c.now, Envelope { from: rogue, to, roster: Some(roster), body });
    c.settle();
    // t = 0: a locks (full ballot at (u64::MAX, n0)), then releases (n0's fast path).
    c.request(0, 1, scope(), acquire("a"));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))));
    let release = Op::Lock(LockOp::Release { request_id: RequestId("a-rel".into()), grant: GrantRef { holder: "a".into(), which: Which::Token(1) } });
    c.request(0, 2, scope(), release);
    c.settle();
    assert!(matches!(c.take_reply(2).result, Ok(Answer::Lock(LockResult::Released))));
    // t = 9 s: b locks through n0's fast path: told token 2, lease 10 s (to t = 19 s).
    c.now = Time(9_000_000);
    c.request(0, 3, scope(), acquire("b"));
    c.settle();
    let b = c.take_reply(3);
    assert!(matches!(b.result, Ok(Answer::Lock(LockResult::Locked { token: 2, .. }))), "{b:?}");
    // t = 10.5 s: c locks through n1.
    c.now = Time(10_500_000);
    c.request(1, 4, scope(), acquire("c"));
    c.settle();
    let r = c.take_reply(4);
    assert!(!matches!(r.result, Ok(Answer::Lock(LockResult::Locked { .. }))), "b holds token 2 until t = 19 s, yet c got {:?}", r.result);
}

/// Red team probe (passes): records that pass `validate::lock_record` with every field that
/// check does not cover at an extreme, then random operations (auto leases, renewals,
/// cancels, revokes, polls) and advances: `apply` never panics and the invariants hold.
#[test]
fn validated_records_with_extreme_fields_keep_their_invariants() {
    use crate::events::{Event, EventKind};
    use crate::history::{AutoLease, Day};
    use crate::record::{HighRequest, LogEntry, Outcome, Window};
    let mut rng = crate::rng::Rng::new(0x5eed);
    let limits = Limits { max_waiters: 4, max_readers: 3, log_capacity: 6, log_ttl_us: 1_000_000, aging_us: 1_000 };
    let ext = |rng: &mut crate::rng::Rng| -> u64 {
        match rng.between(0, 5) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - rng.between(0, 3),
            3 => rng.between(0, 2_000),
            4 => (1 << 62) - 1,
            _ => rng.next_u64(),
        }
    };
    let mut stored = 0;
    for _ in 0..200_000 {
        // An honest record first, then fields the validator does not look at set to extremes.
        let mut r = LockRecord::default();
        let ops_for = |rng: &mut crate::rng::Rng, k: u64| -> LockOp {
            let holder = format!("h{}", rng.between(0, 3));
            let lease = if rng.chance(0.3) {
                LeaseRule::Auto(AutoLease { min_us: ext(rng), max_us: ext(rng), window_days: rng.between(0, 255) as u8 })
            } else {
                LeaseRule::Fixed(ext(rng))
            };
            match rng.between(0, 6) {
                0 | 1 => LockOp::Acquire(Acquire {
                    request_id: RequestId(format!("q{}", rng.between(0, k + 3))),
                    holder,
                    lock_type: if rng.chance(0.5) { LockType::Read } else { LockType::Write },
                    lease,
                    lock_delay_us: ext(rng),
                    wait: rng.chance(0.7),
                    wait_lease_us: ext(rng),
                    priority: [Priority::High, Priority::Normal, Priority::Low][rng.between(0, 2) as usize],
                    reason: None,
                    node: "n".into(),
                    poll: rng.chance(0.2),
                }),
                2 => LockOp::Release {
                    request_id: RequestId(format!("u{}", rng.between(0, 5))),
                    grant: GrantRef { holder, which: [Which::Held, Which::Token(rng.between(0, 4)), Which::Grant { token: rng.between(0, 4), id: rng.between(0, 6) }][rng.between(0, 2) as usize] },
                },
                3 => LockOp::Renew { grant: GrantRef { holder, which: Which::Grant { token: rng.between(0, 4), id: rng.between(0, 6) } }, lease },
                4 => LockOp::Cancel { request_id: RequestId(format!("q{}", rng.between(0, k + 3))) },
                5 => LockOp::Revoke { token: None },
                _ => LockOp::Read,
            }
        };
        for k in 0..rng.between(0, 8) {
            let op = ops_for(&mut rng, k);
            let _ = r.apply(&op, rng.between(0, 100), &limits);
            let e = rng.between(0, 3_000);
            r.advance(e, &limits);
        }
        for g in &mut r.holders {
            g.lease_us = ext(&mut rng);
            g.pickup_us = ext(&mut rng);
            g.elapsed_floor_us = ext(&mut rng);
            g.held_floor_us = ext(&mut rng);
            g.lock_delay_us = ext(&mut rng);
            g.lease_seq = ext(&mut rng);
            g.reported = rng.chance(0.5);
            g.revoked = rng.chance(0.3);
        }
        for w in &mut r.queue {
            w.wait_lease_us = ext(&mut rng);
            w.elapsed_floor_us = ext(&mut rng);
            w.waited_floor_us = ext(&mut rng);
            w.arrival = ext(&mut rng);
            w.poll_seq = ext(&mut rng);
            if rng.chance(0.3) {
                w.lease = LeaseRule::Auto(AutoLease { min_us: ext(&mut rng), max_us: ext(&mut rng), window_days: rng.between(0, 255) as u8 });
            }
        }
        for e in &mut r.log {
            e.elapsed_floor_us = ext(&mut rng);
        }
        if rng.chance(0.5) {
            r.log.push(LogEntry { request: ext(&mut rng), outcome: Outcome::Refused, elapsed_floor_us: ext(&mut rng) });
        }
        r.log_forgot_floor_us = if rng.chance(0.5) { Some(ext(&mut rng)) } else { None };
        r.delay_remaining_us = if rng.chance(0.5) { ext(&mut rng) } else { 0 };
        for _ in 0..rng.between(0, 3) {
            r.high_log.push(HighRequest { holder: "x".into(), reason: None, age_floor_us: ext(&mut rng) });
            r.recent.push(Window { age_floor_us: ext(&mut rng), attempts: u32::MAX, conflicts: u32::MAX, holds: u32::MAX, hold_total_us: ext(&mut rng) });
            let buckets = (0..rng.between(0, 4)).map(|_| (rng.between(0, 255) as u8, u32::MAX)).collect();
            r.history.days.push(Day { age_floor_us: ext(&mut rng), buckets });
            r.events.events.push(Event { seq: ext(&mut rng), kind: EventKind::Granted, holder: "e".into(), token: ext(&mut rng), grant: ext(&mut rng), lock_type: LockType::Write, age_floor_us: ext(&mut rng) });
        }
        r.last_token = r.last_token.max(rng.between(0, 3) + r.last_token.min((1 << 62) - 10));
        r.next_lease_seq = if rng.chance(0.5) { (1 << 62) - 1 } else { r.next_lease_seq };
        r.next_arrival = if rng.chance(0.5) { (1 << 62) - 1 } else { r.next_arrival };
        r.log_seq = if rng.chance(0.5) { (1 << 62) - 1 } else { r.log_seq };
        r.events.last_seq = if rng.chance(0.5) { (1 << 62) - 1 } else { r.events.last_seq };
        if rng.chance(0.5) {
            r.last_token = (1 << 62) - 1;
        }
        if crate::validate::lock_record(&r, &limits).is_err() {
            continue;
        }
        stored += 1;
        // As a ballot: carry forward, apply a batch, check.
        let mut rec = r.clone();
        rec.advance(ext(&mut rng), &limits);
        for k in 0..rng.between(1, 6) {
            let op = ops_for(&mut rng, k);
            let _ = rec.apply(&op, ext(&mut rng), &limits);
        }
        if let Err(e) = rec.check_invariants() {
            panic!("invariant broken: {e}\nfrom {r:?}\nto {rec:?}");
        }
        let _ = rec.events.since(ext(&mut rng) % ((1 << 62) - 1));
        let _ = rec.contention();
    }
    assert!(stored > 10_000, "only {stored} records passed validation");
}

/// A non-member's refusal claiming a round just below the bound once pinned the proposer's
/// rounds there: its next ballots were at or past the bound, refused by every voter as
/// impossible, so the node could never decide anything again. Rounds in votes now count
/// only from voters.
#[test]
fn a_non_members_refusal_does_not_pin_a_proposers_rounds() {
    let mut c = Cluster::new(3);
    let roster = c.nodes[0].roster().unwrap().id();
    let rogue = nid("rogue", 999);
    let to = c.nodes[0].id().clone();
    let high = Ballot { round: crate::validate::COUNTER_BOUND - 1, proposer: 999 };
    let body = Body::Refuse { key: scope(), ballot: Ballot { round: 1, proposer: 100 }, why: crate::message::Refusal::Promised(high) };
    c.nodes[0].handle_message(c.now, Envelope { from: rogue, to, roster: Some(roster), body });
    c.collect();
    c.inbox.clear();
    c.request(0, 1, scope(), acquire("a"));
    c.settle();
    let reply = c.take_reply(1);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))), "{reply:?}");
}

// ---------------------------------------------------------------------------------------
// Authorization by the roster (PROTOCOL §1). The transport proves each sender's name and
// certificate key; voters take ballot requests, listings, pulls and Commits only from
// members of their installed roster. Each schedule below was harm done by a CA-signed
// certificate the roster does not list, before that rule.

/// A record that is valid in every way, granting the scope to `holder`.
fn held_by(holder: &str) -> LockRecord {
    let mut record = LockRecord::default();
    record.apply(&op_lock(acquire(holder)), 0, &Limits::default());
    assert!(crate::validate::value(&scope(), &Value::Lock(record.clone()), &Limits::default()).is_ok());
    record
}

/// Sends `body` from `from` to node `i`, tagged with its installed roster; returns what the
/// node would do about it.
fn forge(c: &mut Cluster, i: usize, from: &NodeId, body: Body) -> Outputs {
    let roster = c.nodes[i].roster().map(Roster::id);
    let to = c.nodes[i].id().clone();
    c.nodes[i].handle_message(c.now, Envelope { from: from.clone(), to, roster, body });
    c.nodes[i].drain()
}

#[test]
fn a_non_member_can_neither_grant_nor_read_nor_list_a_scope() {
    let mut c = Cluster::new(3);
    let rogue = nid("rogue", 999);
    let ballot = Ballot { round: 1 << 40, proposer: 999 };
    for i in 0..3 {
        let bodies = [
            Body::Prepare { key: scope(), ballot },
            Body::Accept { key: scope(), ballot, value: Value::Lock(held_by("mallory")) },
            Body::ListKeys { sweep: 1, after: None },
            Body::RosterPull { have: None },
        ];
        for body in bodies {
            let out = forge(&mut c, i, &rogue, body);
            assert!(out.is_empty(), "n{i} acted on a non-member's message: {out:?}");
        }
        assert_eq!(c.nodes[i].stats().unauthorized_from_peers, 4);
        assert!(c.nodes[i].take_rejected().iter().all(|(from, why)| *from == rogue && matches!(why, Refused::Unauthorized(_))));
        assert!(c.nodes[i].sweep_seen.is_none(), "a non-member's listing held back this voter's sweeps");
    }
    c.request(0, 1, scope(), acquire("a"));
    c.settle();
    let reply = c.take_reply(1);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))), "{reply:?}");
}

/// The review's split: a never-admitted certificate sent a voter a roster Commit, version
/// +1000, in which that voter and the rogue alone vote.
#[test]
fn a_forged_commit_from_a_non_member_is_not_installed() {
    let mut c = Cluster::new(3);
    let before = c.nodes[0].roster().cloned().unwrap();
    let rogue = nid("rogue", 999);
    let forged = Roster { version: before.version + 1000, voters: vec![c.nodes[0].id().clone(), rogue.clone()], ..before.clone() };
    assert!(crate::validate::roster(&forged).is_ok());
    let out = forge(&mut c, 0, &rogue, unproven(forged.clone(), before.id()));
    assert!(out.writes.is_empty(), "{out:?}");
    assert_eq!(c.nodes[0].roster(), Some(&before));
    assert_eq!(c.nodes[0].stats().unproven_rosters, 1);
    // Signed by the rogue and by the voter itself is no majority of the installed roster.
    let under = before.id();
    let ballot = Ballot { round: 77, proposer: 999 };
    let next = Roster { version: before.version + 1, ..forged };
    let signatures = vec![(rogue.clone(), proof::sign(&signer("rogue"), ballot, under, &next)), (c.nodes[0].id().clone(), proof::sign(&signer("n0"), ballot, under, &next))];
    let link = proof::Link { roster: next, proof: proof::Proof { ballot, under, signatures } };
    assert_eq!(link.verify(Some(&before), None), Err("too few voters' signatures"));
    let out = forge(&mut c, 0, &rogue, Body::Commit { links: vec![link] });
    assert!(out.writes.is_empty(), "{out:?}");
    assert_eq!(c.nodes[0].roster(), Some(&before));
    assert_eq!(c.nodes[0].stats().unproven_rosters, 2);
    assert!(c.nodes[0].take_rejected().iter().all(|(from, why)| *from == rogue && matches!(why, Refused::Unproven(_))));
}

/// The gap the proofs close: a voter removed while another node missed the removal is still a
/// member there, and its Commit was installed — any roster, in which that node and the removed
/// voter alone vote. Now the Commit needs a majority of the installed roster's signatures.
#[test]
fn a_removed_voters_commit_is_not_installed_where_its_removal_is_not_known_yet() {
    let mut c = Cluster::new(3);
    let (n0, n1, n2) = (c.nodes[0].id().clone(), c.nodes[1].id().clone(), c.nodes[2].id().clone());
    let (first, _) = remove_n2_while_n1_misses_it(&mut c);
    // n2 signs, as the voter it was, a roster in which n1 and it alone vote.
    let ballot = Ballot { round: 1 << 30, proposer: n2.incarnation };
    let forged = Roster { version: 2, voters: vec![n1.clone(), n2.clone()], sweep_done: true, ..first.clone() };
    let signatures = vec![(n2.clone(), proof::sign(&signer("n2"), ballot, first.id(), &forged))];
    let link = proof::Link { roster: forged, proof: proof::Proof { ballot, under: first.id(), signatures } };
    let out = forge(&mut c, 1, &n2, Body::Commit { links: vec![link] });
    assert!(out.writes.is_empty(), "{out:?}");
    assert_eq!(c.nodes[1].roster(), Some(&first), "n1 installed the removed voter's roster");
    assert_eq!(c.nodes[1].stats().unproven_rosters, 1);
    // The real removal still reaches n1, proven by n0 and n1's own signatures.
    let links = c.nodes[0].chain().to_vec();
    let tag = c.nodes[0].roster().map(Roster::id);
    c.nodes[1].handle_message(c.now, Envelope { from: n0, to: n1, roster: tag, body: Body::Commit { links } });
    assert_eq!(c.nodes[1].roster(), c.nodes[0].roster());
}

/// A member that missed more changes than a Commit carries catches up page by page from the
/// sender's chain, each link proven from the one before.
#[test]
fn a_member_far_behind_catches_up_through_the_chain() {
    let mut c = Cluster::new(3);
    let n2 = c.nodes[2].id().clone();
    let first = c.nodes[0].roster().cloned().unwrap();
    // Twenty members come and go while n2 hears nothing of it (each a change of its own).
    for i in 0..(proof_page() as u64 + 4) {
        let m = nid(format!("m{i}"), 500 + i);
        for change in [RosterChange::AddMember(m.clone()), RosterChange::Remove(m)] {
            c.request(0, 10 + i, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: None }));
            c.deliver_dropping(|e| (e.to == n2 && matches!(e.body, Body::Commit { .. })) || e.to.name.starts_with('m'));
        }
    }
    c.collect();
    c.inbox.clear();
    let latest = c.nodes[0].roster().cloned().unwrap();
    assert!(latest.version > proof_page() as u64 + 1, "{}", latest.version);
    assert_eq!(c.nodes[2].roster(), Some(&first));
    // The latest link alone cannot be proven from n2's roster: it pulls the chain.
    let last = c.nodes[0].chain().last().cloned().unwrap();
    let from = c.nodes[0].id().clone();
    c.nodes[2].handle_message(c.now, Envelope { from, to: n2, roster: Some(latest.id()), body: Body::Commit { links: vec![last] } });
    c.settle();
    assert_eq!(c.nodes[2].roster(), Some(&latest));
    assert_eq!(c.nodes[2].stats().unproven_rosters, 0);
    assert_eq!(c.nodes[2].chain().len(), c.nodes[0].chain().len());
}

fn proof_page() -> usize {
    crate::node::CHAIN_PAGE
}

/// A node given its cluster's id installs a first roster only if it hashes to that id,
/// whoever sends it; a chain from another first roster is refused.
#[test]
fn a_node_given_the_cluster_id_installs_only_that_clusters_chain() {
    let c = Cluster::new(3);
    let other = Cluster::new(2);
    let id = c.nodes[0].roster().unwrap().cluster_id;
    let mut joiner = new_node(Config::default(), nid("j", 900), Durable::default());
    joiner.set_seeds([("nobody".to_string(), [0; 32])]);
    joiner.set_cluster_id(id);
    let to = joiner.id().clone();
    let theirs = other.nodes[0].chain().to_vec();
    joiner.handle_message(c.now, Envelope { from: other.nodes[0].id().clone(), to: to.clone(), roster: other.nodes[0].roster().map(Roster::id), body: Body::Commit { links: theirs } });
    assert_eq!(joiner.roster(), None, "another cluster's chain was installed");
    assert_eq!(joiner.stats().unproven_rosters, 1);
    let ours = c.nodes[1].chain().to_vec();
    joiner.handle_message(c.now, Envelope { from: c.nodes[1].id().clone(), to, roster: c.nodes[1].roster().map(Roster::id), body: Body::Commit { links: ours } });
    assert_eq!(joiner.roster(), c.nodes[1].roster());
}

/// A member's name with another certificate key (a retired device's old certificate, or a
/// second cluster's node of the same name) is not that member.
#[test]
fn a_members_name_with_another_certificate_key_is_not_the_member() {
    let mut c = Cluster::new(3);
    let impostor = NodeId { key: [0xee; 32], ..c.nodes[1].id().clone() };
    let ballot = Ballot { round: 1 << 40, proposer: impostor.incarnation };
    let out = forge(&mut c, 0, &impostor, Body::Accept { key: scope(), ballot, value: Value::Lock(held_by("mallory")) });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(c.nodes[0].stats().unauthorized_from_peers, 1);
}

#[test]
fn a_removed_voter_is_refused_and_its_own_requests_say_it_is_not_a_member() {
    let mut c = Cluster::new(3);
    let (n0, n2) = (c.nodes[0].id().clone(), c.nodes[2].id().clone());
    let change = RosterChange::Remove(n2.clone());
    c.request(0, 1, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: Some(1) }));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Roster(RosterResult::Changed(_)))));
    let roster = c.nodes[0].roster().cloned().unwrap();
    assert_eq!(c.nodes[2].roster().map(|r| (r.version, &r.voters)), Some((roster.version, &roster.voters)), "the removed voter is told");
    c.request(2, 2, scope(), acquire("a"));
    c.settle();
    assert!(matches!(c.take_reply(2).result, Err(Failure::NotMember)));
    // It forges what it can: an Accept under the roster in force, and a roster of its own.
    let ballot = Ballot { round: 1 << 40, proposer: n2.incarnation };
    let forged = Roster { version: roster.version + 1, voters: vec![n0, n2.clone()], sweep_done: true, ..roster.clone() };
    for i in 0..2 {
        let out = forge(&mut c, i, &n2, Body::Accept { key: scope(), ballot, value: Value::Lock(held_by("mallory")) });
        assert!(out.is_empty(), "{out:?}");
        let out = forge(&mut c, i, &n2, unproven(forged.clone(), roster.id()));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.nodes[i].roster(), Some(&roster));
    }
    c.request(0, 3, scope(), acquire("b"));
    c.settle();
    let reply = c.take_reply(3);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))), "{reply:?}");
}

/// A member that does not vote runs ballots as a proposer, and is not counted as a voter.
#[test]
fn a_member_that_does_not_vote_proposes_and_is_not_counted() {
    let mut c = Cluster::new(3);
    c.nodes.push(new_node(Config::default(), nid("m", 104), Durable::default()));
    c.disks.push(Durable::default());
    let m = c.nodes[3].id().clone();
    let change = RosterChange::AddMember(m.clone());
    c.request(0, 2, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: Some(1) }));
    c.settle();
    assert!(matches!(c.take_reply(2).result, Ok(Answer::Roster(RosterResult::Changed(_)))));
    let roster = c.nodes[3].roster().cloned().expect("the new member is told");
    assert!(roster.is_member(&m) && !roster.contains(&m) && roster.sweep_done);
    c.request(3, 3, scope(), acquire("a"));
    c.settle();
    let reply = c.take_reply(3);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))), "{reply:?}");
    assert!(reply.voters == 3 && !reply.agreed.contains(&m));
}

/// Simulator, stalls profile (seed 385 after the roster gained members): an unlock's read,
/// queued behind a long pause, shared a batch with another copy of the same bare release that
/// arrived later. Placed before it, the read said "not the holder, not older" while the value
/// the batch chose logs the request released. Reads now see the batch's outcome.
#[test]
fn a_read_sees_what_later_ops_of_its_batch_did() {
    use crate::node::{apply_lock_ops, Client, PendingOp};
    let config = Config::default();
    let now = Time(10_000_000);
    let pending = |op: Op| PendingOp { client: Client::External(1), op, deadline: Time(u64::MAX), arrived: now, accept_sent: false };
    let release = Op::Lock(LockOp::Release { request_id: RequestId("rel".into()), grant: GrantRef { holder: "h0".into(), which: Which::Held } });
    let ops = [pending(Op::Lock(LockOp::Read)), pending(release)];
    let (record, answers, _) = apply_lock_ops(held_by("h0"), 5_000_000, &ops, now, &config);
    assert!(record.holders.is_empty(), "{record:?}");
    match &answers[0] {
        Answer::Lock(LockResult::Record(read)) => assert_eq!(**read, record, "the read placed first saw a state no value shows"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Red team: authorization by the roster.

/// A voter removed from the roster is no longer a member, yet a ballot its old roster tags
/// still counts its votes after the proposer installed the removal. Schedule: Y's grant sits
/// on B and R (A missed its Accept). A starts X's ballot under v1 (promising itself, empty);
/// its Prepares to B and R are lost. A removes R with R's own votes (v2 = {A, B}); B accepts
/// v2 but hears nothing of its choice. R, removed and told so, forges "promised, nothing accepted" for A's v1
/// ballot: A decides "free", its Accept is taken by B (still at v1) and "accepted" by R.
/// X is told Locked while Y holds the scope: two writers.
#[test]
fn a_removed_voters_votes_do_not_decide_a_ballot_of_its_old_roster() {
    let config = Config { sweep_check_us: 1_000_000_000, ..Config::default() };
    let mut net = Net::new(&["A", "B", "R"], vec![Durable::default(); 3], config);
    net.bootstrap(&["A", "B", "R"]);
    let v1 = net.nodes[0].roster().unwrap().id();
    // Y takes the scope through B; the Accept to A is lost: Y's grant sits on B and R.
    net.request("B", 1, scope(), acquire_for("Y", 60_000_000, false));
    net.pump(&|e: &Envelope| e.from.name == "B" && e.to.name == "A" && matches!(e.body, Body::Accept { .. }));
    assert!(is_locked(net.result(1)), "{:?}", net.result(1));
    // A's rounds move past B's (a ballot on another scope).
    net.request("A", 2, Key::Scope("other".into()), acquire_for("Z", 60_000_000, false));
    net.pump(&keep_all);
    // X asks A: A promises itself at once; its Prepares to B and R are lost.
    net.request("A", 3, scope(), acquire_for("X", 60_000_000, false));
    let p1 = net.queue.iter().find_map(|e| match &e.body {
        Body::Prepare { key, ballot } if *key == scope() => Some(*ballot),
        _ => None,
    });
    let p1 = p1.expect("A's Prepare");
    net.queue.retain(|e| !matches!(&e.body, Body::Prepare { key, .. } if *key == scope()));
    // A removes R (R votes for it, and B accepts it too: a removal needs a majority of the
    // voters it keeps); everything else to and from B is lost meanwhile.
    let (a, r) = (net.id("A"), net.id("R"));
    let change = RosterChange::Remove(r.clone());
    net.request("A", 4, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: Some(1) }));
    // (B waits for its vouches for R to run out before it accepts: its refusal saying so, and
    // vouches, are let through too.)
    net.pump(&|e: &Envelope| {
        let roster_vote = matches!(&e.body, Body::Accept { key: Key::Roster, .. } | Body::Accepted { key: Key::Roster, .. } | Body::Refuse { key: Key::Roster, .. });
        let vouches = matches!(&e.body, Body::VouchAsk { .. } | Body::Vouch { .. });
        (e.to.name == "B" || e.from.name == "B") && !roster_vote && !vouches
    });
    assert!(matches!(net.result(4), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(4));
    let v2 = net.nodes[net.idx("A")].roster().cloned().unwrap();
    assert!(v2.version == 2 && !v2.is_member(&r));
    assert_eq!(net.nodes[net.idx("R")].roster().map(|x| x.version), Some(2), "R knows it was removed");
    assert_eq!(net.nodes[net.idx("B")].roster().map(|x| x.version), Some(1));
    // R, no longer a member, forges its vote for A's v1 ballot: "nothing accepted here".
    net.queue.push_back(Envelope { from: r.clone(), to: a.clone(), roster: Some(v1), body: Body::Promise { key: scope(), ballot: p1, accepted: None, age_us: 0 } });
    net.pump(&|e: &Envelope| e.to.name == "R");
    // ... and that it accepted A's value (B, still at v1, took it for real).
    net.queue.push_back(Envelope { from: r, to: a, roster: Some(v1), body: Body::Accepted { key: scope(), ballot: p1, signed: None } });
    net.pump(&|e: &Envelope| e.to.name == "R");
    assert!(!is_locked(net.result(3)), "Y holds the scope, and X was told Locked on a removed voter's votes: {:?}", net.result(3));
}

/// The documented gap (a node with no roster installs a Commit from anyone) does not stay
/// with the joining node: once the cluster admits it, it is a member, and the roster planted
/// in it reaches every voter through the roster sync. Schedule: a never-admitted rogue sends
/// a fresh node N a roster of the cluster's id at version 1000 in which the rogue votes (and
/// which lists the real voters, so that N talks to them). The cluster adds N as a voter, as
/// the runtime's automatic admission does (its Commit of v2 is older than what N has:
/// ignored). The sweep of v2 asks N for a page: N's roster sync sends its v1000 to the
/// sweeper, a member now, which installs it; B and C get it the same way. All three end at
/// v1000 with the rogue voting. No client request is needed. Now a node with no roster takes
/// one only from the nodes it joins through (`set_seeds`; the runtime names those reached
/// at its `--join` addresses).
#[test]
fn a_roster_planted_in_a_node_before_its_admission_does_not_spread_to_the_cluster() {
    let config = Config { sweep_check_us: 200_000, ..Config::default() };
    let mut net = Net::new(&["A", "B", "C", "N"], vec![Durable::default(); 4], config);
    let ids: Vec<NodeId> = ["A", "B", "C"].iter().map(|n| net.id(n)).collect();
    for v in ["A", "B", "C"] {
        let i = net.idx(v);
        net.nodes[i].bootstrap(Time(0), ids.clone(), 5).unwrap();
        net.collect(i);
    }
    net.pump(&keep_all);
    let real = net.nodes[0].roster().cloned().unwrap();
    assert!(net.nodes[net.idx("N")].roster().is_none());
    // The rogue: a CA-signed certificate no roster lists.
    let rogue = nid("rogue", 666);
    let mut voters = ids.clone();
    voters.push(rogue.clone());
    voters.push(net.id("N"));
    voters.sort();
    let fake = Roster { version: 1000, voters, ..real.clone() };
    assert!(crate::validate::roster(&fake).is_ok());
    let n = net.id("N");
    let n_at = net.idx("N");
    let a_id = net.id("A");
    net.nodes[n_at].set_seeds([(a_id.name.clone(), a_id.key)]);
    net.queue.push_back(Envelope { from: rogue.clone(), to: n.clone(), roster: Some(fake.id()), body: unproven(fake.clone(), real.id()) });
    let to_rogue = |e: &Envelope| e.to.name == "rogue";
    net.pump(&to_rogue);
    assert_eq!(net.nodes[n_at].roster(), None, "a stranger's roster was installed");
    assert_eq!(net.nodes[n_at].stats().unauthorized_from_peers, 1);
    // The cluster admits N.
    let change = RosterChange::Add(n.clone());
    net.request("A", 1, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: Some(1) }));
    net.run(2_000_000, &to_rogue);
    assert!(matches!(net.result(1), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(1));
    assert!(net.nodes[n_at].roster().is_some_and(|r| r.contains(&n)), "N learnt the real roster from A");
    for v in ["A", "B", "C", "N"] {
        let r = net.nodes[net.idx(v)].roster().unwrap();
        assert!(!r.contains(&rogue), "{v} installed a roster in which a never-admitted node votes: version {}, voters {:?}", r.version, r.voters.iter().map(|v| &v.name).collect::<Vec<_>>());
    }
}

/// Held: nothing a non-member sends outside the authorized kinds — votes, refusals asking for
/// a roster sync, sweep pages, bootstrap offers and acks — changes state, is counted, or gets
/// an answer; nor does a vote of a member that does not vote.
#[test]
fn answers_and_bootstrap_messages_from_non_members_change_nothing() {
    let mut c = Cluster::new(3);
    c.nodes.push(new_node(Config::default(), nid("m", 104), Durable::default()));
    c.disks.push(Durable::default());
    let m = c.nodes[3].id().clone();
    let change = RosterChange::AddMember(m.clone());
    c.request(0, 1, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: Some(1) }));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Roster(RosterResult::Changed(_)))));
    let roster = c.nodes[0].roster().cloned().unwrap();
    // n0's ballot is in flight: its Prepares wait in the inbox.
    c.request(0, 2, scope(), acquire("a"));
    c.collect();
    let ballot = c.inbox.iter().find_map(|e| match &e.body {
        Body::Prepare { ballot, .. } => Some(*ballot),
        _ => None,
    });
    let ballot = ballot.unwrap();
    let rogue = nid("rogue", 999);
    let high = Ballot { round: ballot.round - 1, proposer: 7 };
    let mallory = Some(crate::message::AcceptedValue { ballot: high, value: Value::Lock(held_by("mallory")), roster: Some(roster.id()) });
    let newer = RosterId { version: roster.version + 5, digest: 1 };
    let to = c.nodes[0].id().clone();
    for from in [&rogue, &m] {
        let bodies = [
            (Some(roster.id()), Body::Promise { key: scope(), ballot, accepted: mallory.clone(), age_us: 1 << 40 }),
            (Some(roster.id()), Body::Accepted { key: scope(), ballot, signed: None }),
            (Some(newer), Body::Refuse { key: scope(), ballot, why: crate::message::Refusal::RosterMismatch }),
            (None, Body::Refuse { key: scope(), ballot, why: crate::message::Refusal::RosterMismatch }),
            (Some(roster.id()), Body::KeyList { sweep: 1, after: None, keys: vec!["x".into()], more: false, max_round: 1 << 50 }),
            (None, Body::BootstrapOffer { roster: Roster::first(vec![to.clone(), from.clone()], 5) }),
            (None, Body::BootstrapAck { roster: roster.id(), signed: proof::Signed { public_key: vec![1; 32], signature: vec![2; 64] } }),
        ];
        for (tag, body) in bodies {
            let rogue_sent = *from == rogue;
            c.nodes[0].handle_message(c.now, Envelope { from: from.clone(), to: to.clone(), roster: tag, body: body.clone() });
            let out = c.nodes[0].drain();
            let to_sender = out.messages.iter().chain(&out.early).filter(|e| e.to == *from).count();
            assert!(out.writes.is_empty() && out.replies.is_empty() && (to_sender == 0 || !rogue_sent), "{body:?}: {out:?}");
        }
    }
    assert_eq!(c.nodes[0].roster(), Some(&roster));
    c.settle();
    let reply = c.take_reply(2);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))), "{reply:?}");
    assert!(!reply.agreed.contains(&m) && !reply.agreed.contains(&rogue));
}

/// Held: a proposer removed while its Accept is out answers `Timeout` (the Accept may have
/// taken effect), and `NotMember` only where nothing carrying the op went out.
#[test]
fn a_proposer_removed_after_its_accept_went_out_answers_timeout() {
    let mut net = three();
    // C's Accepts to A and B are lost (C took its own).
    net.request("C", 1, scope(), acquire_for("X", 10_000_000, false));
    net.pump(&|e: &Envelope| e.from.name == "C" && e.to.name != "C" && matches!(e.body, Body::Accept { .. }));
    // C's second request waits behind the first: no ballot of its own yet.
    net.request("C", 2, Key::Scope("other".into()), acquire_for("Y", 10_000_000, false));
    net.queue.retain(|e| !(e.from.name == "C" && e.to.name != "C"));
    let change = RosterChange::Remove(net.id("C"));
    net.request("A", 3, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: Some(1) }));
    net.pump(&keep_all);
    assert!(matches!(net.result(3), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(3));
    assert!(!net.nodes[net.idx("C")].roster().unwrap().is_member(&net.id("C")));
    net.run(30_000_000, &keep_all);
    assert_eq!(net.result(1), Some(&Err(Failure::Timeout)));
    assert!(matches!(net.result(2), Some(Err(Failure::NotMember | Failure::NoQuorum))), "{:?}", net.result(2));
}

/// Held: a change of the members that do not vote waits for the sweep of a voter change like
/// any other, and a member change keeps the sweep's round floor.
#[test]
fn a_member_change_does_not_slip_between_a_voter_change_and_its_sweep() {
    let names = ["A", "B", "C", "D", "M"];
    let config = Config { sweep_check_us: 200_000, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 5], config);
    net.bootstrap(&["A", "B", "C"]);
    net.request("A", 1, scope(), acquire_for("X", 60_000_000, false));
    net.pump(&keep_all);
    let no_sweep = |e: &Envelope| matches!(e.body, Body::ListKeys { .. } | Body::KeyList { .. });
    net.request("A", 2, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(net.id("D")), expected_version: Some(1) }));
    net.pump(&no_sweep);
    assert!(matches!(net.result(2), Some(Ok(Answer::Roster(RosterResult::Changed(_))))));
    for via in ["A", "B", "D"] {
        let client = 10 + via.len() as u64 + via.as_bytes()[0] as u64;
        net.request(via, client, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::AddMember(net.id("M")), expected_version: None }));
        net.pump(&no_sweep);
        assert!(matches!(net.result(client), Some(Ok(Answer::Roster(RosterResult::Refused(RosterRefusal::Sweeping))))), "{via}: {:?}", net.result(client));
    }
    net.run(5_000_000, &keep_all);
    let swept = net.nodes[0].roster().cloned().unwrap();
    assert!(swept.sweep_done && swept.version == 2);
    net.request("B", 30, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::AddMember(net.id("M")), expected_version: Some(2) }));
    net.run(1_000_000, &keep_all);
    let Some(Ok(Answer::Roster(RosterResult::Changed(with)))) = net.result(30).cloned() else { panic!("{:?}", net.result(30)) };
    assert!(with.sweep_done && with.round_floor == swept.round_floor && with.voters == swept.voters);
}

/// Not from this change, but open under the threat model and not the documented Commit gap:
/// a node acknowledges one first roster ever, durably, from anyone. A never-admitted
/// certificate that reaches a node before its cluster forms offers it a first roster of its
/// own; the real bootstrap can then never complete (the node refuses every other first roster,
/// across restarts). Signed rosters would not close this: the ack is the node's own.
#[test]
fn a_non_members_bootstrap_offer_does_not_keep_a_cluster_from_forming() {
    let names = ["A", "B", "C"];
    let mut net = Net::new(&names, vec![Durable::default(); 3], Config::default());
    let rogue = nid("rogue", 666);
    let a = net.id("A");
    net.queue.push_back(Envelope { from: rogue.clone(), to: a.clone(), roster: None, body: Body::BootstrapOffer { roster: Roster::first(vec![a, rogue], 5) } });
    let to_rogue = |e: &Envelope| e.to.name == "rogue";
    net.pump(&to_rogue);
    let ids: Vec<NodeId> = names.iter().map(|n| net.id(n)).collect();
    for v in names {
        let i = net.idx(v);
        net.nodes[i].bootstrap(Time(net.now), ids.clone(), 5).unwrap();
        net.collect(i);
    }
    net.run(10_000_000, &to_rogue);
    for v in names {
        assert!(net.nodes[net.idx(v)].roster().is_some(), "{v} never got a roster: A acknowledged a stranger's first roster");
    }
}

/// A node with no roster refuses a stranger's Prepare, but takes its round first: on_prepare
/// (and on_accept) raise `max_round_seen` before `voter_check`, and `authorize` lets every
/// ballot request through while no roster is installed. One Prepare at the last valid round
/// sent to a node before it joins makes its every later ballot a round no voter takes
/// (`validate::ballot`), persisted with its round reservation: once admitted, the node can
/// never decide anything. (The Commit gap is documented; this is a Prepare.)
#[test]
fn a_strangers_prepare_before_admission_does_not_wedge_the_joining_nodes_rounds() {
    let mut c = Cluster::new(3);
    c.nodes.push(new_node(Config::default(), nid("m", 104), Durable::default()));
    c.disks.push(Durable::default());
    let rogue = nid("rogue", 999);
    let high = Ballot { round: crate::validate::COUNTER_BOUND - 1, proposer: 999 };
    let out = forge(&mut c, 3, &rogue, Body::Prepare { key: scope(), ballot: high });
    assert!(out.messages.iter().all(|e| e.to == rogue), "{out:?}");
    let m = c.nodes[3].id().clone();
    let change = RosterChange::AddMember(m);
    c.request(0, 1, Key::Roster, Op::Roster(RosterOp::Change { change, expected_version: Some(1) }));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Roster(RosterResult::Changed(_)))));
    assert!(c.nodes[3].roster().is_some());
    for t in 0..40u64 {
        if t % 10 == 0 {
            c.request(3, 10 + t, scope(), acquire(&format!("a{t}")));
        }
        c.settle();
        c.now = c.now.plus_micros(250_000);
        for n in &mut c.nodes {
            n.handle_timeout(c.now);
        }
    }
    c.settle();
    let results: Vec<_> = c.replies.iter().filter(|r| r.client >= 10).map(|r| &r.result).collect();
    assert!(results.iter().any(|r| matches!(r, Ok(Answer::Lock(_)))), "the admitted member never decides anything: {results:?}");
}

// ---------------------------------------------------------------------------------------
// Red team: bans.

/// What every node's mesh does once a roster with these bans is installed: a connection of a
/// banned key is closed at the handshake, a frame speaking for a banned name closes its
/// connection; nothing of theirs arrives, nothing reaches them.
fn mesh_refuses(bans: &[crate::roster::Ban], e: &Envelope) -> bool {
    bans.iter().any(|b| [&e.from, &e.to].iter().any(|n| b.name.as_ref() == Some(&n.name) || n.key == b.key))
}

fn roster_change(change: RosterChange) -> Op {
    Op::Roster(RosterOp::Change { change, expected_version: None })
}

/// The brief's case: a node that is pending under the name of a voter with another identity
/// (a second device certified for the name, or the voter's new certificate) is banned. The
/// voter is not the ban's target, so it stays a voter, but its name is banned: every mesh
/// refuses it. Two such bans in a three-voter cluster leave one reachable voter of three,
/// for good (removing the others needs the quorum that is lost; `admit` never replaces a
/// banned name).
#[test]
fn a_ban_of_a_voters_namesake_does_not_cut_the_voter_off() {
    let config = Config { sweep_check_us: 200_000, ..Config::default() };
    let mut net = Net::new(&["A", "B", "C"], vec![Durable::default(); 3], config);
    net.bootstrap(&["A", "B", "C"]);
    let mut bans = Vec::new();
    for (client, name) in [(1, "B"), (2, "C")] {
        let namesake = NodeId { incarnation: 99, key: [0xee; 32], ..net.id(name) };
        net.request("A", client, Key::Roster, roster_change(RosterChange::Ban(namesake)));
        let now_banned = bans.clone();
        net.run(2_000_000, &|e: &Envelope| mesh_refuses(&now_banned, e));
        bans = net.nodes[net.idx("A")].roster().unwrap().banned.clone();
    }
    net.request("A", 3, scope(), acquire_for("X", 10_000_000, false));
    net.run(30_000_000, &|e: &Envelope| mesh_refuses(&bans, e));
    let roster = net.nodes[net.idx("A")].roster().cloned().unwrap();
    assert!(
        is_locked(net.result(3)),
        "no quorum: voters {:?}, banned {:?}: {:?}",
        roster.voters.iter().map(|v| &v.name).collect::<Vec<_>>(),
        roster.banned.iter().map(|b| &b.name).collect::<Vec<_>>(),
        net.result(3)
    );
}

/// Reachable through the API: one certificate speaks for every name it is valid for, and
/// every node certificate is valid for the shared dial name `lockmesh-node` (and its DNS and
/// IP names); the mesh checks only that. A never-admitted node R greets as `R` and as
/// `lockmesh-node`; automatic admission adds both (a node of each name). The admin removes
/// `R` (a Ban of R's name and key): the roster keeps `lockmesh-node`, R's own key, as a voter —
/// the banned node is still in the roster (the admin cannot even name it: the API refuses
/// `lockmesh-node` as a node name), counted in every quorum while every mesh refuses its key.
/// One crash of an honest voter then stops the cluster for good, where three voters should
/// survive it.
#[test]
fn a_banned_nodes_second_name_does_not_keep_it_in_the_roster() {
    let config = Config { sweep_check_us: 200_000, ..Config::default() };
    let mut net = Net::new(&["A", "B", "C", "R"], vec![Durable::default(); 4], config);
    net.bootstrap(&["A", "B", "C"]);
    let r = net.id("R");
    let alias = NodeId::new("lockmesh-node", 77, r.key);
    let no_alias = |e: &Envelope| e.to.name == "lockmesh-node";
    net.request("A", 1, Key::Roster, roster_change(RosterChange::Add(r.clone())));
    net.run(3_000_000, &no_alias);
    assert!(matches!(net.result(1), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(1));
    net.request("A", 2, Key::Roster, roster_change(RosterChange::Add(alias.clone())));
    net.run(3_000_000, &no_alias);
    // The admin's removal of R.
    net.request("A", 3, Key::Roster, roster_change(RosterChange::Ban(r.clone())));
    net.run(3_000_000, &no_alias);
    assert!(matches!(net.result(3), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(3));
    let roster = net.nodes[net.idx("A")].roster().cloned().unwrap();
    let kept: Vec<&NodeId> = roster.voters.iter().chain(&roster.members).filter(|m| m.key == r.key).collect();
    // C crashes; the meshes refuse R's key.
    let bans = roster.banned.clone();
    let cut = |e: &Envelope| no_alias(e) || mesh_refuses(&bans, e) || e.from.name == "C" || e.to.name == "C";
    net.request("A", 4, scope(), acquire_for("X", 10_000_000, false));
    net.run(30_000_000, &cut);
    assert!(kept.is_empty() && is_locked(net.result(4)), "the banned key stays a voter as {:?}; with C down: {:?}", kept.iter().map(|k| &k.name).collect::<Vec<_>>(), net.result(4));
}

/// `lockmesh dev`: every node joins through the first one, which joins through itself. It
/// proposes the first roster before the others do, so its offers go unanswered; the others
/// then form the cluster with its acknowledgement and send it the roster. It is not their seed
/// (it has none but itself), yet it takes that roster: it acknowledged and signed it itself.
#[test]
fn a_node_whose_offers_came_too_early_takes_the_first_roster_it_acknowledged() {
    let mut net = Net::new(&["A", "B", "C"], vec![Durable::default(); 3], Config::default());
    let a_id = net.id("A");
    for n in &mut net.nodes {
        n.set_seeds([(a_id.name.clone(), a_id.key)]);
    }
    let ids: Vec<NodeId> = ["A", "B", "C"].iter().map(|n| net.id(n)).collect();
    let a = net.idx("A");
    net.nodes[a].bootstrap(Time(net.now), ids.clone(), 5).unwrap();
    net.collect(a);
    net.pump(&keep_all);
    for v in ["B", "C"] {
        let i = net.idx(v);
        net.nodes[i].bootstrap(Time(net.now), ids.clone(), 5).unwrap();
        net.collect(i);
    }
    // A's resent offers reach B and C only after they installed the roster.
    let offers_from_a = |e: &Envelope| e.from.name == "A" && matches!(e.body, Body::BootstrapOffer { .. });
    net.run(3_000_000, &offers_from_a);
    for v in ["A", "B", "C"] {
        assert!(net.nodes[net.idx(v)].roster().is_some_and(|r| r.version == 1), "{v} has no roster");
    }
    // A stranger's first roster, though, A still takes from nobody but its seeds.
    let stranger = nid("x", 77);
    let first = Roster::first(vec![stranger.clone()], 5);
    let signed = proof::sign(&signer("x"), Ballot::BOOTSTRAP, first.id(), &first);
    let link = proof::Link { proof: proof::Proof { ballot: Ballot::BOOTSTRAP, under: first.id(), signatures: vec![(stranger.clone(), signed)] }, roster: first };
    let mut fresh = new_node(Config::default(), nid("F", 9), Durable::default());
    fresh.set_seeds([(a_id.name.clone(), a_id.key)]);
    let to = fresh.id().clone();
    fresh.handle_message(Time(0), Envelope { from: stranger, to, roster: None, body: Body::Commit { links: vec![link] } });
    assert_eq!(fresh.roster(), None);
    assert_eq!(fresh.stats().unauthorized_from_peers, 1);
}

// ---------------------------------------------------------------------------------------
// Red team: rosters with proof. A node that missed a voter's removal still took the removed
// voter's ballot requests; proofs alone did not stop it from using them. Now a removal is
// chosen only once a majority of the voters it keeps accepted it, a voter never votes for its
// own removal from an odd number of voters, a voter refuses a node that a roster it accepted
// removes, takes only roster values one change on from its own, and a read of the roster
// register ignores values that cannot be its latest (docs/PROTOCOL.md §7, *Removals*).

/// Removes `n2` through `n0` while every Commit to `n1` is lost: `n0` (and `n2`, told of its
/// removal) are at v2, `n1` still at v1 and lists `n2` as a member. Returns (v1, v2).
fn remove_n2_while_n1_misses_it(c: &mut Cluster) -> (Roster, Roster) {
    let (n1, n2) = (c.nodes[1].id().clone(), c.nodes[2].id().clone());
    let first = c.nodes[0].roster().cloned().unwrap();
    c.request(0, 1, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Remove(n2), expected_version: Some(1) }));
    c.deliver_dropping(|e| e.to == n1 && matches!(e.body, Body::Commit { .. }));
    let second = c.nodes[0].roster().cloned().unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(c.nodes[1].roster(), Some(&first), "n1 missed the removal");
    (first, second)
}

/// The removed voter cannot sign a majority alone, but the lagging voter signed for it: `n1`
/// still listed `n2` as a member, so it took `n2`'s Accept of a roster value tagged v1, and
/// answered `Accepted` with its own signature over that value. `n2`'s and `n1`'s signatures
/// were a majority of v1: `n2` committed a roster of its choosing (`n0` removed, `n1` and `n2`
/// voting) and `n1` installed it — forked from the cluster for good. Now `n1` accepted the
/// removal before it was chosen (a majority of the voters it keeps must), and refuses `n2`.
#[test]
fn a_removed_voter_cannot_collect_a_lagging_voters_signature_for_a_roster_of_its_own() {
    let mut c = Cluster::new(3);
    let (n0, n1, n2) = (c.nodes[0].id().clone(), c.nodes[1].id().clone(), c.nodes[2].id().clone());
    let (first, _second) = remove_n2_while_n1_misses_it(&mut c);
    let forged = first.changed(&RosterChange::Remove(n0.clone())).unwrap();
    let ballot = Ballot { round: 1 << 40, proposer: n2.incarnation };
    let out = forge(&mut c, 1, &n2, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(forged.clone()) });
    let theirs = out.messages.iter().find_map(|e| match &e.body {
        Body::Accepted { signed: Some(s), .. } if e.to == n2 => Some(s.clone()),
        _ => None,
    });
    if let Some(theirs) = theirs {
        let mine = proof::sign(&signer("n2"), ballot, first.id(), &forged);
        let link = proof::Link { roster: forged.clone(), proof: proof::Proof { ballot, under: first.id(), signatures: vec![(n1.clone(), theirs), (n2.clone(), mine)] } };
        forge(&mut c, 1, &n2, Body::Commit { links: vec![link] });
    }
    let installed = c.nodes[1].roster().cloned().unwrap();
    assert!(
        installed == first || Some(&installed) == c.nodes[0].roster(),
        "n1 installed a roster no majority chose, proven by its own signature and the removed voter's: version {}, voters {:?}",
        installed.version,
        installed.voters.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
}

/// The same opening without rosters: `n1`, lagging at v1, took the removed voter's Accept of
/// a scope value at a high ballot (tagged v1, from a member of v1 as far as `n1` knew) — an
/// empty record. Once `n1` installed v2 = {n0, n1}, every majority of v2 included it and its
/// forged value sat at the highest ballot: a second writer got token 1 again while `a` held
/// token 1. Now `n1` refuses `n2`, whose removal it accepted. (In a roster of four or more
/// voters, one voter may still miss the removal: PROTOCOL §1 states what stays open.)
#[test]
fn a_removed_voters_accept_to_a_lagging_voter_does_not_survive_into_the_next_roster() {
    let mut c = Cluster::new(3);
    c.request(0, 1, scope(), acquire("a"));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))));
    let (n0, n1, n2) = (c.nodes[0].id().clone(), c.nodes[1].id().clone(), c.nodes[2].id().clone());
    let (_first, second) = remove_n2_while_n1_misses_it(&mut c);
    let ballot = Ballot { round: 1 << 40, proposer: n2.incarnation };
    forge(&mut c, 1, &n2, Body::Accept { key: scope(), ballot, value: Value::Lock(LockRecord::default()) });
    // n1 catches up from n0, as it would from any member.
    let links = c.nodes[0].chain().to_vec();
    c.nodes[1].handle_message(c.now, Envelope { from: n0, to: n1, roster: Some(second.id()), body: Body::Commit { links } });
    c.settle();
    assert_eq!(c.nodes[1].roster().map(|r| r.version), Some(2));
    c.request(0, 2, scope(), acquire("b"));
    for _ in 0..40 {
        c.settle();
        c.now = c.now.plus_micros(50_000);
        for n in &mut c.nodes {
            n.handle_timeout(c.now);
        }
    }
    c.settle();
    let reply = c.take_reply(2);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Busy { .. }))), "a holds the scope with token 1 (lease 10 s, 2 s ago), yet b got {:?}", reply.result);
}

/// Runs `c`'s timers for `us` of time in steps of 50 ms, delivering everything.
fn run_cluster(c: &mut Cluster, us: u64) {
    let end = c.now.plus_micros(us);
    while c.now < end {
        c.settle();
        c.now = c.now.plus_micros(50_000);
        for n in &mut c.nodes {
            n.handle_timeout(c.now);
        }
    }
    c.settle();
}

/// The removed voter needed no signature of its own: it sent the lagging `n1` an Accept of a
/// roster of its choosing (version 7: `n0` gone, `n1` and `n2` voting) at a high ballot,
/// tagged v1, and `n1` stored it. Once `n1` installed the real v2, its periodic check read
/// the register: the forged value sat at the highest ballot, the read took it for chosen,
/// `n0` and `n1` accepted and signed it again, and every node installed the removed voter's
/// roster. Now `n1` takes only a roster one change on from its own, and a read ignores a
/// roster that cannot be the register's latest (older than the installed one, or another at
/// its version).
#[test]
fn a_removed_voters_accept_of_a_roster_is_not_chosen_by_the_catch_up_read() {
    let mut c = Cluster::new(3);
    let (n0, n1, n2) = (c.nodes[0].id().clone(), c.nodes[1].id().clone(), c.nodes[2].id().clone());
    let (first, second) = remove_n2_while_n1_misses_it(&mut c);
    let forged = Roster { version: 7, voters: vec![n1.clone(), n2.clone()], sweep_done: true, ..first.clone() };
    assert!(crate::validate::roster(&forged).is_ok());
    let ballot = Ballot { round: 1 << 40, proposer: n2.incarnation };
    forge(&mut c, 1, &n2, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(forged) });
    assert_eq!(c.nodes[1].roster(), Some(&first));
    // n1 catches up from n0, as it would from any member; time passes.
    let links = c.nodes[0].chain().to_vec();
    c.nodes[1].handle_message(c.now, Envelope { from: n0.clone(), to: n1, roster: Some(second.id()), body: Body::Commit { links } });
    run_cluster(&mut c, 30_000_000);
    for i in 0..2 {
        let r = c.nodes[i].roster().unwrap();
        assert!(
            r.contains(&n0) && !r.contains(&n2),
            "n{i} installed the removed voter's roster: version {}, voters {:?}",
            r.version,
            r.voters.iter().map(|v| &v.name).collect::<Vec<_>>()
        );
    }
}

/// Seeds were kept by name only, so a joining node took its first roster from any certificate
/// of a seed's name: another cluster's node of that name (the CA is shared), or an old
/// certificate of the seed, which made a first roster of its own, signed it alone, and the
/// joining node belonged to that "cluster" for good. A seed is now a name and a key.
#[test]
fn a_seeds_namesake_with_another_key_cannot_plant_a_first_roster() {
    let c = Cluster::new(3);
    let seed = c.nodes[1].id().clone();
    let mut joiner = new_node(Config::default(), nid("j", 900), Durable::default());
    joiner.set_seeds([(seed.name.clone(), seed.key)]);
    // Another certificate for the seed's name (another key).
    let other_key = signer("elsewhere");
    let namesake = NodeId::new(seed.name.clone(), 4242, other_key.key_hash());
    assert_ne!(namesake.key, seed.key);
    let theirs = Roster::first(vec![namesake.clone()], 5);
    let signed = proof::sign(&other_key, Ballot::BOOTSTRAP, theirs.id(), &theirs);
    let link = proof::Link { proof: proof::Proof { ballot: Ballot::BOOTSTRAP, under: theirs.id(), signatures: vec![(namesake.clone(), signed)] }, roster: theirs.clone() };
    let to = joiner.id().clone();
    joiner.handle_message(Time(0), Envelope { from: namesake, to: to.clone(), roster: Some(theirs.id()), body: Body::Commit { links: vec![link] } });
    assert_eq!(joiner.roster(), None, "the seed's namesake planted a cluster of its own in the joining node");
    // The real seed's chain is still taken.
    let ours = c.nodes[1].chain().to_vec();
    joiner.handle_message(Time(0), Envelope { from: seed, to, roster: c.nodes[1].roster().map(Roster::id), body: Body::Commit { links: ours } });
    assert_eq!(joiner.roster(), c.nodes[1].roster());
}

// ---------------------------------------------------------------------------------------
// The removal window (docs/PROTOCOL.md §7, *Removals*): from four voters on, a voter that has
// not heard of a removal still listed the removed node, and took its ballot requests and used
// what its votes carried. Now a voter takes them, and a proposer uses them, only while a
// majority vouches for the sender, and a voter accepts a removal only once its vouches for the
// removed node have run out (`vouch`).

/// Five voters; `a` holds the scope (token 1, lease 60 s). `n4` is removed through `n0` while
/// `n3` hears nothing from `n0`..`n2` but their vouches (which withhold `n4` from the moment
/// they are asked to accept its removal). Returns v2.
fn remove_n4_while_n3_is_cut_off(c: &mut Cluster) -> Roster {
    c.request(0, 1, scope(), acquire_for("a", 60_000_000, false));
    c.settle();
    assert!(matches!(c.take_reply(1).result, Ok(Answer::Lock(LockResult::Locked { token: 1, .. }))));
    let (n3, n4) = (c.nodes[3].id().clone(), c.nodes[4].id().clone());
    let honest = |n: &NodeId| n.name != "n3" && n.name != "n4";
    c.request(0, 2, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Remove(n4.clone()), expected_version: Some(1) }));
    let vouch = |e: &Envelope| matches!(e.body, Body::VouchAsk { .. } | Body::Vouch { .. });
    c.deliver_dropping(|e| ((e.to == n3 && honest(&e.from)) || (e.from == n3 && honest(&e.to))) && !vouch(e));
    assert!(matches!(c.take_reply(2).result, Ok(Answer::Roster(RosterResult::Changed(_)))));
    let second = c.nodes[0].roster().cloned().unwrap();
    assert!(second.version == 2 && !second.is_member(&n4));
    assert_eq!(c.nodes[3].roster().map(|r| r.version), Some(1), "n3 missed the removal");
    second
}

/// The removed `n4`, hostile now, plants a record granting the scope to mallory at `n3` (which
/// still lists it) at a high ballot. Before vouches `n3` stored it; once `n3` caught up, a
/// ballot whose quorum held it read it as possibly chosen: mallory held the scope, and `b`'s
/// acquire was refused while `a`'s grant vanished (or, with a lower token planted, a token went
/// back).
#[test]
fn a_removed_voters_accept_at_a_voter_that_missed_its_removal_is_refused() {
    let mut c = Cluster::new(5);
    let ids: Vec<NodeId> = c.nodes.iter().map(|n| n.id().clone()).collect();
    let (n0, n1, n2, n3, n4) = (ids[0].clone(), ids[1].clone(), ids[2].clone(), ids[3].clone(), ids[4].clone());
    let second = remove_n4_while_n3_is_cut_off(&mut c);
    let ballot = Ballot { round: 1 << 40, proposer: n4.incarnation };
    let out = forge(&mut c, 3, &n4, Body::Accept { key: scope(), ballot, value: Value::Lock(held_by("mallory")) });
    assert!(out.writes.is_empty(), "n3 stored the removed voter's value: {:?}", out.writes);
    // Parked a moment for vouches that never come, then refused.
    c.now = c.now.plus_micros(600_000);
    c.nodes[3].handle_timeout(c.now);
    let out = c.nodes[3].drain();
    assert!(out.writes.is_empty());
    assert!(out.messages.iter().any(|e| e.to == n4 && matches!(e.body, Body::Refuse { why: crate::message::Refusal::Unvouched, .. })), "{:?}", out.messages);
    // n3 catches up; b asks n0, and n3 is in the quorum that answers (n1 and n2 are slow).
    let links = c.nodes[0].chain().to_vec();
    c.nodes[3].handle_message(c.now, Envelope { from: n0.clone(), to: n3.clone(), roster: Some(second.id()), body: Body::Commit { links } });
    c.settle();
    assert_eq!(c.nodes[3].roster().map(|r| r.version), Some(2));
    c.request(0, 3, scope(), acquire("b"));
    c.deliver_dropping(|e| (e.from == n1 || e.from == n2) && matches!(e.body, Body::Promise { .. }));
    run_cluster(&mut c, 1_000_000);
    let reply = c.take_reply(3);
    assert!(matches!(reply.result, Ok(Answer::Lock(LockResult::Busy { .. }))), "a holds the scope (token 1, 60 s), yet b got {:?}", reply.result);
    let held = c.disks[0].slots.get(&scope()).and_then(|s| s.accepted.clone());
    assert!(matches!(&held, Some(crate::message::AcceptedValue { value: Value::Lock(r), .. }) if r.holders.iter().all(|g| g.holder == "a")), "{held:?}");
}

/// A lagging proposer uses nothing a removed voter's promise claims: `n3`, cut off from the
/// others and still at v1, asks for the scope; the removed `n4` answers its Prepare with a
/// promise claiming mallory's record at a high ballot (and `n3`'s own promise joins it). Before
/// vouches `n3` took the claim for the register's value; now `n4` is no voter a majority
/// vouches for at `n3`, its promise does not count, and no quorum forms.
#[test]
fn a_removed_voters_promise_is_not_used_by_a_proposer_that_missed_its_removal() {
    let mut c = Cluster::new(5);
    let n4 = c.nodes[4].id().clone();
    let _ = remove_n4_while_n3_is_cut_off(&mut c);
    c.nodes[3].handle_request(c.now, Request { client: 9, key: scope(), op: acquire("c"), timeout_us: 1_000_000 });
    let out = c.nodes[3].drain();
    let prepare = out.messages.iter().chain(&out.early).find_map(|e| match &e.body {
        Body::Prepare { key, ballot } if e.to == n4 => Some((key.clone(), *ballot)),
        _ => None,
    });
    let (key, ballot) = prepare.expect("n3's Prepare to n4");
    let high = Ballot { round: 1 << 40, proposer: n4.incarnation };
    let roster = c.nodes[3].roster().unwrap().id();
    let claim = Some(crate::message::AcceptedValue { ballot: high, value: Value::Lock(held_by("mallory")), roster: Some(roster) });
    let out = forge(&mut c, 3, &n4, Body::Promise { key, ballot, accepted: claim, age_us: 0 });
    assert!(out.messages.iter().chain(&out.early).all(|e| !matches!(e.body, Body::Accept { .. })), "n3 decided from the removed voter's promise: {:?}", out.messages);
    assert!(c.nodes[3].max_round_seen < 1 << 40, "the removed voter's round moved n3's");
}

/// A voter accepts a roster value that removes a node only once its vouches for it have run
/// out, however the removal is asked for: the first Accept is refused with the wait, and a
/// vouch asked for meanwhile withholds the node.
#[test]
fn a_voter_accepts_a_removal_only_after_its_vouches_for_the_node_ran_out() {
    let mut c = Cluster::new(3);
    run_cluster(&mut c, 10_000_000);
    let (n0, n2) = (c.nodes[0].id().clone(), c.nodes[2].id().clone());
    let mut removal = c.nodes[0].roster().cloned().unwrap().changed(&RosterChange::Remove(n2.clone())).unwrap();
    removal.sweep_done = false;
    let ballot = Ballot { round: 50, proposer: n0.incarnation };
    let out = forge(&mut c, 1, &n0, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(removal.clone()) });
    let wait = out.messages.iter().find_map(|e| match e.body {
        Body::Refuse { why: crate::message::Refusal::Withdrawing { wait_us }, .. } => Some(wait_us),
        _ => None,
    });
    let wait = wait.expect("a refusal saying how long to wait");
    assert!(wait >= Config::default().vouch_us, "{wait}");
    assert!(out.writes.is_empty());
    let at = c.now.as_micros();
    let out = forge(&mut c, 1, &n0, Body::VouchAsk { at });
    assert!(out.messages.iter().any(|e| matches!(&e.body, Body::Vouch { withholds, .. } if withholds == &vec![n2.clone()])), "{:?}", out.messages);
    // Short of the wait, still refused; then accepted (vouches go on meanwhile).
    run_cluster(&mut c, wait - 100_000);
    let out = forge(&mut c, 1, &n0, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(removal.clone()) });
    assert!(out.messages.iter().any(|e| matches!(e.body, Body::Refuse { why: crate::message::Refusal::Withdrawing { .. }, .. })), "{:?}", out.messages);
    run_cluster(&mut c, 100_000);
    let out = forge(&mut c, 1, &n0, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(removal) });
    assert!(out.messages.iter().any(|e| matches!(e.body, Body::Accepted { .. })), "{:?}", out.messages);
}

/// A graceful leave: the leaving node asks the voters to remove it (`request_leave`), and one
/// of them proposes it. It does not propose its own removal: the voters withhold their vouches
/// from it once asked to accept its removal, so no majority vouches for its ballots by the time
/// they may accept (found by the real-process tests: a leaving node never left); and taking a
/// removed node's own-removal Accept without vouches let a red team plant rosters.
#[test]
fn a_node_that_leaves_is_removed_by_the_voters_it_asks() {
    let mut c = Cluster::new(3);
    let n2 = c.nodes[2].id().clone();
    let now = c.now;
    c.nodes[2].request_leave(now);
    c.settle();
    run_cluster(&mut c, 5_000_000);
    for n in &c.nodes {
        assert!(n.roster().is_some_and(|r| r.version == 2 && !r.is_member(&n2)), "{} has {:?}", n.id(), n.roster());
    }
}

/// A node that no majority vouches for holds its ballots back: they would be refused, and its
/// promises to itself only outbid the others'. (Simulator, mixed faults, seed 962: a voter on
/// its way out kept raising its own promise on the roster register, and the voters removing
/// it, which needed its acceptance, were outbid for good.)
#[test]
fn a_node_no_majority_vouches_for_holds_its_ballots_back() {
    let mut c = Cluster::new(3);
    run_cluster(&mut c, 3_000_000);
    let (n0, n1, n2) = (c.nodes[0].id().clone(), c.nodes[1].id().clone(), c.nodes[2].id().clone());
    let mut removal = c.nodes[0].roster().cloned().unwrap().changed(&RosterChange::Remove(n2.clone())).unwrap();
    removal.sweep_done = false;
    let ballot = Ballot { round: 1 << 20, proposer: n0.incarnation };
    // n0 and n1 are asked to accept n2's removal: they withhold n2 from then on.
    forge(&mut c, 0, &n1, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(removal.clone()) });
    forge(&mut c, 1, &n0, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(removal) });
    run_cluster(&mut c, 2_500_000);
    c.nodes[2].handle_request(c.now, Request { client: 7, key: scope(), op: acquire("x"), timeout_us: 1_000_000 });
    let out = c.nodes[2].drain();
    assert!(out.messages.iter().chain(&out.early).all(|e| !matches!(e.body, Body::Prepare { .. } | Body::Accept { .. })), "{:?}", out.messages);
    assert!(out.writes.iter().all(|w| !matches!(w, Write::Slot(..))), "n2 promised itself: {:?}", out.writes);
}

// ---------------------------------------------------------------------------------------
// Red team of vouches: a removed node's own-removal Accept planted a roster with the installed
// one's id but a round floor at the top of the range (the exemption took any roster removing
// its sender; `RosterId` leaves the floor out), and a refusal naming a ballot of its own
// choosing moved a lagging node's rounds to the bound, which a sweep then made everyone's
// floor. Now nothing from an unvouched node is taken (a leaving node asks the voters to remove
// it, `Body::Leave`), reads drop copies of the installed roster with another floor, and only
// refusals of this node's own ballots move its rounds.

/// Runs `c`'s timers for `us` of time in steps of 50 ms, delivering all but what `drop` selects.
fn run_cluster_dropping(c: &mut Cluster, us: u64, drop: impl Fn(&Envelope) -> bool) {
    let end = c.now.plus_micros(us);
    while c.now < end {
        c.deliver_dropping(&drop);
        c.now = c.now.plus_micros(50_000);
        for n in &mut c.nodes {
            n.handle_timeout(c.now);
        }
    }
    c.deliver_dropping(&drop);
}

/// Found when voters took a member's Accept of its own removal without vouches (any roster
/// that removed its sender and followed the voter's roster — and `follows` compares ids, which
/// leave out `round_floor` and `sweep_done`). The removed `n4`, hostile once its removal is chosen, sends the lagging `n3`
/// (still at v1) an Accept of "v1 without n4" with the real v2's id but `round_floor` at the
/// top of the range, at a round a little above what `n3` saw (within the 2^32 leap); it waits
/// out `n3`'s `Withdrawing` and sends it again. `n3` stores and signs it. Once `n3` has caught
/// up, the next roster change whose quorum holds `n3`'s promise reads the forged value at the
/// highest ballot (same id as the installed v2, so not dropped as impossible), builds on it,
/// and installs a v3 whose round floor no ballot can pass: no lock is ever granted again.
#[test]
fn a_removed_voters_own_removal_accept_cannot_plant_a_round_floor() {
    let mut c = Cluster::new(5);
    let ids: Vec<NodeId> = c.nodes.iter().map(|n| n.id().clone()).collect();
    let (n0, n1, n3, n4) = (ids[0].clone(), ids[1].clone(), ids[3].clone(), ids[4].clone());
    let second = remove_n4_while_n3_is_cut_off(&mut c);
    let first = c.nodes[3].roster().cloned().unwrap();
    // n4's forgery: the removal's id, with a round floor at the top of the range.
    let mut forged = first.changed(&RosterChange::Remove(n4.clone())).unwrap();
    assert_eq!(forged.id(), second.id());
    forged.round_floor = (1u64 << 62) - 1;
    forged.sweep_done = true;
    let ballot = Ballot { round: 1 << 31, proposer: n4.incarnation };
    let out = forge(&mut c, 3, &n4, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(forged.clone()) });
    let wait = out.messages.iter().find_map(|e| match e.body {
        Body::Refuse { why: crate::message::Refusal::Withdrawing { wait_us }, .. } => Some(wait_us),
        _ => None,
    });
    // (Before the fix n3 answered that it waits for its vouches for n4 to run out; now it
    // refuses: no majority vouches for n4.)
    let wait = wait.unwrap_or(2_200_000);
    // n3 stays cut off from the others a little longer; n4 sends its Accept again.
    c.now = c.now.plus_micros(wait + 1);
    let out = forge(&mut c, 3, &n4, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(forged.clone()) });
    let stored = out.writes.iter().any(|w| matches!(w, Write::Slot(Key::Roster, _)));
    // n3 catches up from n0, as it would from any member; the cluster runs on.
    let links = c.nodes[0].chain().to_vec();
    c.nodes[3].handle_message(c.now, Envelope { from: n0.clone(), to: n3.clone(), roster: Some(second.id()), body: Body::Commit { links } });
    run_cluster(&mut c, 3_000_000);
    assert_eq!(c.nodes[3].roster().map(|r| r.version), Some(2));
    // An admin bans the removed node; n1's promise is slow, so n3 is in the quorum.
    c.request(0, 7, Key::Roster, roster_change(RosterChange::Ban(n4.clone())));
    run_cluster_dropping(&mut c, 2_000_000, |e| e.from == n1 && matches!(e.body, Body::Promise { key: Key::Roster, .. }));
    let floor = c.nodes[0].roster().unwrap().round_floor;
    // Any lock, later.
    c.request(0, 8, scope(), acquire_for("b", 10_000_000, false));
    run_cluster(&mut c, 6_000_000);
    let reply = c.take_reply(8);
    assert!(
        floor < 1 << 40,
        "n3 stored n4's forgery ({stored}); the installed roster's round floor is now {floor} (version {}), and b's acquire got {:?}",
        c.nodes[0].roster().unwrap().version,
        reply.result
    );
}

/// A refusal's round is taken from a voter no majority vouches for only up to 2^32 above "the
/// refused ballot" — the ballot the refusal itself names, which the sender chooses: the check
/// runs before `on_vote` looks at whether this node ever ran that ballot. The removed `n4`
/// sends the lagging `n3` (which still lists it) one `Refuse` naming a ballot just under the
/// bound and `Promised` at 2^62 − 1: `n3`'s rounds jump there. Once `n3` has caught up, it
/// reports that round in its sweep listing; the next voter change's sweep raises the round
/// floor to it, and no ballot can pass the floor: no lock is ever granted again.
#[test]
fn a_removed_voters_refusal_naming_its_own_ballot_cannot_pin_rounds() {
    let mut c = Cluster::new(5);
    let ids: Vec<NodeId> = c.nodes.iter().map(|n| n.id().clone()).collect();
    let (n0, n1, n2, n3, n4) = (ids[0].clone(), ids[1].clone(), ids[2].clone(), ids[3].clone(), ids[4].clone());
    let second = remove_n4_while_n3_is_cut_off(&mut c);
    let top = (1u64 << 62) - 1;
    let named = Ballot { round: top - (1 << 32), proposer: n3.incarnation };
    let why = crate::message::Refusal::Promised(Ballot { round: top, proposer: n4.incarnation });
    forge(&mut c, 3, &n4, Body::Refuse { key: scope(), ballot: named, why });
    let poisoned = c.nodes[3].max_round_seen;
    // n3 catches up from n0, as it would from any member; the cluster runs on.
    let links = c.nodes[0].chain().to_vec();
    c.nodes[3].handle_message(c.now, Envelope { from: n0.clone(), to: n3.clone(), roster: Some(second.id()), body: Body::Commit { links } });
    run_cluster(&mut c, 3_000_000);
    assert_eq!(c.nodes[3].roster().map(|r| r.version), Some(2));
    // An admin removes n2; n1's sweep listing is slow, so n3's is in the majority.
    c.request(0, 7, Key::Roster, roster_change(RosterChange::Remove(n2.clone())));
    run_cluster_dropping(&mut c, 5_000_000, |e| e.from == n1 && matches!(e.body, Body::KeyList { .. }));
    run_cluster(&mut c, 2_000_000);
    let installed = c.nodes[0].roster().cloned().unwrap();
    c.request(0, 8, scope(), acquire_for("b", 10_000_000, false));
    run_cluster(&mut c, 6_000_000);
    let reply = c.take_reply(8);
    assert!(
        installed.round_floor < 1 << 40,
        "n3's rounds were moved to {poisoned}; roster version {} (swept {}) has round floor {}, and b's acquire got {:?}",
        installed.version,
        installed.sweep_done,
        installed.round_floor,
        reply.result
    );
}

/// The same as `a_removed_voters_own_removal_accept_cannot_plant_a_round_floor`, with three
/// voters: the removal of a member that does not vote needs no majority of kept voters, so
/// one voter may miss it even in the smallest cluster with a member.
#[test]
fn a_removed_members_own_removal_accept_cannot_plant_a_round_floor_with_three_voters() {
    let names = ["A", "B", "C", "M"];
    let mut net = Net::new(&names, vec![Durable::default(); 4], Config::default());
    net.bootstrap(&["A", "B", "C"]);
    net.admit_members("A", &["M"]);
    net.run(3_000_000, &keep_all);
    let (a, b, cc, m) = (net.id("A"), net.id("B"), net.id("C"), net.id("M"));
    let before = net.nodes[net.idx("C")].roster().cloned().unwrap();
    // A removes M; C hears nothing from A and B but their vouches.
    let cut = |e: &Envelope| {
        let honest = |n: &NodeId| n.name == "A" || n.name == "B";
        let vouch = matches!(e.body, Body::VouchAsk { .. } | Body::Vouch { .. });
        ((e.to.name == "C" && honest(&e.from)) || (e.from.name == "C" && honest(&e.to))) && !vouch
    };
    net.request("A", 1, Key::Roster, roster_change(RosterChange::Remove(m.clone())));
    net.run(5_000_000, &cut);
    assert!(matches!(net.result(1), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(1));
    let after = net.nodes[net.idx("A")].roster().cloned().unwrap();
    assert_eq!(net.nodes[net.idx("C")].roster(), Some(&before), "C missed the removal");
    // M, removed, sends C an Accept of its own removal with a round floor at the top.
    let mut forged = before.changed(&RosterChange::Remove(m.clone())).unwrap();
    assert_eq!(forged.id(), after.id());
    forged.round_floor = (1u64 << 62) - 1;
    let ballot = Ballot { round: 1 << 31, proposer: m.incarnation };
    let accept = Envelope { from: m.clone(), to: cc.clone(), roster: Some(before.id()), body: Body::Accept { key: Key::Roster, ballot, value: Value::Roster(forged.clone()) } };
    net.queue.push_back(accept.clone());
    net.deliver(&cut);
    net.run(2_100_000, &cut);
    net.queue.push_back(accept);
    net.deliver(&cut);
    // C heals, and catches up from A.
    let links = net.nodes[net.idx("A")].chain().to_vec();
    net.queue.push_back(Envelope { from: a.clone(), to: cc.clone(), roster: Some(after.id()), body: Body::Commit { links } });
    net.run(3_000_000, &keep_all);
    assert_eq!(net.nodes[net.idx("C")].roster(), Some(&after));
    // An admin bans M; B's promise is slow, so C is in the quorum.
    net.request("A", 2, Key::Roster, roster_change(RosterChange::Ban(m.clone())));
    net.run(2_000_000, &|e: &Envelope| e.from == b && matches!(e.body, Body::Promise { key: Key::Roster, .. }));
    let installed = net.nodes[net.idx("A")].roster().cloned().unwrap();
    net.request("A", 3, scope(), acquire_for("x", 10_000_000, false));
    net.run(25_000_000, &keep_all);
    assert!(
        installed.round_floor < 1 << 40,
        "roster version {} has round floor {}; x's acquire got {:?}",
        installed.version,
        installed.round_floor,
        net.result(3)
    );
}

/// Found by the simulator (placement, seeds 754 and 865; roster churn, seed 1496): a node added
/// as a voter whose Commit was lost never learnt the roster. With two voters, the other
/// needed its vouch to propose or sweep anything, so it sent it nothing it would answer, and
/// the cluster stood still for good. A node without a roster that is asked for a vouch by a
/// member of one now asks that member for the chain.
#[test]
fn a_voter_whose_admission_commit_was_lost_pulls_the_roster_when_asked_for_a_vouch() {
    let mut net = Net::new(&["A", "D"], vec![Durable::default(), Durable::default()], Config::default());
    let a = net.idx("A");
    let first = vec![net.id("A")];
    net.nodes[a].bootstrap(Time(0), first, 5).unwrap();
    net.collect(a);
    net.pump(&keep_all);
    assert!(net.nodes[a].roster().is_some());
    let d = net.id("D");
    let lost = |e: &Envelope| e.to.name == "D" && matches!(e.body, Body::Commit { .. });
    net.request("A", 1, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Add(d), expected_version: None }));
    net.run(100_000, &lost);
    assert!(matches!(net.result(1), Some(Ok(Answer::Roster(RosterResult::Changed(_))))), "{:?}", net.result(1));
    assert!(net.nodes[net.idx("D")].roster().is_none(), "D's Commit was lost");
    // Two voters now: A needs D's vouch to propose anything, and asks for it.
    net.run(3_000_000, &keep_all);
    assert_eq!(net.nodes[net.idx("D")].roster().map(|r| r.voters.len()), Some(2), "D pulled the chain");
    net.request("A", 2, scope(), acquire("x"));
    net.run(3_000_000, &keep_all);
    assert!(is_locked(net.result(2)), "{:?}", net.result(2));
}

// Red team of demotions, promotions and voter targets (issue 16): schedules tried that hold,
// kept as regression tests, and the sweep of a change whose decider does not vote in it.

fn changed(result: Option<&Result<Answer, Failure>>) -> bool {
    matches!(result, Some(Ok(Answer::Roster(RosterResult::Changed(_)))))
}

fn voter_names(net: &Net, node: &str) -> Vec<String> {
    net.nodes[net.idx(node)].roster().map(|r| r.voters.iter().map(|v| v.name.clone()).collect()).unwrap_or_default()
}

/// Red team (passes): a demoted voter keeps its acceptor state; promoted again, its stale
/// value at a high round must not override what was chosen while it did not vote. C alone
/// accepts Z's grant at a round far above everybody's (P's ballot, the Accept reaching C only);
/// C is demoted, C1 is granted under {A, B}, C is promoted again, and a grant through C with
/// the quorum {B, C} still finds C1 holding with its token. (The demotion's sweep lists B's
/// promise of P's round; every later ballot is above it.)
#[test]
fn a_demoted_voters_stale_value_does_not_come_back_when_it_is_promoted() {
    let names = ["A", "B", "C", "P"];
    let mut durables = vec![Durable::default(); 4];
    durables[3].round_reserved = 100_000;
    let config = Config { sweep_check_us: 20_000, ..Config::default() };
    let mut net = Net::new(&names, durables, config);
    net.bootstrap(&["A", "B", "C"]);
    net.admit_members("A", &["P"]);
    net.request("P", 100, scope(), acquire_for("Z", 60_000_000, false));
    let to_c_only = |e: &Envelope| e.from.name == "P" && (e.to.name == "A" || (e.to.name == "B" && matches!(e.body, Body::Accept { .. })));
    net.pump(&to_c_only);
    let held_high = |net: &Net| net.nodes[net.idx("C")].acceptor.slot(&scope()).and_then(|s| s.accepted).map(|a| a.ballot.round);
    assert!(held_high(&net).is_some_and(|r| r >= 100_000), "C holds Z's record at P's round: {:?}", held_high(&net));
    let without_p = |e: &Envelope| e.from.name == "P" || e.to.name == "P";

    net.request("A", 200, Key::Roster, roster_change(RosterChange::Demote(net.id("C"))));
    net.run(3_000_000, &without_p);
    assert!(changed(net.result(200)), "{:?}", net.result(200));
    assert!(["A", "B", "C"].iter().all(|n| net.nodes[net.idx(n)].roster().is_some_and(|r| r.version == 3 && r.sweep_done)));
    assert_eq!(voter_names(&net, "B"), ["A", "B"]);

    net.request("A", 300, scope(), acquire_for("C1", 60_000_000, false));
    net.run(200_000, &without_p);
    let c1 = locked_token(net.result(300)).expect("C1 is granted");

    net.request("A", 400, Key::Roster, roster_change(RosterChange::Add(net.id("C"))));
    net.run(3_000_000, &without_p);
    assert!(changed(net.result(400)), "{:?}", net.result(400));
    assert_eq!(voter_names(&net, "C"), ["A", "B", "C"]);
    assert!(held_high(&net).is_some_and(|r| r >= 100_000), "C, a voter again, still holds Z's record: {:?}", held_high(&net));

    // Through C, with A unreachable: the quorum is {B, C}, C holding Z's record high.
    let no_a = |e: &Envelope| without_p(e) || e.from.name == "A" || e.to.name == "A";
    net.request("C", 500, scope(), acquire_for("C2", 60_000_000, false));
    net.run(2_000_000, &no_a);
    assert!(matches!(net.result(500), Some(Ok(Answer::Lock(LockResult::Busy { .. })))), "C1 (token {c1}) holds, yet C2 got {:?}", net.result(500));
    // And once C1's lease is over, the next token is above C1's.
    net.run(70_000_000, &without_p);
    net.request("B", 600, scope(), acquire_for("C3", 60_000_000, false));
    net.run(2_000_000, &without_p);
    let c3 = locked_token(net.result(600)).expect("C3 is granted");
    assert!(c3 > c1, "token went back: C1 {c1}, C3 {c3}");
}

/// Red team (passes): D and E are cut off from A, B, C while D is demoted (A, B, C accept: a
/// majority of the five and of the four kept). D and E, still on the first roster, cannot
/// grant between them; once healed, grants through either are refused while `a` holds, and
/// tokens only go up.
#[test]
fn a_demotion_while_two_voters_are_cut_off_keeps_one_writer() {
    let names = ["A", "B", "C", "D", "E"];
    let config = Config { sweep_check_us: 20_000, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 5], config);
    net.bootstrap(&names);
    net.request("A", 1, scope(), acquire_for("a", 60_000_000, false));
    net.run(200_000, &keep_all);
    let a = locked_token(net.result(1)).expect("a is granted");
    let side = |n: &str| n == "D" || n == "E";
    let cut = |e: &Envelope| side(&e.from.name) != side(&e.to.name);
    net.request("A", 2, Key::Roster, roster_change(RosterChange::Demote(net.id("D"))));
    net.run(3_000_000, &cut);
    assert!(changed(net.result(2)), "{:?}", net.result(2));
    assert!(["D", "E"].iter().all(|n| net.nodes[net.idx(n)].roster().is_some_and(|r| r.version == 1)));
    // On the cut-off side: nothing is granted.
    net.request("E", 3, scope(), acquire_for("e", 60_000_000, false));
    net.request("D", 4, scope(), acquire_for("d", 60_000_000, false));
    net.run(3_000_000, &cut);
    assert!(!is_locked(net.result(3)) && !is_locked(net.result(4)), "{:?} {:?}", net.result(3), net.result(4));
    // Healed: both learn the demotion; `a` still holds.
    net.request("E", 5, scope(), acquire_for("e2", 60_000_000, false));
    net.request("D", 6, scope(), acquire_for("d2", 60_000_000, false));
    net.run(3_000_000, &keep_all);
    assert!(!is_locked(net.result(5)) && !is_locked(net.result(6)), "a holds (token {a}): {:?} {:?}", net.result(5), net.result(6));
    assert!(names.iter().all(|n| voter_names(&net, n) == ["A", "B", "C", "E"]));
    net.run(70_000_000, &keep_all);
    net.request("D", 7, scope(), acquire_for("d3", 60_000_000, false));
    net.run(2_000_000, &keep_all);
    let d3 = locked_token(net.result(7)).expect("d3 is granted through the demoted member");
    assert!(d3 > a);
}

/// Red team (passes): a promotion, and a target change, wait for the sweep of a demotion: a
/// demoted voter is not made a voter again before every scope was rewritten under the roster
/// without it.
#[test]
fn a_promotion_and_a_target_change_wait_for_a_demotions_sweep() {
    let names = ["A", "B", "C"];
    let config = Config { sweep_check_us: 200_000, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 3], config);
    net.bootstrap(&names);
    net.request("A", 1, scope(), acquire_for("a", 60_000_000, false));
    net.pump(&keep_all);
    let no_sweep = |e: &Envelope| matches!(e.body, Body::ListKeys { .. } | Body::KeyList { .. });
    net.request("A", 2, Key::Roster, Op::Roster(RosterOp::Change { change: RosterChange::Demote(net.id("C")), expected_version: Some(1) }));
    net.pump(&no_sweep);
    assert!(changed(net.result(2)));
    for (client, change) in [(3, RosterChange::Add(net.id("C"))), (4, RosterChange::SetTarget(3))] {
        net.request("B", client, Key::Roster, roster_change(change));
        net.pump(&no_sweep);
        assert!(matches!(net.result(client), Some(Ok(Answer::Roster(RosterResult::Refused(RosterRefusal::Sweeping))))), "{:?}", net.result(client));
    }
    net.run(5_000_000, &keep_all);
    assert!(net.nodes[0].roster().is_some_and(|r| r.version == 2 && r.sweep_done));
    net.request("B", 5, Key::Roster, roster_change(RosterChange::SetTarget(3)));
    net.run(1_000_000, &keep_all);
    let Some(Ok(Answer::Roster(RosterResult::Changed(r)))) = net.result(5).cloned() else { panic!("{:?}", net.result(5)) };
    assert!(r.sweep_done && r.target == 3 && r.voters.len() == 2, "a target change needs no sweep: {r:?}");
    net.request("B", 6, Key::Roster, roster_change(RosterChange::Add(net.id("C"))));
    net.run(3_000_000, &keep_all);
    assert!(changed(net.result(6)), "{:?}", net.result(6));
    assert!(names.iter().all(|n| voter_names(&net, n) == ["A", "B", "C"]));
}

/// Red team (passes): a member's Accept of a roster two changes on from the installed one
/// at one version (a demotion and a target), or with a target no roster may have, is neither
/// stored nor signed; a Commit whose roster's target was altered after signing does not verify.
#[test]
fn a_roster_value_two_changes_on_or_with_a_forged_target_is_refused() {
    let mut c = Cluster::new(3);
    let installed = c.nodes[0].roster().cloned().unwrap();
    let (n0, n2) = (c.nodes[0].id().clone(), c.nodes[2].id().clone());
    let demoted = installed.changed(&RosterChange::Demote(n2.clone())).unwrap();
    let two_on = Roster { target: 1, ..demoted.clone() };
    let bad_target = Roster { target: 4, ..installed.changed(&RosterChange::SetTarget(3)).unwrap() };
    for value in [two_on.clone(), bad_target] {
        let ballot = Ballot { round: 50, proposer: n0.incarnation };
        let out = forge(&mut c, 1, &n0, Body::Accept { key: Key::Roster, ballot, value: Value::Roster(value.clone()) });
        assert!(out.writes.is_empty(), "stored {value:?}");
        assert!(out.messages.iter().chain(&out.early).all(|e| !matches!(e.body, Body::Accepted { .. })), "signed {value:?}");
    }
    // A proof of the demotion does not prove the same roster with another target.
    let ballot = Ballot { round: 60, proposer: n0.incarnation };
    let sigs: Vec<(NodeId, proof::Signed)> =
        (0..2).map(|i| (c.nodes[i].id().clone(), proof::sign(&signer(&c.nodes[i].id().name), ballot, installed.id(), &demoted))).collect();
    let honest = proof::Link { roster: demoted.clone(), proof: proof::Proof { ballot, under: installed.id(), signatures: sigs.clone() } };
    assert_eq!(honest.verify(Some(&installed), None), Ok(()));
    let forged = proof::Link { roster: two_on, proof: proof::Proof { ballot, under: installed.id(), signatures: sigs } };
    assert!(forged.verify(Some(&installed), None).is_err());
}

/// Red team (liveness, minor): a voter may propose its own demotion (unlike its own removal,
/// which it refuses to propose). It decides it, installs it and, no voter of it any more,
/// does not sweep; the other voters took the Commit as "the decider sweeps at once" and wait
/// `sweep_takeover_us` (30 s) before they sweep, during which no roster change can be made.
#[test]
fn a_voter_that_demotes_itself_does_not_hold_up_the_sweep() {
    let names = ["A", "B", "C"];
    let config = Config { sweep_check_us: 20_000, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 3], config);
    net.bootstrap(&names);
    net.request("A", 1, scope(), acquire_for("a", 60_000_000, false));
    net.run(200_000, &keep_all);
    assert!(is_locked(net.result(1)));
    let start = net.now;
    net.request("A", 2, Key::Roster, roster_change(RosterChange::Demote(net.id("A"))));
    while !net.nodes.iter().all(|n| n.roster().is_some_and(|r| r.version == 2 && r.sweep_done)) {
        net.run(100_000, &keep_all);
        assert!(net.now < start + 60_000_000, "never swept");
    }
    assert!(changed(net.result(2)), "{:?}", net.result(2));
    let took = net.now - start;
    assert!(took < 5_000_000, "the demotion of its own decider was swept only after {} ms", took / 1000);
}

/// Red team (liveness, minor; the same gap as above, older than demotions): a member that does
/// not vote decides a change of the voters (here a promotion, as an admin's request through
/// a member would). It does not sweep, and the voters waited `sweep_takeover_us` for it.
#[test]
fn a_voter_change_decided_by_a_member_is_swept_at_once() {
    let names = ["A", "B", "C", "M"];
    let config = Config { sweep_check_us: 20_000, ..Config::default() };
    let mut net = Net::new(&names, vec![Durable::default(); 4], config);
    net.bootstrap(&["A", "B", "C"]);
    net.admit_members("A", &["M"]);
    net.run(1_000_000, &keep_all);
    let start = net.now;
    net.request("M", 2, Key::Roster, roster_change(RosterChange::Demote(net.id("C"))));
    while !net.nodes.iter().all(|n| n.roster().is_some_and(|r| r.version == 3 && r.sweep_done)) {
        net.run(100_000, &keep_all);
        assert!(net.now < start + 60_000_000, "never swept");
    }
    assert!(changed(net.result(2)), "{:?}", net.result(2));
    let took = net.now - start;
    assert!(took < 5_000_000, "a demotion decided by a member was swept only after {} ms", took / 1000);
}
