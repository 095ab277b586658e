//! The node's single task: it owns the core `Node` and feeds it peers' frames, API calls and
//! timer expiries; it sends what the core outputs once the disk thread has made it durable.
//! It also keeps the peer table (who is alive, where), forms the first roster, admits new
//! nodes, and leaves the roster on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

mod news;
mod placement;

use super::config::{Admission, AgentConfig};
use super::swim::{Swim, SwimId};
use crate::clock;
use crate::core::acceptor::Slot;
use crate::core::{Answer, Key, Node, NodeId, Op, Outbox, Release, Reply, Request, RosterChange, RosterOp, RosterResult, ToDisk, Value, Write};
use crate::mesh::endpoint::{Inbound, Mesh, Payload};
use crate::mesh::wire::{Frame, PeerInfo};

/// Output batches waiting for the disk beyond which no new input is taken.
const MAX_UNFLUSHED: usize = 1024;
/// A peer not heard from for this long is not alive.
const ALIVE_FOR: Duration = Duration::from_millis(2_500);
const TICK: Duration = Duration::from_millis(300);
/// Metrics look at this many of the node's scopes at most (a scrape must not stall the node),
/// and name the most contended of them.
const METRICS_SCAN: usize = 10_000;
const METRICS_TOP_SCOPES: usize = 10;

pub enum Input {
    Mesh(Inbound),
    Api(ApiCall),
    Committed(Vec<ToDisk>),
}

pub enum ApiCall {
    /// Run an operation on a register; the reply comes when it is decided or timed out.
    Op { key: Key, op: Op, timeout_us: u64, reply: oneshot::Sender<Reply> },
    Members(oneshot::Sender<MembersView>),
    /// The installed roster.
    Roster(oneshot::Sender<Option<crate::core::Roster>>),
    /// Counters and gauges for /metrics.
    Metrics(oneshot::Sender<NodeMetrics>),
    /// Scopes this node holds as a voter.
    Scopes(oneshot::Sender<Vec<String>>),
    /// The identity of a node of this name (and key, if given) that greeted this one and is
    /// not a member: what an admin approves or bans (its key as its own certificate proved it).
    Candidate(String, Option<crate::core::KeyHash>, oneshot::Sender<Option<NodeId>>),
}

