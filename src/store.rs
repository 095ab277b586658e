//! Durable voter state in redb under `--data-dir`: one commit per group of output batches,
//! synced before any message or reply of those batches leaves (the core's output contract).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::core::{Durable, Key, Write};

const SLOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("slots");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The roster chain: every installed roster with its proof, by position from the first.
const CHAIN: TableDefinition<u64, &[u8]> = TableDefinition::new("chain");
/// Most bytes a stored value may decode from; anything bigger is corruption.
const DECODE_LIMIT: usize = 64 << 20;
/// The layout of what this build stores (the records' and rosters' bincode encoding). Every
/// data dir says which it was written in; a build refuses one of another format with a clear
/// error instead of misreading it. Bump it with any change to `Durable`, `Slot`, `Value` or
/// anything they contain.
pub const FORMAT: u32 = 5;
/// redb's own page cache (its default is 1 GiB). Voters keep every value they need in
/// memory and only write here; the B-tree pages an insert walks are read back through the
/// kernel's page cache when this one misses. A small cache keeps a node with a million
/// scopes from holding its whole file in memory a second time.
const CACHE_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data dir {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("store: {0}")]
    Db(String),
    #[error("store holds an undecodable {0}: {1}")]
    Decode(&'static str, String),
    #[error(
        "data dir {dir}: written {written}, and this build reads data format {FORMAT}: run the build that wrote it, or start this node on an empty data dir (it then joins as a new member)",
        dir = .0.display(),
        written = .1.map_or("by a build from before data formats were numbered".to_string(), |f| format!("in data format {f}"))
    )]
    Format(PathBuf, Option<u32>),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, config()).map_err(db_err)
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|e| StoreError::Decode(what, e.to_string()))
}

/// A node's data dir: its incarnation (made with the dir) and its voter state.
pub struct Store {
    db: Database,
}

pub struct Opened {
    pub store: Store,
    pub incarnation: u64,
    pub durable: Durable,
}

