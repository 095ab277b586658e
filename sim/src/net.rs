//! The simulated network between nodes (and clients): loss, duplication, delay, reordering,
//! and partitions as a set of cut directed links (and of cut client-node pairs).

use std::collections::BTreeSet;

use lockmesh_core::rng::Rng;

/// How the network misbehaves during the fault phase of one seed.
#[derive(Clone, Debug)]
pub struct NetFaults {
    pub drop: f64,
    pub duplicate: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    /// Chance of a much longer delay, which reorders messages.
    pub spike: f64,
    pub spike_max_us: u64,
}

impl NetFaults {
    /// A healed network: no loss, short delays.
    pub fn calm() -> NetFaults {
        NetFaults { drop: 0.0, duplicate: 0.0, delay_min_us: 100, delay_max_us: 1_000, spike: 0.0, spike_max_us: 0 }
    }
}

#[derive(Clone, Debug)]
pub struct Net {
    pub faults: NetFaults,
    /// Directed links (from, to) that drop everything.
    pub cut: BTreeSet<(usize, usize)>,
    /// (client, node) pairs that cannot reach each other, either way: a client on one side
    /// of a partition reaches only the nodes on its side.
    pub client_cut: BTreeSet<(usize, usize)>,
}

impl Net {
    pub fn new(faults: NetFaults) -> Net {
        Net { faults, cut: BTreeSet::new(), client_cut: BTreeSet::new() }
    }

    /// Delivery delays for one message from `from` to `to`: none if lost, two if duplicated.
    pub fn deliveries(&self, rng: &mut Rng, from: usize, to: usize) -> Vec<u64> {
        if self.cut.contains(&(from, to)) || rng.chance(self.faults.drop) {
            return Vec::new();
        }
        let copies = if rng.chance(self.faults.duplicate) { 2 } else { 1 };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    /// Delay of a message between client `client` and node `node` (either way): none if
    /// lost or if the two are cut off from each other.
    pub fn client_delivery(&self, rng: &mut Rng, client: usize, node: usize) -> Option<u64> {
        if self.client_cut.contains(&(client, node)) || rng.chance(self.faults.drop) {
            return None;
        }
        Some(self.delay(rng))
    }

    fn delay(&self, rng: &mut Rng) -> u64 {
        if rng.chance(self.faults.spike) {
            rng.between(self.faults.delay_max_us, self.faults.spike_max_us.max(self.faults.delay_max_us))
        } else {
            rng.between(self.faults.delay_min_us, self.faults.delay_max_us)
        }
    }

    /// Heals every partition, between nodes and between clients and nodes.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.client_cut.clear();
    }

    pub fn reachable(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// Cuts every link between the two groups, both ways.
    pub fn split(&mut self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }
}