#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pub stats: crate::core::Stats,
    pub members: MembersView,
    pub in_flight: usize,
    pub contention: crate::core::node::LocalContention,
    /// News of scopes taken from voters (a member that does not vote).
    pub news_received: u64,
    /// Handshakes refused and strangers' frames dropped by the mesh's rate limits.
    pub handshakes_refused: u64,
    pub frames_dropped: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberView {
    pub name: String,
    pub mesh_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub state: &'static str,
    pub voter: bool,
    /// `voter`; `member` (does not vote); `pending` (greeted, not admitted yet); `banned`
    /// (removed by an admin); `none` (known, not a member: it left, or is another cluster's).
    pub role: &'static str,
    /// The hash of its certificate's public key, in hex (as its own greeting proved it).
    pub key: String,
    /// Its zone (`--zone`, as its own greeting said it), empty for none.
    pub zone: String,
    /// How long it has been up without a break, as this node saw it (`None`: not up).
    pub alive_for_secs: Option<u64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BanView {
    /// `None`: the key alone is banned (its name was lifted for another key).
    pub name: Option<String>,
    pub key: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct MembersView {
    pub members: Vec<MemberView>,
    pub roster_version: u64,
    pub roster_size: usize,
    pub quorum_size: usize,
    /// How many voters the cluster keeps (`PUT /api/v1.0/cluster`).
    pub voter_target: usize,
    pub sweep_done: bool,
    /// The cluster's id, in hex (none before this node belongs to a cluster).
    pub cluster_id: Option<String>,
    /// `auto` or `approve` (this node's `--admission`).
    pub admission: &'static str,
    /// Names and keys an admin removed, refused until re-admitted.
    pub banned: Vec<BanView>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Peer {
    info: PeerInfo,
    cluster_id: Option<u128>,
    last_seen: Option<Instant>,
    leaving: bool,
    /// The members its last Hello reported down for `replace_after` (placement).
    down: Vec<NodeId>,
}

impl Peer {
    /// It greeted us lately: it is up, whatever SWIM concluded.
    fn greeted_lately(&self) -> bool {
        self.last_seen.is_some_and(|t| t.elapsed() < ALIVE_FOR)
    }
}

/// Internal client ids for the runtime's own requests (admission, leave).
const ADMIN_CLIENT: u64 = u64::MAX - 1;

pub struct Runtime {
    config: AgentConfig,
    node: Node,
    me: PeerInfo,
    mesh: Arc<Mesh>,
    flush: std::sync::mpsc::Sender<ToDisk>,
    /// The core's outputs waiting for the disk: the one send rule (`core::outbox`).
    outbox: Outbox,
    peers: BTreeMap<String, Peer>,
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    next_client: u64,
    bootstrapped_with: Option<Vec<NodeId>>,
    admin_in_flight: Option<Instant>,
    leaving: Option<oneshot::Sender<()>>,
    /// The last attempt to leave the roster failed: try again at the next tick.
    retry_leave: bool,
    swim: Swim,
    ticks: u64,
    /// Since when SWIM has held each member down (for reaping).
    down_since: HashMap<(String, u64), Instant>,
    /// The voters of the last roster looked at, and when each voter since removed left it.
    voters_seen: Vec<NodeId>,
    removed_at: BTreeMap<NodeId, Instant>,
    /// When each voter since demoted to a member was (placement holds it down a while).
    demoted_at: BTreeMap<NodeId, Instant>,
    /// Since when each peer (name, incarnation) has been up without a break.
    up_since: HashMap<(String, u64), Instant>,
    /// When this process started.
    started: Instant,
    /// As a voter: the members that asked for news of scopes (`news.rs`).
    subscribers: news::Subscribers,
    /// News of scopes taken from voters (a member that does not vote).
    news_received: u64,
    /// Where accepted scope values are announced (to watchers and waiters).
    changes: Arc<super::Changes>,
    /// Peers whose refused messages (by kind) or foreign cluster were logged: once per peer and
    /// kind (the metrics count them all).
    logged_invalid: std::collections::HashSet<(String, &'static str)>,
    /// Peers that greeted this node from one of its `--join` addresses: before it belongs to a
    /// cluster, it takes a roster only from them (`Node::set_seeds`).
    seeds: std::collections::BTreeSet<(String, crate::core::KeyHash)>,
    /// The roster version whose bans the mesh enforces.
    bans_of: u64,
}

/// A peer's identity as the core names it.
fn peer_id(info: &PeerInfo) -> NodeId {
    NodeId::new(info.name.clone(), info.incarnation, info.key)
}

fn swim_id(info: &PeerInfo) -> SwimId {
    SwimId { name: info.name.clone(), incarnation: info.incarnation, mesh_addr: info.mesh_addr, http_addr: info.http_addr, bump: info.bump }
}

impl Runtime {
    pub fn new(
        config: AgentConfig,
        node: Node,
        mesh: Arc<Mesh>,
        flush: std::sync::mpsc::Sender<ToDisk>,
        changes: Arc<super::Changes>,
    ) -> Runtime {
        let mut node = node;
        // No roster is taken from anyone until a node at a `--join` address greets this one.
        node.set_seeds(std::iter::empty());
        // Which life of this process: restarts must win over the previous one in SWIM. Only
        // an ordering between lives of one node, never compared across nodes.
        let bump = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let me = PeerInfo {
            name: config.name.clone(),
            incarnation: node.id().incarnation,
            key: node.id().key,
            mesh_addr: mesh.local_addr().unwrap_or(config.mesh),
            http_addr: config.http,
            bump,
            zone: config.zone.clone(),
        };
        let swim = Swim::new(swim_id(&me), node.id().incarnation ^ bump);
        Runtime {
            config,
            node,
            me,
            mesh,
            flush,
            outbox: Outbox::new(),
            peers: BTreeMap::new(),
            pending: HashMap::new(),
            next_client: 1,
            bootstrapped_with: None,
            admin_in_flight: None,
            leaving: None,
            retry_leave: false,
            swim,
            ticks: 0,
            down_since: HashMap::new(),
            voters_seen: Vec::new(),
            removed_at: BTreeMap::new(),
            demoted_at: BTreeMap::new(),
            up_since: HashMap::new(),
            started: Instant::now(),
            subscribers: news::Subscribers::default(),
            news_received: 0,
            changes,
            logged_invalid: std::collections::HashSet::new(),
            seeds: std::collections::BTreeSet::new(),
            bans_of: 0,
        }
    }

    /// Runs until shutdown. `_keep_open` is a sender of `inputs` held for the task's life, so
    /// the channel never reports closed while the node runs.
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut committed: mpsc::UnboundedReceiver<Input>,
        _keep_open: mpsc::Sender<Input>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown_signal());
        let mut left: Option<oneshot::Receiver<()>> = None;
        let mut leave_deadline: Option<tokio::time::Instant> = None;
        loop {
            let wake = self.node.next_timeout().map(|t| {
                let wait = t.since(clock::now());
                tokio::time::Instant::now() + Duration::from_micros(wait)
            });
            tokio::select! {
                done = committed.recv() => match done {
                    Some(done) => self.handle(done),
                    None => return,
                },
                input = inputs.recv(), if self.outbox.waiting() < MAX_UNFLUSHED => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                _ = async { match wake { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    self.node.handle_timeout(clock::now());
                }
                _ = tick.tick() => self.tick(),
                _ = async { match self.swim.next_timer() { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => {
                    self.swim.handle_timers(Instant::now());
                }
                _ = &mut shutdown, if left.is_none() => {
                    tracing::info!("shutting down: leaving the roster");
                    let (tx, rx) = oneshot::channel();
                    self.leaving = Some(tx);
                    left = Some(rx);
                    leave_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                    self.leave();
                }
                _ = async { match left.as_mut() { Some(rx) => { let _ = rx.await; } None => std::future::pending().await } } => {
                    tracing::info!("left the roster; bye");
                    self.announce(true);
                    self.swim.leave();
                    self.pump_swim();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
                _ = async { match leave_deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    tracing::warn!("could not leave the roster in time; exiting as a crashed member would");
                    return;
                }
            }
            self.pump();
            self.pump_swim();
        }
    }

    /// Sends SWIM's datagrams and applies its membership changes to the peer table.
    fn pump_swim(&mut self) {
        let out = self.swim.drain(Instant::now());
        for (to, packet) in out.send {
            self.mesh.send_datagram(to.mesh_addr, &to.name, packet);
        }
        for n in out.notifications {
            match n {
                foca::OwnedNotification::MemberUp(id) | foca::OwnedNotification::Rename(_, id) => {
                    tracing::info!(member = %id.name, "member up");
                    self.down_since.remove(&(id.name.clone(), id.incarnation));
                    self.upsert_peer(&id);
                }
                foca::OwnedNotification::MemberDown(id) => {
                    tracing::warn!(member = %id.name, "member down");
                    self.down_since.entry((id.name.clone(), id.incarnation)).or_insert_with(Instant::now);
                }
                foca::OwnedNotification::Defunct => tracing::warn!("swim: this node was declared down"),
                _ => {}
            }
        }
    }

    fn upsert_peer(&mut self, id: &SwimId) {
        if id.name == self.me.name {
            return;
        }
        // SWIM does not carry certificate keys: a peer's stays what its own Hello proved, for
        // the same life of it. A new incarnation may come with a new key: unknown (and the
        // peer no candidate for admission) until its own Hello proves it.
        let same_life = self.peers.get(&id.name).filter(|p| p.info.incarnation == id.incarnation);
        let known = same_life.map(|p| p.info.key);
        // Nor zones: a peer's is what its own Hello said.
        let zone = same_life.map(|p| p.info.zone.clone()).unwrap_or_default();
        let info = PeerInfo { name: id.name.clone(), incarnation: id.incarnation, key: known.unwrap_or([0; 32]), mesh_addr: id.mesh_addr, http_addr: id.http_addr, bump: id.bump, zone };
        match self.peers.get_mut(&id.name) {
            Some(p) => {
                if known.is_none() {
                    p.last_seen = None;
                }
                p.info = info;
            }
            None => {
                self.peers.insert(id.name.clone(), Peer { info, cluster_id: None, last_seen: None, leaving: false, down: Vec::new() });
            }
        }
    }

    /// SWIM's opinion of a member with this name and incarnation, if it has one.
    fn swim_state(&self, name: &str, incarnation: u64) -> Option<foca::State> {
        self.swim.members().filter(|(m, _)| m.name == name && m.incarnation == incarnation).map(|(_, s)| s).next()
    }

    /// Tells the core which voters may be up. It fails requests fast when too few are, so
    /// only voters known to be down are left out: one not heard from yet may well be up. Run
    /// after every input, as rosters and peers change at any time. Also notes when voters
    /// leave the roster (see `admit`).
    fn refresh_alive(&mut self) {
        let Some(roster) = self.node.roster() else { return };
        if roster.version != self.bans_of {
            self.bans_of = roster.version;
            self.mesh.set_banned(roster.banned.iter().map(|b| (b.name.clone(), b.key)));
            self.mesh.set_members(roster.voters.iter().chain(&roster.members).map(|m| m.key));
            if roster.is_banned(&self.me.name, &self.me.key) {
                tracing::error!("an admin removed this node from the cluster: it is banned until an admin re-admits it (POST /api/v1.0/members/approve)");
            }
        }
        let not_down: Vec<NodeId> = roster.voters.iter().filter(|v| !self.known_down(v)).cloned().collect();
        let changed = (roster.voters != self.voters_seen).then(|| (roster.voters.clone(), roster.members.clone()));
        self.node.set_alive(not_down);
        if let Some((voters, members)) = changed {
            let now = Instant::now();
            for gone in self.voters_seen.iter().filter(|v| !voters.contains(v)) {
                self.removed_at.insert(gone.clone(), now);
                if members.contains(gone) {
                    self.demoted_at.insert(gone.clone(), now);
                }
            }
            self.voters_seen = voters;
            while self.removed_at.len() > 64 {
                self.removed_at.pop_first();
            }
            while self.demoted_at.len() > 64 {
                self.demoted_at.pop_first();
            }
        }
    }

    /// Hands the core's output to the outbox, which decides what leaves now and what waits
    /// for the disk thread (back as `Committed`).
    fn pump(&mut self) {
        // A few rounds at most: a delivered reply may make more output; whatever is left
        // then waits for the next wake-up rather than starving the select loop.
        for _ in 0..8 {
            self.refresh_alive();
            for (peer, why) in self.node.take_rejected() {
                let kind = match why {
                    crate::core::Refused::Invalid(_) => "invalid",
                    crate::core::Refused::Unauthorized(_) => "unauthorized",
                    crate::core::Refused::Unproven(_) => "unproven",
                };
                if self.logged_invalid.insert((peer.name.clone(), kind)) {
                    tracing::warn!(peer = %peer, %why, "refused a message from a peer (logged once per peer and kind; see lockmesh_invalid_peer_values_total, lockmesh_unauthorized_peer_messages_total and lockmesh_unproven_rosters_total)");
                }
            }
            let out = self.node.drain();
            if out.is_empty() {
                return;
            }
            let (now, to_disk) = self.outbox.submit(out);
            self.dispatch(now);
            if let Some(batch) = to_disk {
                if self.flush.send(batch).is_err() {
                    tracing::error!("the disk thread is gone; stopping");
                    std::process::exit(1);
                }
                return;
            }
        }
    }

    /// Sends what the outbox released and delivers its replies.
    fn dispatch(&mut self, out: Release) {
        for envelope in out.messages {
            self.send_core(envelope);
        }
        for reply in out.replies {
            self.on_reply(reply);
        }
    }

    fn send_core(&self, envelope: crate::core::Envelope) {
        if self.known_down(&envelope.to) {
            return; // it would only wait for a timeout, holding memory
        }
        match self.peers.get(&envelope.to.name) {
            Some(peer) => self.mesh.send(peer.info.mesh_addr, Some(&peer.info.name), &Frame::Core(envelope)),
            None => tracing::debug!(to = %envelope.to, "no address for a peer; message dropped"),
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Mesh(Inbound { payload: Payload::Datagram(packet), peer, key, .. }) => {
                // SWIM runs among members: a node the roster does not list cannot tell this one
                // that a member is down, or where one is. (A joining node greets by Hello until
                // it is admitted; one with no roster yet listens to anyone.)
                let member = self.node.roster().is_none_or(|r| r.voters.iter().chain(&r.members).any(|m| m.name == peer && m.key == key));
                if member {
                    self.swim.handle_packet(&packet);
                }
            }
            Input::Mesh(inbound) => self.on_frame(inbound),
            Input::Api(ApiCall::Op { key, op, timeout_us, reply }) => {
                let client = self.next_client;
                self.next_client += 1;
                self.pending.insert(client, reply);
                self.node.handle_request(clock::now(), Request { client, key, op, timeout_us });
            }
            Input::Api(ApiCall::Members(reply)) => {
                let _ = reply.send(self.members());
            }
            Input::Api(ApiCall::Roster(reply)) => {
                let _ = reply.send(self.node.roster().cloned());
            }
            Input::Api(ApiCall::Metrics(reply)) => {
                let contention = self.node.local_contention(METRICS_SCAN, METRICS_TOP_SCOPES);
                let limits = &self.mesh.limits;
                let _ = reply.send(NodeMetrics {
                    stats: self.node.stats(),
                    members: self.members(),
                    in_flight: self.node.in_flight(),
                    contention,
                    news_received: self.news_received,
                    handshakes_refused: limits.handshakes_refused.load(std::sync::atomic::Ordering::Relaxed),
                    frames_dropped: limits.frames_dropped.load(std::sync::atomic::Ordering::Relaxed),
                });
            }
            Input::Api(ApiCall::Scopes(reply)) => {
                let _ = reply.send(self.node.local_scopes());
            }
            Input::Api(ApiCall::Candidate(name, key, reply)) => {
                let roster = self.node.roster();
                let found = self
                    .candidates()
                    .map(|p| peer_id(&p.info))
                    .find(|id| id.name == name && key.is_none_or(|k| id.key == k) && !roster.is_some_and(|r| r.is_member(id)));
                let _ = reply.send(found);
            }
            Input::Committed(group) => {
                for batch in &group {
                    self.announce_changes(&batch.writes);
                }
                if let Some(last) = group.last() {
                    let out = self.outbox.durable(last.seq);
                    self.dispatch(out);
                }
            }
        }
    }

    /// Announces scope values this node accepted (now durable). An Accept writes a value and
    /// the promise of its ballot's successor; a Prepare writes only a promise.
    fn announce_changes(&self, writes: &[Write]) {
        for write in writes {
            let Write::Slot(Key::Scope(scope), Slot { promised, accepted: Some(a) }) = write else { continue };
            if *promised == Some(a.ballot.successor()) {
                if let Value::Lock(record) = &a.value {
                    self.changes.announce(scope, record);
                    self.send_news(scope, record);
                }
            }
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        if reply.client == ADMIN_CLIENT {
            self.admin_in_flight = None;
            if let Ok(Answer::Roster(RosterResult::Changed(roster))) = &reply.result {
                tracing::info!(version = roster.version, voters = roster.voters.len(), "roster changed");
                if self.leaving.is_some() && !roster.contains(self.node.id()) {
                    if let Some(tx) = self.leaving.take() {
                        let _ = tx.send(());
                    }
                }
            }
            return;
        }
        tracing::debug!(client = reply.client, key = ?reply.key, result = ?reply.result, agreed = reply.agreed.len(), "reply");
        if let Some(tx) = self.pending.remove(&reply.client) {
            let _ = tx.send(reply);
        }
    }

    fn on_frame(&mut self, inbound: Inbound) {
        let mine = self.node.roster().map(|r| r.cluster_id);
        let Payload::Frame(frame) = inbound.payload else { return };
        match frame {
            Frame::Hello { me, cluster_id, roster_version, peers, leaving, down } => {
                // Anti-entropy: a node that missed a roster change (or was added while it
                // could not hear) pulls the roster from a peer that has a newer one.
                let my_version = self.node.roster().map_or(0, |r| r.version);
                // Before this node belongs to a cluster, the one it was told to join, if any.
                let expected = mine.or(self.config.cluster_id);
                let same_cluster = expected.is_none() || expected == cluster_id;
                // The connection's address, not the claimed one, says whether this is a node
                // the operator named to join through.
                if mine.is_none() && self.config.join.contains(&inbound.remote) && self.seeds.insert((me.name.clone(), me.key)) {
                    self.node.set_seeds(self.seeds.iter().cloned());
                }
                // Given the cluster's id, the node proves what it pulls back to that cluster's
                // first roster, from whoever it comes.
                let trusted = mine.is_some() || self.config.cluster_id.is_some() || self.seeds.contains(&(me.name.clone(), me.key));
                if roster_version > my_version && same_cluster && trusted && !leaving {
                    let pull = crate::core::Envelope {
                        from: self.node.id().clone(),
                        to: peer_id(&me),
                        roster: self.node.roster().map(|r| r.id()),
                        body: crate::core::Body::RosterPull { have: self.node.roster().map(|r| (r.version, r.sweep_done)) },
                    };
                    self.mesh.send(me.mesh_addr, Some(&me.name), &Frame::Core(pull));
                }
                if me.name == self.me.name {
                    return;
                }
                if let (Some(a), Some(b)) = (mine, cluster_id) {
                    if a != b {
                        if self.logged_invalid.insert((me.name.clone(), "another cluster")) {
                            tracing::warn!(peer = %me.name, "peer belongs to another cluster; ignored (logged once per peer)");
                        }
                        // Remembered, so that a voter added here that formed or joined another
                        // cluster meanwhile is removed (`admit`).
                        if let Some(p) = self.peers.get_mut(&me.name).filter(|p| peer_id(&p.info) == peer_id(&me)) {
                            p.cluster_id = cluster_id;
                            p.last_seen = Some(Instant::now());
                        }
                        return;
                    }
                }
                let name = me.name.clone();
                let known = self.peers.get(&name).is_some_and(|p| p.info == me && p.last_seen.is_some());
                let held_down = self.swim_state(&me.name, me.incarnation) == Some(foca::State::Down);
                if (!known || held_down) && !leaving {
                    // First word from this life of the peer, or a peer SWIM holds down that is
                    // plainly up: make SWIM probe it (it then learns it was declared down,
                    // renews its identity and rejoins).
                    self.swim.announce(swim_id(&me));
                }
                // (A report longer than any roster is no report.)
                let down = if down.len() <= 4096 { down } else { Vec::new() };
                self.peers.insert(name, Peer { info: me, cluster_id, last_seen: Some(Instant::now()), leaving, down });
                for p in peers {
                    if p.name != self.me.name && !self.peers.contains_key(&p.name) {
                        self.mesh.send(p.mesh_addr, Some(&p.name), &self.hello(false));
                        self.peers.insert(p.name.clone(), Peer { info: p, cluster_id: None, last_seen: None, leaving: false, down: Vec::new() });
                    }
                }
            }
            Frame::Core(envelope) => {
                if envelope.to != *self.node.id() {
                    return; // meant for another node or another life of this one
                }
                if let Some(peer) = self.peers.get(&inbound.peer) {
                    if let (Some(a), Some(b)) = (mine, peer.cluster_id) {
                        if a != b {
                            return;
                        }
                    }
                }
                self.node.handle_message(clock::now(), envelope);
            }
            Frame::Subscribe { from, scopes } => self.on_subscribe(from, scopes),
            Frame::News { from, scope, last_seq, holders } => self.on_news(from, scope, last_seq, holders),
        }
    }

    fn hello(&self, leaving: bool) -> Frame {
        let peers = self.peers.values().filter(|p| p.last_seen.is_some()).map(|p| p.info.clone()).collect();
        let roster_version = self.node.roster().map_or(0, |r| r.version);
        // Before it belongs to one, the cluster it was told to join: another cluster's members
        // then neither admit it nor send it their roster.
        let cluster_id = self.node.roster().map(|r| r.cluster_id).or(self.config.cluster_id);
        Frame::Hello { me: self.me.clone(), cluster_id, roster_version, peers, leaving, down: self.down_long() }
    }

    /// Hellos: to the join addresses at every tick until this node belongs to a cluster; to
    /// every known peer now and then (SWIM does the frequent work of failure detection).
    fn announce(&self, leaving: bool) {
        let hello = self.hello(leaving);
        let mut sent: Vec<SocketAddr> = Vec::new();
        let to_peers = leaving || self.node.roster().is_none() || self.ticks % 7 == 0;
        let banned = |p: &Peer| self.node.roster().is_some_and(|r| r.is_banned(&p.info.name, &p.info.key));
        for peer in self.peers.values().filter(|p| to_peers && !banned(p)) {
            self.mesh.send(peer.info.mesh_addr, Some(&peer.info.name), &hello);
            sent.push(peer.info.mesh_addr);
        }
        for addr in &self.config.join {
            if !sent.contains(addr) && *addr != self.me.mesh_addr {
                self.mesh.send(*addr, None, &hello);
            }
        }
    }

    /// A voter whose peer said it is leaving, or that SWIM declared down and that has not
    /// greeted us lately (a greeting proves it is up, whatever SWIM concluded under load).
    fn known_down(&self, voter: &NodeId) -> bool {
        if *voter == *self.node.id() {
            return false;
        }
        let peer = self.peers.get(&voter.name).filter(|p| p.info.incarnation == voter.incarnation);
        if peer.is_some_and(|p| p.leaving) {
            return true;
        }
        if peer.is_some_and(Peer::greeted_lately) {
            return false;
        }
        self.swim_state(&voter.name, voter.incarnation) == Some(foca::State::Down)
    }

    /// Peers that may join our cluster: up, greeted us themselves (so their cluster id is
    /// theirs, not gossip), and of our cluster or of none yet.
    fn candidates(&self) -> impl Iterator<Item = &Peer> {
        let ours = self.node.roster().map(|r| r.cluster_id);
        self.alive_peers().filter(move |p| p.last_seen.is_some() && (p.cluster_id.is_none() || p.cluster_id == ours))
    }

    /// Peers that greeted us lately, or that SWIM holds up (alive or suspect).
    fn peer_up(&self, p: &Peer) -> bool {
        if p.leaving {
            return false;
        }
        p.greeted_lately() || matches!(self.swim_state(&p.info.name, p.info.incarnation), Some(foca::State::Alive | foca::State::Suspect))
    }

    fn alive_peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter(|p| self.peer_up(p))
    }

    /// Periodic: gossip, the alive set, bootstrap, admission.
    fn tick(&mut self) {
        self.ticks += 1;
        self.note_up();
        self.subscribe_to_voters();
        self.announce(false);
        let mut alive: Vec<NodeId> = self.candidates().map(|p| peer_id(&p.info)).collect();
        alive.push(self.node.id().clone());
        if self.node.roster().is_none() {
            self.try_bootstrap(alive);
        } else if self.leaving.is_none() {
            self.admit();
        } else if std::mem::take(&mut self.retry_leave) || self.node.roster().is_some_and(|r| !r.contains(self.node.id())) {
            self.leave();
        }
    }

    fn try_bootstrap(&mut self, mut alive: Vec<NodeId>) {
        let set = if self.config.bootstrap {
            vec![self.node.id().clone()]
        } else if let Some(expect) = self.config.bootstrap_expect {
            if alive.len() < expect {
                return;
            }
            if alive.len() > expect {
                // Nodes could pick different sets and each acknowledge one: a deadlock.
                if self.ticks % 30 == 1 {
                    tracing::error!(seen = alive.len(), expect, "more cluster-less nodes than --bootstrap-expect are up; not forming a cluster");
                }
                return;
            }
            alive.sort_by(|a, b| a.name.cmp(&b.name));
            alive.truncate(expect);
            if !alive.contains(self.node.id()) {
                return;
            }
            alive
        } else {
            return;
        };
        if self.bootstrapped_with.as_ref() != Some(&set) {
            tracing::info!(voters = ?set.iter().map(|v| &v.name).collect::<Vec<_>>(), "proposing the first roster");
            if let Err(e) = self.node.bootstrap(clock::now(), set.clone(), self.config.voters) {
                tracing::warn!(error = ?e, "bootstrap refused");
            }
            self.bootstrapped_with = Some(set);
        }
    }

    /// The lowest-named alive voter proposes, one change at a time: reap a member down for
    /// `reap_after`, remove a voter of another cluster, replace a member whose data dir was
    /// wiped or whose certificate has a new key (same name, new identity), add a new node as a
    /// member, else what placement asks for (`core::placement`: promotions and demotions
    /// toward the voter target).
    fn admit(&mut self) {
        let Some(roster) = self.node.roster().cloned() else { return };
        if !roster.sweep_done || self.admin_in_flight.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        let alive: Vec<&Peer> = self.candidates().collect();
        let me = self.node.id().clone();
        let alive_voters = roster.voters.iter().filter(|v| **v == me || alive.iter().any(|p| peer_id(&p.info) == **v));
        if alive_voters.min_by(|a, b| a.name.cmp(&b.name)) != Some(&me) {
            return;
        }
        let mut change = None;
        // A member down for longer than reap_after leaves the roster: a roster ballot, so only
        // a side with a majority can do it.
        let reap_after = Duration::from_secs(self.config.reap_after_secs);
        if let Some(gone) = roster.voters.iter().chain(&roster.members).find(|v| {
            !matches!(self.swim_state(&v.name, v.incarnation), Some(foca::State::Alive) | Some(foca::State::Suspect))
                && self.down_since.get(&(v.name.clone(), v.incarnation)).is_some_and(|t| t.elapsed() >= reap_after)
        }) {
            tracing::warn!(member = %gone, "reaping a member down for longer than reap_after");
            change = Some(RosterChange::Remove(gone.clone()));
        }
        // A voter added here that greets us as a member of another cluster (it formed or joined
        // one before it learnt of this one) will never vote here.
        let foreign = roster.voters.iter().find(|v| {
            self.peers.get(&v.name).is_some_and(|p| peer_id(&p.info) == **v && p.greeted_lately() && p.cluster_id.is_some_and(|c| c != roster.cluster_id))
        });
        if let Some(foreign) = foreign.filter(|_| change.is_none()) {
            tracing::warn!(voter = %foreign, "removing a voter that belongs to another cluster");
            change = Some(RosterChange::Remove(foreign.clone()));
        }
        for peer in alive.iter().filter(|_| change.is_none()) {
            let current = peer_id(&peer.info);
            let listed = || roster.voters.iter().chain(&roster.members);
            if let Some(old) = listed().find(|v| v.name == current.name && **v != current).filter(|_| !roster.is_banned(&current.name, &current.key)) {
                change = Some(RosterChange::Remove(old.clone()));
                break;
            }
            // A member removed (by an admin, or reaped) comes back only once it greets us
            // after the removal: a dead one that looked alive a moment ago never does. A
            // banned one (an admin's removal) not until an admin re-admits it; with
            // `--admission approve`, no new node until an admin approves it.
            let removed_since_seen = self.removed_at.get(&current).is_some_and(|at| peer.last_seen.is_none_or(|seen| seen <= *at));
            let banned = roster.is_banned(&current.name, &current.key);
            let approve = self.config.admission == Admission::Approve;
            if !listed().any(|v| v.name == current.name) && !removed_since_seen && !banned && !approve {
                // A member first; placement promotes it once it has been up a while. (A
                // roster made before voter targets adds voters, as it did then.)
                change = Some(if roster.target == 0 { RosterChange::Add(current) } else { RosterChange::AddMember(current) });
                break;
            }
        }
        if change.is_none() {
            change = self.placement_change(&roster);
        }
        if let Some(change) = change {
            tracing::info!(?change, version = roster.version, "proposing a roster change");
            self.admin(change, roster.version);
        }
    }

    fn admin(&mut self, change: RosterChange, expected_version: u64) {
        self.admin_in_flight = Some(Instant::now());
        let op = Op::Roster(RosterOp::Change { change, expected_version: Some(expected_version) });
        // A removal waits for the voters' vouches for the node to run out (`core::vouch`, 2 s):
        // give it that on top of the request timeout.
        let timeout_us = self.config.request_timeout_ms * 1_000 + 2 * crate::core::Config::default().vouch_us;
        self.node.handle_request(clock::now(), Request { client: ADMIN_CLIENT, key: Key::Roster, op, timeout_us });
    }

    /// Graceful leave: the voters are asked to remove this node (`Node::request_leave`), again
    /// every tick until the installed roster no longer lists it (its Commit comes here too).
    fn leave(&mut self) {
        let Some(roster) = self.node.roster().cloned() else {
            if let Some(tx) = self.leaving.take() {
                let _ = tx.send(());
            }
            return;
        };
        if !roster.contains(self.node.id()) || roster.voters.len() == 1 {
            if let Some(tx) = self.leaving.take() {
                let _ = tx.send(());
            }
            return;
        }
        self.node.request_leave(clock::now());
        self.retry_leave = true;
    }

    fn members(&self) -> MembersView {
        let roster = self.node.roster();
        let voter = |info: &PeerInfo| roster.is_some_and(|r| r.contains(&peer_id(info)));
        let ours = roster.map(|r| r.cluster_id);
        let role = |info: &PeerInfo, greeted: Option<&Peer>| {
            let id = peer_id(info);
            match roster {
                Some(r) if r.contains(&id) => "voter",
                Some(r) if r.is_member(&id) => "member",
                Some(r) if r.is_banned(&id.name, &id.key) => "banned",
                _ if greeted.is_some_and(|p| p.last_seen.is_some() && self.peer_up(p) && (p.cluster_id.is_none() || p.cluster_id == ours)) => "pending",
                _ => "none",
            }
        };
        let mut members = vec![MemberView {
            name: self.me.name.clone(),
            mesh_addr: self.me.mesh_addr,
            http_addr: self.me.http_addr,
            state: "alive",
            voter: voter(&self.me),
            role: match role(&self.me, None) {
                "none" if roster.is_none() => "pending",
                r => r,
            },
            key: hex(&self.me.key),
            zone: self.me.zone.clone(),
            alive_for_secs: Some(self.started.elapsed().as_secs()),
        }];
        for p in self.peers.values() {
            let state = if p.leaving {
                "left"
            } else {
                match self.swim_state(&p.info.name, p.info.incarnation) {
                    Some(foca::State::Alive) => "alive",
                    Some(foca::State::Suspect) => "suspect",
                    Some(foca::State::Down) => "down",
                    None if self.peer_up(p) => "alive",
                    None => "down",
                }
            };
            members.push(MemberView {
                name: p.info.name.clone(),
                mesh_addr: p.info.mesh_addr,
                http_addr: p.info.http_addr,
                state,
                voter: voter(&p.info),
                role: role(&p.info, Some(p)),
                key: hex(&p.info.key),
                zone: if crate::certs::valid_node_name(&p.info.zone) { p.info.zone.clone() } else { String::new() },
                alive_for_secs: self.up_since.get(&(p.info.name.clone(), p.info.incarnation)).filter(|_| self.peer_up(p)).map(|t| t.elapsed().as_secs()),
            });
        }
        MembersView {
            members,
            roster_version: roster.map_or(0, |r| r.version),
            roster_size: roster.map_or(0, |r| r.voters.len()),
            quorum_size: roster.map_or(0, |r| r.majority()),
            voter_target: roster.map_or(0, |r| r.voter_target()),
            sweep_done: roster.is_some_and(|r| r.sweep_done),
            cluster_id: ours.map(|id| format!("{id:032x}")),
            admission: match self.config.admission {
                Admission::Auto => "auto",
                Admission::Approve => "approve",
            },
            banned: roster.map_or_else(Vec::new, |r| r.banned.iter().map(|b| BanView { name: b.name.clone(), key: hex(&b.key) }).collect()),
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
