//! The stat cache (object name -> metadata, or "missing") and the per-directory type cache
//! (child name -> file / directory / missing), with TTLs on the emulator's [`Clock`] so tests
//! can advance time instead of waiting (Cloud Storage FUSE docs/semantics.md, "Stat caching"
//! and "Type caching").

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::options::Ttl;
use crate::emulator::base::Clock;

/// What an object is, as far as the file system cares.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjMeta {
    /// Object name.
    pub name: String,
    /// Generation.
    pub generation: i64,
    /// Metageneration.
    pub metageneration: i64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (`gcsfuse_mtime` metadata, else `updated`).
    pub mtime: DateTime<Utc>,
    /// The target when the object is a symlink.
    pub symlink: Option<SymlinkTarget>,
}

/// Where a symlink keeps its target (docs/semantics.md, "Symlink inodes").
#[derive(Debug, Clone, PartialEq)]
pub enum SymlinkTarget {
    /// In the `gcsfuse_symlink_target` metadata key.
    Metadata(String),
    /// In the object's content (`goog-reserved-file-is-symlink=true` without the legacy key).
    Content,
}

/// The kind of a directory child remembered by the type cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildType {
    /// A regular file or symlink object.
    File,
    /// A directory backed by a placeholder object.
    ExplicitDir,
    /// A directory only implied by names below it.
    ImplicitDir,
    /// Looked up and not found (only with enable-nonexistent-type-cache).
    Nonexistent,
}

fn expiry(clock: &Clock, ttl: Ttl) -> Option<DateTime<Utc>> {
    ttl.map(|d| clock.now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

fn disabled(ttl: Ttl) -> bool {
    ttl == Some(Duration::ZERO)
}

/// A bounded map whose entries expire on the clock; eviction drops the oldest insert.
#[derive(Debug)]
struct TtlMap<V> {
    entries: HashMap<String, (Option<DateTime<Utc>>, u64, V)>,
    order: BTreeMap<u64, String>,
    seq: u64,
    capacity: Option<u64>,
}

impl<V: Clone> TtlMap<V> {
    fn new(capacity: Option<u64>) -> Self {
        TtlMap {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            capacity,
        }
    }

    fn get(&mut self, now: DateTime<Utc>, key: &str) -> Option<V> {
        let (exp, seq, v) = self.entries.get(key)?;
        if exp.is_some_and(|e| e <= now) {
            let seq = *seq;
            self.entries.remove(key);
            self.order.remove(&seq);
            return None;
        }
        Some(v.clone())
    }

    fn insert(&mut self, exp: Option<DateTime<Utc>>, key: &str, v: V) {
        if self.capacity == Some(0) {
            return;
        }
        self.remove(key);
        self.seq += 1;
        self.entries.insert(key.to_string(), (exp, self.seq, v));
        self.order.insert(self.seq, key.to_string());
        while self.capacity.is_some_and(|c| self.entries.len() as u64 > c) {
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&k);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, seq, _)) = self.entries.remove(key) {
            self.order.remove(&seq);
        }
    }
}

/// Stat and type caches of one mount.
#[derive(Debug)]
pub struct Caches {
    clock: Clock,
    ttl: Ttl,
    negative_ttl: Ttl,
    nonexistent_types: bool,
    type_capacity: Option<u64>,
    stat: TtlMap<Option<ObjMeta>>,
    types: HashMap<String, TtlMap<ChildType>>,
}

/// A stat-cache answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Stat {
    /// Not cached: ask Cloud Storage.
    Miss,
    /// Cached as missing (negative entry).
    Missing,
    /// Cached metadata.
    Found(ObjMeta),
}

impl Caches {
    /// Caches with the mount's TTLs and capacities.
    pub fn new(
        clock: Clock,
        ttl: Ttl,
        negative_ttl: Ttl,
        stat_capacity: Option<u64>,
        type_capacity: Option<u64>,
        nonexistent_types: bool,
    ) -> Self {
        Caches {
            clock,
            ttl,
            negative_ttl,
            nonexistent_types,
            type_capacity,
            stat: TtlMap::new(stat_capacity),
            types: HashMap::new(),
        }
    }