impl Store {
    /// Opens (or creates) the store in `dir`. A new data dir gets a random incarnation.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.to_path_buf(), e))?;
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(dir.join("lockmesh.redb")).map_err(db_err)?;
        let incarnation = {
            let txn = db.begin_write().map_err(db_err)?;
            let incarnation = {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                let existing = meta.get("incarnation").map_err(db_err)?.map(|v| decode::<u64>("incarnation", v.value()));
                let format = meta.get("format").map_err(db_err)?.map(|v| decode::<u32>("format", v.value()));
                match existing {
                    Some(found) => {
                        let format = format.transpose()?;
                        if format == Some(v4::FORMAT) {
                            v4::migrate(&txn)?;
                            meta.insert("format", encode(&FORMAT)?.as_slice()).map_err(db_err)?;
                        } else if format != Some(FORMAT) {
                            return Err(StoreError::Format(dir.to_path_buf(), format));
                        }
                        found?
                    }
                    None => {
                        let mut bytes = [0u8; 8];
                        getrandom::fill(&mut bytes).map_err(db_err)?;
                        let fresh = u64::from_le_bytes(bytes) | 1;
                        meta.insert("incarnation", encode(&fresh)?.as_slice()).map_err(db_err)?;
                        meta.insert("format", encode(&FORMAT)?.as_slice()).map_err(db_err)?;
                        fresh
                    }
                }
            };
            txn.open_table(SLOTS).map_err(db_err)?;
            txn.open_table(CHAIN).map_err(db_err)?;
            txn.commit().map_err(db_err)?;
            incarnation
        };
        let store = Store { db };
        let durable = store.load()?;
        Ok(Opened { store, incarnation, durable })
    }

    fn load(&self) -> Result<Durable, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let get = |name: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta.get(name).map_err(db_err)?.map(|v| v.value().to_vec()))
        };
        let mut durable = Durable::default();
        let chain = txn.open_table(CHAIN).map_err(db_err)?;
        for entry in chain.iter().map_err(db_err)? {
            let (_, link) = entry.map_err(db_err)?;
            durable.chain.push(decode("roster link", link.value())?);
        }
        if let Some(bytes) = get("round_reserved")? {
            durable.round_reserved = decode("round_reserved", &bytes)?;
        }
        if let Some(bytes) = get("bootstrap_ack")? {
            durable.bootstrap_ack = Some(decode("bootstrap_ack", &bytes)?);
        }
        let slots = txn.open_table(SLOTS).map_err(db_err)?;
        for entry in slots.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let key: Key = decode("key", key.value())?;
            durable.slots.insert(key, decode("slot", value.value())?);
        }
        Ok(durable)
    }

    /// Persists writes in one transaction and syncs it (group commit: callers pass every
    /// write of every batch waiting).
    pub fn commit<'a>(&self, writes: impl IntoIterator<Item = &'a Write>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut slots = txn.open_table(SLOTS).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut chain = txn.open_table(CHAIN).map_err(db_err)?;
            for write in writes {
                match write {
                    Write::Slot(key, slot) => {
                        slots.insert(encode(key)?.as_slice(), encode(slot)?.as_slice()).map_err(db_err)?;
                    }
                    Write::Link(link) => {
                        let at = chain.len().map_err(db_err)?;
                        chain.insert(at, encode(link)?.as_slice()).map_err(db_err)?;
                    }
                    Write::RoundReserved(round) => {
                        let current: u64 = match meta.get("round_reserved").map_err(db_err)? {
                            Some(v) => decode("round_reserved", v.value())?,
                            None => 0,
                        };
                        meta.insert("round_reserved", encode(&current.max(*round))?.as_slice()).map_err(db_err)?;
                    }
                    Write::BootstrapAck(id) => {
                        meta.insert("bootstrap_ack", encode(id)?.as_slice()).map_err(db_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(db_err)
    }
}

/// Data format 4, the last before voter targets: rosters had no `target`. A data dir of that
/// format is rewritten as this one when it is opened, every roster with target zero: it
/// encodes, hence verifies, as it did, and the cluster keeps its voters (placement leaves a
/// roster without a target alone until an admin sets one).
mod v4 {
    use redb::{ReadableTable, WriteTransaction};
    use serde::{Deserialize, Serialize};

    use super::{db_err, decode, encode, StoreError, CHAIN, SLOTS};
    use crate::core::message::{AcceptedValue as Accepted5, Ballot};
    use crate::core::{acceptor, Ban, Key, LockRecord, NodeId, Proof, RosterId};

    pub const FORMAT: u32 = 4;

    #[derive(Serialize, Deserialize)]
    pub struct Roster {
        pub cluster_id: u128,
        pub version: u64,
        pub voters: Vec<NodeId>,
        pub members: Vec<NodeId>,
        pub banned: Vec<Ban>,
        pub sweep_done: bool,
        pub round_floor: u64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Link {
        pub roster: Roster,
        pub proof: Proof,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Value {
        Lock(LockRecord),
        Roster(Roster),
    }

    #[derive(Serialize, Deserialize)]
    pub struct AcceptedValue {
        pub ballot: Ballot,
        pub value: Value,
        pub roster: Option<RosterId>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Slot {
        pub promised: Option<Ballot>,
        pub accepted: Option<AcceptedValue>,
    }

    impl From<Roster> for crate::core::Roster {
        fn from(r: Roster) -> crate::core::Roster {
            let Roster { cluster_id, version, voters, members, banned, sweep_done, round_floor } = r;
            crate::core::Roster { cluster_id, version, voters, members, banned, target: 0, sweep_done, round_floor }
        }
    }

    /// Rewrites the chain and the roster register's slot (the only places rosters are kept);
    /// scope slots hold lock records, whose encoding did not change.
    pub fn migrate(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut chain = txn.open_table(CHAIN).map_err(db_err)?;
        let mut links = Vec::new();
        for entry in chain.iter().map_err(db_err)? {
            let (at, bytes) = entry.map_err(db_err)?;
            let old: Link = decode("roster link (data format 4)", bytes.value())?;
            links.push((at.value(), crate::core::Link { roster: old.roster.into(), proof: old.proof }));
        }
        for (at, link) in links {
            chain.insert(at, encode(&link)?.as_slice()).map_err(db_err)?;
        }
        let mut slots = txn.open_table(SLOTS).map_err(db_err)?;
        let key = encode(&Key::Roster)?;
        let old = slots.get(key.as_slice()).map_err(db_err)?.map(|v| decode::<Slot>("roster slot (data format 4)", v.value())).transpose()?;
        if let Some(old) = old {
            let accepted = old.accepted.map(|a| Accepted5 {
                ballot: a.ballot,
                value: match a.value {
                    Value::Lock(record) => crate::core::Value::Lock(record),
                    Value::Roster(r) => crate::core::Value::Roster(r.into()),
                },
                roster: a.roster,
            });
            let slot = acceptor::Slot { promised: old.promised, accepted };
            slots.insert(key.as_slice(), encode(&slot)?.as_slice()).map_err(db_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::acceptor::Slot;
    use crate::core::message::Ballot;
    use crate::core::{Link, NodeId, Proof, Roster, RosterChange};

    #[test]
    fn writes_survive_a_reopen_and_the_incarnation_stays() {
        let dir = std::env::temp_dir().join(format!("lockmesh-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = Store::open(&dir).unwrap();
        let roster = Roster::first(vec![NodeId::new("a", first.incarnation, [1; 32])], 5);
        let next = roster.changed(&RosterChange::AddMember(NodeId::new("b", 2, [2; 32]))).unwrap();
        let link = |roster: &Roster| Link { roster: roster.clone(), proof: Proof { ballot: Ballot::BOOTSTRAP, under: roster.id(), signatures: Vec::new() } };
        let key = Key::Scope("s".into());
        let writes = vec![
            Write::Link(link(&roster)),
            Write::Link(link(&next)),
            Write::RoundReserved(1024),
            Write::RoundReserved(5),
            Write::Slot(key.clone(), Slot::default()),
        ];
        first.store.commit(&writes).unwrap();
        let incarnation = first.incarnation;
        drop(first);
        let again = Store::open(&dir).unwrap();
        assert_eq!(again.incarnation, incarnation);
        assert_eq!(again.durable.chain, vec![link(&roster), link(&next)]);
        assert_eq!(again.durable.roster(), Some(&next));
        assert_eq!(again.durable.round_reserved, 1024, "the reservation never goes back");
        assert!(again.durable.slots.contains_key(&key));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn set_format(dir: &Path, format: Option<u32>) {
        let db = Database::create(dir.join("lockmesh.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            match format {
                Some(f) => meta.insert("format", encode(&f).unwrap().as_slice()).map(drop).unwrap(),
                None => meta.remove("format").map(drop).unwrap(),
            }
        }
        txn.commit().unwrap();
    }

    /// A data dir of format 4 (before voter targets) is rewritten as this format when opened:
    /// its rosters get target zero, encode as before (so their signatures and the cluster id
    /// still hold) and the roster register's accepted value survives.
    #[test]
    fn a_data_dir_of_format_4_is_migrated_with_its_rosters_unchanged() {
        let dir = std::env::temp_dir().join(format!("lockmesh-store-v4-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        drop(Store::open(&dir).unwrap());
        let voters = vec![NodeId::new("a", 1, [1; 32]), NodeId::new("b", 2, [2; 32]), NodeId::new("c", 3, [3; 32])];
        let first = Roster::first(voters.clone(), 0);
        let old = |r: &Roster| v4::Roster {
            cluster_id: r.cluster_id,
            version: r.version,
            voters: r.voters.clone(),
            members: r.members.clone(),
            banned: r.banned.clone(),
            sweep_done: r.sweep_done,
            round_floor: r.round_floor,
        };
        let proof = Proof { ballot: Ballot::BOOTSTRAP, under: first.id(), signatures: Vec::new() };
        let next = first.changed(&RosterChange::AddMember(NodeId::new("d", 4, [4; 32]))).unwrap();
        let ballot = Ballot { round: 7, proposer: 1 };
        {
            let db = Database::create(dir.join("lockmesh.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut chain = txn.open_table(CHAIN).unwrap();
                chain.insert(0, encode(&v4::Link { roster: old(&first), proof: proof.clone() }).unwrap().as_slice()).unwrap();
                let mut slots = txn.open_table(SLOTS).unwrap();
                let slot = v4::Slot { promised: Some(ballot), accepted: Some(v4::AcceptedValue { ballot, value: v4::Value::Roster(old(&next)), roster: Some(first.id()) }) };
                slots.insert(encode(&Key::Roster).unwrap().as_slice(), encode(&slot).unwrap().as_slice()).unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("format", encode(&4u32).unwrap().as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let opened = Store::open(&dir).expect("a format 4 data dir is migrated");
        assert_eq!(opened.durable.chain, vec![Link { roster: first.clone(), proof }]);
        let migrated = opened.durable.roster().unwrap();
        assert_eq!(migrated.target, 0);
        assert_eq!(migrated.voter_target(), 3, "the cluster keeps its voters");
        assert_eq!(*migrated, Roster::first(voters, 0), "a first roster without a target is what it was (its cluster id too)");
        let slot = &opened.durable.slots[&Key::Roster];
        assert_eq!(slot.accepted.as_ref().map(|a| &a.value), Some(&crate::core::Value::Roster(next)));
        drop(opened);
        assert!(Store::open(&dir).is_ok(), "and stays readable as this format");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_data_dir_of_another_format_is_refused_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("lockmesh-store-format-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        drop(Store::open(&dir).unwrap());
        set_format(&dir, Some(FORMAT + 1));
        let e = Store::open(&dir).err().expect("refused").to_string();
        assert!(e.contains(&format!("data format {}", FORMAT + 1)) && e.contains(&format!("reads data format {FORMAT}")), "{e}");
        // A dir from before formats were numbered has none.
        set_format(&dir, None);
        let e = Store::open(&dir).err().expect("refused").to_string();
        assert!(e.contains("before data formats were numbered") && !e.contains('\n'), "{e}");
        set_format(&dir, Some(FORMAT));
        assert!(Store::open(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