    /// The cached state of object `name`.
    pub fn stat(&mut self, name: &str) -> Stat {
        match self.stat.get(self.clock.now(), name) {
            None => Stat::Miss,
            Some(None) => Stat::Missing,
            Some(Some(m)) => Stat::Found(m),
        }
    }

    /// Remembers object `name` as `meta` (`None` = missing, kept for the negative TTL).
    pub fn put_stat(&mut self, name: &str, meta: Option<ObjMeta>) {
        let ttl = if meta.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        if disabled(ttl) || disabled(self.ttl) {
            self.stat.remove(name);
            return;
        }
        let exp = expiry(&self.clock, ttl);
        self.stat.insert(exp, name, meta);
    }

    /// Forgets what is known about object `name` (after this mount changed it).
    pub fn forget_stat(&mut self, name: &str) {
        self.stat.remove(name);
    }

    /// The cached type of child `child` of directory `dir` (object prefix).
    pub fn child_type(&mut self, dir: &str, child: &str) -> Option<ChildType> {
        let now = self.clock.now();
        self.types.get_mut(dir)?.get(now, child)
    }

    /// Remembers the type of a child; `Nonexistent` only when the mount asks for it.
    pub fn put_child_type(&mut self, dir: &str, child: &str, t: ChildType) {
        if disabled(self.ttl) || (t == ChildType::Nonexistent && !self.nonexistent_types) {
            return;
        }
        let exp = expiry(&self.clock, self.ttl);
        let cap = self.type_capacity;
        self.types
            .entry(dir.to_string())
            .or_insert_with(|| TtlMap::new(cap))
            .insert(exp, child, t);
    }

    /// Forgets the type of a child.
    pub fn forget_child_type(&mut self, dir: &str, child: &str) {
        if let Some(m) = self.types.get_mut(dir) {
            m.remove(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, g: i64) -> ObjMeta {
        ObjMeta {
            name: name.into(),
            generation: g,
            metageneration: 1,
            size: 1,
            mtime: DateTime::from_timestamp(0, 0).unwrap(),
            symlink: None,
        }
    }

    /// docs/semantics.md "Stat caching": positive entries live for the TTL, negative ones
    /// for negative-ttl-secs; the clock is the emulator's, so advancing it expires them.
    #[test]
    fn entries_expire_on_the_emulator_clock() {
        let clock = Clock::new();
        let mut c = Caches::new(
            clock.clone(),
            Some(Duration::from_secs(60)),
            Some(Duration::from_secs(5)),
            Some(100),
            Some(100),
            false,
        );
        c.put_stat("a", Some(meta("a", 1)));
        c.put_stat("b", None);
        assert_eq!(c.stat("a"), Stat::Found(meta("a", 1)));
        assert_eq!(c.stat("b"), Stat::Missing);
        clock.advance(Duration::from_secs(6));
        assert_eq!(c.stat("b"), Stat::Miss);
        assert!(matches!(c.stat("a"), Stat::Found(_)));
        clock.advance(Duration::from_secs(60));
        assert_eq!(c.stat("a"), Stat::Miss);
    }

    #[test]
    fn zero_ttl_disables_and_capacity_evicts_the_oldest() {
        let clock = Clock::new();
        let mut off = Caches::new(clock.clone(), Some(Duration::ZERO), None, None, None, true);
        off.put_stat("a", Some(meta("a", 1)));
        off.put_child_type("", "a", ChildType::File);
        assert_eq!(off.stat("a"), Stat::Miss);
        assert_eq!(off.child_type("", "a"), None);
        let mut small = Caches::new(clock, None, None, Some(2), Some(1), false);
        small.put_stat("a", None);
        small.put_stat("b", None);
        small.put_stat("c", None);
        assert_eq!(small.stat("a"), Stat::Miss);
        assert_eq!(small.stat("c"), Stat::Missing);
        small.put_child_type("d/", "x", ChildType::File);
        small.put_child_type("d/", "y", ChildType::ExplicitDir);
        small.put_child_type("d/", "z", ChildType::Nonexistent);
        assert_eq!(small.child_type("d/", "x"), None);
        assert_eq!(small.child_type("d/", "y"), Some(ChildType::ExplicitDir));
        assert_eq!(small.child_type("d/", "z"), None);
    }
}
