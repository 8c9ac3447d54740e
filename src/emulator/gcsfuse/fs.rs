//! The file system: a `fuser::Filesystem` that answers every kernel request with Cloud Storage
//! JSON API calls, following Cloud Storage FUSE's documented semantics (GoogleCloudPlatform/
//! gcsfuse `docs/semantics.md`; the section is named at each rule).
//!
//! Twin choices, said once here:
//! - The kernel is told to cache nothing (entry and attribute TTL 0): the stat and type caches
//!   live here on the emulator's clock, so tests advance the clock instead of sleeping.
//!   Cloud Storage FUSE gives the kernel the same TTL as its own caches.
//! - Staged writes live in an unlinked temp file of the emulator host, and their size is
//!   charged to the task's memory [`Budget`] (Cloud Run stages them in the instance's memory).
//! - Concurrent writers from different mounts: the last close wins (Cloud Run's jobs page,
//!   "Limitations"); no generation precondition is put on uploads.
//! - Content types are not guessed from file extensions.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use futures::StreamExt;

use super::Budget;
use super::cache::{Caches, ChildType, ObjMeta, Stat, SymlinkTarget};
use super::options::MountOptions;
use crate::gcp::storage::{ListOptions, Object, StorageClient, StorageError, WriteOptions};

/// Custom metadata key of a file's mtime (docs/semantics.md, "File inodes", Modifications).
pub const MTIME_KEY: &str = "gcsfuse_mtime";
/// Legacy symlink metadata key holding the target (docs/semantics.md, "Symlink inodes").
pub const SYMLINK_TARGET_KEY: &str = "gcsfuse_symlink_target";
/// Standard symlink marker key (docs/semantics.md, "Symlink inodes", v3.9.0 onwards).
pub const SYMLINK_MARKER_KEY: &str = "goog-reserved-file-is-symlink";
/// Suffix of the file half of a conflicting `foo` / `foo/` pair (docs/semantics.md,
/// "Name conflicts").
pub const CONFLICT_SUFFIX: &str = "\n";
/// Bytes of a staged file read from its temp file at a time while it is uploaded.
const READ_CHUNK: u64 = 1024 * 1024;
/// What the kernel may cache (nothing: see the module docs).
const KERNEL_TTL: Duration = Duration::ZERO;

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn storage_errno(e: &StorageError) -> Errno {
    match e.status() {
        Some(404) => errno(libc::ENOENT),
        Some(412) => errno(libc::ESTALE),
        Some(401) | Some(403) => errno(libc::EACCES),
        _ => errno(libc::EIO),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// A file's content staged on this side until close or fsync.
struct Staged {
    file: File,
    len: u64,
    charged: u64,
    dirty: bool,
    mtime: DateTime<Utc>,
    /// Replaced by a later staging (after an upload); writers must fetch the current one.
    retired: bool,
}

struct Node {
    /// Object name: directories end with `/` (the root is the mount prefix).
    name: String,
    kind: Kind,
    /// The backing object's state, if there is one.
    meta: Option<ObjMeta>,
    lookups: u64,
    open: u32,
    /// Created by this mount and not uploaded yet.
    local: bool,
    staged: Option<Arc<Mutex<Staged>>>,
}

enum Handle {
    File {
        buf: Option<(u64, Bytes)>,
        /// Held through a read, so reads of one handle take turns on its response (gcsfuse's
        /// reader mutex, `rr.mu`).
        reader: Arc<Mutex<Option<Reader>>>,
    },
    Dir {
        entries: Vec<(u64, FileType, OsString)>,
    },
}

/// Bytes one reader asks Cloud Storage for at most: gcsfuse's `sequential-read-size-mb`
/// (default 200, `cfg/params.yaml`; `internal/gcsx/random_reader.go`, `getEndOffset`).
const SEQUENTIAL_READ: u64 = 200 * 1024 * 1024;

/// How far ahead of its response a read may start and still use it, the bytes between
/// discarded (gcsfuse `maxReadSize`, 8 MiB, in `skipBytes`: the kernel's reads of one file
/// arrive out of order across threads).
const SKIP_MAX: u64 = 8 * 1024 * 1024;

/// The last [`READ_WINDOW`] bytes a handle received, `got` (from offset `from`) appended to
/// the previous window when it follows on from it: a kernel read that arrives after a later
/// one (reads of one file run on several threads) is served from here.
fn recent_window(prev: Option<(u64, Bytes)>, from: u64, got: Vec<u8>) -> (u64, Bytes) {
    let mut all = match prev {
        Some((start, b)) if start + b.len() as u64 == from => {
            let mut v = b.to_vec();
            v.extend_from_slice(&got);
            (start, v)
        }
        _ => (from, got),
    };
    let excess = all.1.len().saturating_sub(READ_WINDOW);
    all.1.drain(..excess);
    (all.0 + excess as u64, Bytes::from(all.1))
}

/// Bytes a file handle keeps of what it last received (Cloud Run's jobs page, "Memory
/// requirements": a 1 MiB array for every file being read).
const READ_WINDOW: usize = 1024 * 1024;

/// A ranged download a file handle keeps open across kernel reads, as gcsfuse's reader does:
/// a read that starts where the last one ended takes its bytes from the same response instead
/// of asking again (`internal/gcsx/random_reader.go`: "Sequential reads will simply sip from
/// the fire house with each call to ReadAt").
struct Reader {
    /// Offset of `pending`'s first byte: where the next sequential read starts.
    pos: u64,
    /// Bytes already received and not yet read.
    pending: Bytes,
    /// The rest of the response.
    stream: crate::gcp::storage::StorageStream,
}

struct State {
    nodes: HashMap<u64, Node>,
    by_name: HashMap<String, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

/// What a child name resolves to.
enum Found {
    Dir(Option<ObjMeta>),
    File(ObjMeta),
    Local(u64),
}

/// One mounted bucket (or `only-dir` prefix of it).
pub struct GcsFs {
    client: StorageClient,
    rt: tokio::runtime::Handle,
    /// Keeps the runtime behind `rt` alive while mounted.
    _rt_owner: Arc<dyn std::any::Any + Send + Sync>,
    bucket: String,
    opts: MountOptions,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
    budget: Arc<Budget>,
    state: Mutex<State>,
    caches: Mutex<Caches>,
    /// Storage API calls made, by kind (tests and reports read them).
    pub calls: Arc<CallCounts>,
}

/// Counts of the Storage API calls a mount made.
#[derive(Debug, Default)]
pub struct CallCounts {
    /// objects.get (metadata).
    pub stat: AtomicU64,
    /// objects.list.
    pub list: AtomicU64,
    /// Media reads.
    pub read: AtomicU64,
    /// Uploads, rewrites, patches and deletes.
    pub write: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_mtime(o: &Object) -> DateTime<Utc> {
    o.metadata
        .get(MTIME_KEY)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
        .or(o.updated)
        .or(o.time_created)
        .unwrap_or_else(Utc::now)
}

/// The file system's view of an object resource.
pub fn meta_of(o: &Object) -> ObjMeta {
    let symlink = if let Some(t) = o.metadata.get(SYMLINK_TARGET_KEY) {
        Some(SymlinkTarget::Metadata(t.clone()))
    } else if o.metadata.get(SYMLINK_MARKER_KEY).map(String::as_str) == Some("true") {
        Some(SymlinkTarget::Content)
    } else {
        None
    };
    ObjMeta {
        name: o.name.clone(),
        generation: o.generation,
        metageneration: o.metageneration,
        size: o.size,
        mtime: parse_mtime(o),
        symlink,
    }
}

fn base_name(full: &str) -> &str {
    let t = full.strip_suffix('/').unwrap_or(full);
    t.rsplit('/').next().unwrap_or(t)
}

/// A name the kernel can show: no empty, `.`, `..` or `\n`-bearing components
/// (docs/semantics.md, "Unsupported Path names").
fn showable(base: &str) -> bool {
    !base.is_empty() && base != "." && base != ".." && !base.contains('\n')
}

fn child_str(name: &OsStr) -> Result<&str, Errno> {
    let s = std::str::from_utf8(name.as_bytes()).map_err(|_| errno(libc::EINVAL))?;
    if s.contains('/') {
        return Err(errno(libc::EINVAL));
    }
    Ok(s)
}

/// A name this mount may create: Cloud Storage names carry no CR or LF.
fn creatable(name: &str) -> Result<(), Errno> {
    if name.contains('\n') || name.contains('\r') {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}

fn to_system(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

impl GcsFs {
    /// A file system over `bucket` through `client`, running its calls on `rt`.
    pub fn new(
        client: StorageClient,
        (rt, rt_owner): (tokio::runtime::Handle, Arc<dyn std::any::Any + Send + Sync>),
        bucket: &str,
        opts: MountOptions,
        clock: crate::emulator::base::Clock,
        budget: Arc<Budget>,
    ) -> Self {
        let caches = Caches::new(
            clock,
            opts.ttl,
            opts.negative_ttl,
            opts.stat_cache_entries,
            opts.type_cache_entries,
            opts.nonexistent_type_cache,
        );
        let root = opts.root_prefix();
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                name: root.clone(),
                kind: Kind::Dir,
                meta: None,
                lookups: 1,
                open: 0,
                local: false,
                staged: None,
            },
        );
        let by_name = HashMap::from([(root, 1u64)]);
        GcsFs {
            client,
            rt,
            _rt_owner: rt_owner,
            bucket: bucket.to_string(),
            uid: opts.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw()),
            gid: opts.gid.unwrap_or_else(|| nix::unistd::getgid().as_raw()),
            opts,
            mounted_at: SystemTime::now(),
            budget,
            state: Mutex::new(State {
                nodes,
                by_name,
                next_ino: 2,
                handles: HashMap::new(),
                next_fh: 1,
            }),
            caches: Mutex::new(caches),
            calls: Arc::new(CallCounts::default()),
        }
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    // ---------------- Cloud Storage calls through the caches ----------------

    /// Stats object `name` through the stat cache (docs/semantics.md, "Stat caching").
    fn stat_object(&self, name: &str) -> Result<Option<ObjMeta>, Errno> {
        self.block(self.stat_async(name))
    }

    /// [`GcsFs::stat_object`] for async callers.
    async fn stat_async(&self, name: &str) -> Result<Option<ObjMeta>, Errno> {
        // Bound first: a guard in the match scrutinee would live through the fetch below.
        let cached = lock(&self.caches).stat(name);
        match cached {
            Stat::Found(m) => Ok(Some(m)),
            Stat::Missing => Ok(None),
            Stat::Miss => self.fetch_stat(name).await,
        }
    }

    /// Asks Cloud Storage for object `name`'s metadata and remembers the answer.
    async fn fetch_stat(&self, name: &str) -> Result<Option<ObjMeta>, Errno> {
        self.calls.stat.fetch_add(1, Ordering::Relaxed);
        match self.client.get_object(&self.bucket, name).await {
            Ok(o) => {
                let m = meta_of(&o);
                lock(&self.caches).put_stat(name, Some(m.clone()));
                Ok(Some(m))
            }
            Err(e) if e.is_not_found() => {
                lock(&self.caches).put_stat(name, None);
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(object = name, error = %e, "gcsfuse twin: stat failed");
                Err(storage_errno(&e))
            }
        }
    }

    /// Whether anything lives below `prefix` (an implicit directory's test: docs/semantics.md,
    /// "Files and Directories", implicit-dirs), by a one-item list; returns the placeholder
    /// when it is the first.
    async fn fetch_prefix(&self, prefix: &str) -> Result<Option<Option<ObjMeta>>, Errno> {
        self.calls.list.fetch_add(1, Ordering::Relaxed);
        let page = self
            .client
            .list_objects(
                &self.bucket,
                &ListOptions {
                    prefix: Some(prefix.to_string()),
                    max_results: Some(1),
                    ..ListOptions::default()
                },
            )
            .await
            .map_err(|e| storage_errno(&e))?;
        if page.items.is_empty() && page.prefixes.is_empty() {
            return Ok(None);
        }
        let explicit = page.items.first().filter(|o| o.name == prefix).map(meta_of);
        Ok(Some(explicit))
    }

    fn local_child(&self, full: &str) -> Option<u64> {
        let st = lock(&self.state);
        let ino = *st.by_name.get(full)?;
        st.nodes.get(&ino).filter(|n| n.local).map(|_| ino)
    }

    /// Resolves `child` of directory `dir` (docs/semantics.md, "Lookups", "Type caching",
    /// "Name conflicts"): a directory wins over a file of the same name.
    fn resolve(&self, dir: &str, child: &str) -> Result<Option<Found>, Errno> {
        if let Some(stripped) = child.strip_suffix(CONFLICT_SUFFIX) {
            if stripped.is_empty() || stripped.contains('\n') {
                return Ok(None);
            }
            // The marked name is accepted only while the directory of that name exists.
            if self.resolve_dir(dir, stripped)?.is_none() {
                return Ok(None);
            }
            return Ok(self
                .stat_object(&format!("{dir}{stripped}"))?
                .map(Found::File));
        }
        let file_name = format!("{dir}{child}");
        if let Some(ino) = self.local_child(&file_name) {
            return Ok(Some(Found::Local(ino)));
        }
        let cached = lock(&self.caches).child_type(dir, child);
        let found = match cached {
            Some(ChildType::Nonexistent) => None,
            Some(ChildType::ImplicitDir) => Some(Found::Dir(None)),
            Some(ChildType::ExplicitDir) => self
                .stat_object(&format!("{file_name}/"))?
                .map(|m| Found::Dir(Some(m))),
            Some(ChildType::File) => self.stat_object(&file_name)?.map(Found::File),
            None => self.resolve_unknown(&file_name)?,
        };
        let t = match &found {
            Some(Found::Dir(Some(_))) => ChildType::ExplicitDir,
            Some(Found::Dir(None)) => ChildType::ImplicitDir,
            Some(_) => ChildType::File,
            None => ChildType::Nonexistent,
        };
        if cached.is_none() {
            lock(&self.caches).put_child_type(dir, child, t);
        }
        Ok(found)
    }

    /// Looks up a child of unknown type as Cloud Storage FUSE does (internal/fs/inode/dir.go,
    /// `lookUpUnknownType`): the file object and the directory at once, so a lookup costs one
    /// round trip, not one per candidate; the directory is a one-item list of `name/` with
    /// implicit directories (the placeholder, when there is one, is its first item), else the
    /// `name/` placeholder; a directory wins over a file. Cached answers are used first.
    fn resolve_unknown(&self, file_name: &str) -> Result<Option<Found>, Errno> {
        let dir_name = format!("{file_name}/");
        if let Stat::Found(m) = lock(&self.caches).stat(&dir_name) {
            return Ok(Some(Found::Dir(Some(m))));
        }
        let (d, f) = self
            .block(async { tokio::join!(self.probe_dir(&dir_name), self.stat_async(file_name)) });
        if let Some(d) = d? {
            return Ok(Some(d));
        }
        Ok(f?.map(Found::File))
    }

    /// Directory `dir_name` (ending in `/`), as gcsfuse finds one: with implicit directories a
    /// one-item list of the prefix (an explicit placeholder, being the smallest name under it,
    /// comes first), else the placeholder object; cached answers first.
    async fn probe_dir(&self, dir_name: &str) -> Result<Option<Found>, Errno> {
        if !self.opts.implicit_dirs {
            return Ok(self
                .stat_async(dir_name)
                .await?
                .map(|m| Found::Dir(Some(m))));
        }
        let cached = lock(&self.caches).stat(dir_name);
        if let Stat::Found(m) = cached {
            return Ok(Some(Found::Dir(Some(m))));
        }
        let found = self.fetch_prefix(dir_name).await?;
        if let Some(Some(m)) = &found {
            lock(&self.caches).put_stat(dir_name, Some(m.clone()));
        }
        Ok(found.map(Found::Dir))
    }

    fn resolve_dir(&self, dir: &str, child: &str) -> Result<Option<Found>, Errno> {
        self.block(self.probe_dir(&format!("{dir}{child}/")))
    }

    // ---------------- inodes ----------------

    fn node_name(&self, ino: u64) -> Result<(String, Kind), Errno> {
        let st = lock(&self.state);
        let n = st.nodes.get(&ino).ok_or(errno(libc::ENOENT))?;
        Ok((n.name.clone(), n.kind))
    }

    fn dir_name(&self, ino: u64) -> Result<String, Errno> {
        match self.node_name(ino)? {
            (n, Kind::Dir) => Ok(n),
            _ => Err(errno(libc::ENOTDIR)),
        }
    }

    /// The inode of `name`, created if new; updates its object state unless it holds
    /// staged writes (local writes stay visible to local readers).
    fn upsert(&self, name: &str, kind: Kind, meta: Option<ObjMeta>, lookup: bool) -> u64 {
        let mut st = lock(&self.state);
        if let Some(&ino) = st.by_name.get(name)
            && let Some(n) = st.nodes.get_mut(&ino)
            && n.kind == kind
        {
            if n.staged.is_none() && !n.local {
                n.meta = meta;
            }
            if lookup {
                n.lookups += 1;
            }
            return ino;
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.nodes.insert(
            ino,
            Node {
                name: name.to_string(),
                kind,
                meta,
                lookups: u64::from(lookup),
                open: 0,
                local: false,
                staged: None,
            },
        );
        st.by_name.insert(name.to_string(), ino);
        ino
    }

    fn found_inode(&self, dir: &str, child: &str, f: Found, lookup: bool) -> u64 {
        match f {
            Found::Local(ino) => {
                if lookup && let Some(n) = lock(&self.state).nodes.get_mut(&ino) {
                    n.lookups += 1;
                }
                ino
            }
            Found::Dir(m) => self.upsert(&format!("{dir}{child}/"), Kind::Dir, m, lookup),
            Found::File(m) => {
                let kind = if m.symlink.is_some() {
                    Kind::Symlink
                } else {
                    Kind::File
                };
                let name = m.name.clone();
                self.upsert(&name, kind, Some(m), lookup)
            }
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, meta, staged) = {
            let st = lock(&self.state);
            let n = st.nodes.get(&ino).ok_or(errno(libc::ENOENT))?;
            (n.kind, n.meta.clone(), n.staged.clone())
        };
        let (size, mtime) = match (&staged, &meta) {
            (Some(s), _) => {
                let s = lock(s);
                (s.len, to_system(s.mtime))
            }
            (None, Some(m)) => (m.size, to_system(m.mtime)),
            (None, None) => (0, self.mounted_at),
        };
        let (ft, perm) = match kind {
            Kind::Dir => (FileType::Directory, self.opts.dir_mode),
            Kind::File => (FileType::RegularFile, self.opts.file_mode),
            Kind::Symlink => (FileType::Symlink, self.opts.file_mode),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: if kind == Kind::Dir { 0 } else { size },
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: ft,
            perm: (perm & 0o7777) as u16,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let mut st = lock(&self.state);
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(fh, h);
        fh
    }

    fn maybe_drop(st: &mut State, ino: u64) {
        if ino == 1 {
            return;
        }
        let gone = st
            .nodes
            .get(&ino)
            .is_some_and(|n| n.lookups == 0 && n.open == 0);
        if gone
            && let Some(n) = st.nodes.remove(&ino)
            && st.by_name.get(&n.name) == Some(&ino)
        {
            st.by_name.remove(&n.name);
        }
    }

    // ---------------- staging and uploads ----------------

    /// Past the memory limit the instance is being killed (Cloud Run stops an instance over
    /// its limit): nothing more is written or uploaded.
    fn alive(&self) -> Result<(), Errno> {
        match self.budget.exceeded() {
            Some(_) => Err(errno(libc::ENOMEM)),
            None => Ok(()),
        }
    }

    fn new_staged(&self) -> Result<Staged, Errno> {
        let file = tempfile::tempfile().map_err(|e| {
            tracing::error!(error = %e, "gcsfuse twin: no temp file for staging");
            errno(libc::EIO)
        })?;
        Ok(Staged {
            file,
            len: 0,
            charged: 0,
            dirty: false,
            mtime: Utc::now(),
            retired: false,
        })
    }

    /// Resizes the charge of `s` to its length against the task's memory budget.
    fn charge(&self, s: &mut Staged, len: u64) -> Result<(), Errno> {
        if len > s.charged {
            self.budget
                .charge(len - s.charged)
                .map_err(|_| errno(libc::ENOMEM))?;
        } else {
            self.budget.release(s.charged - len);
        }
        s.charged = len;
        Ok(())
    }

    /// The staged content of file `ino`, created (with the object's bytes unless `empty`)
    /// when missing. docs/semantics.md, "Staged Writes - Legacy Write Path".
    fn staged(&self, ino: u64, empty: bool) -> Result<Arc<Mutex<Staged>>, Errno> {
        let (existing, name, meta, local) = {
            let st = lock(&self.state);
            let n = st.nodes.get(&ino).ok_or(errno(libc::ENOENT))?;
            if n.kind != Kind::File {
                return Err(errno(libc::EINVAL));
            }
            (n.staged.clone(), n.name.clone(), n.meta.clone(), n.local)
        };
        if let Some(s) = existing {
            return Ok(s);
        }
        let mut s = self.new_staged()?;
        if let (false, false, Some(m)) = (empty, local, &meta)
            && m.size > 0
        {
            self.calls.read.fetch_add(1, Ordering::Relaxed);
            let dl = self
                .block(self.client.download_generation(
                    &self.bucket,
                    &name,
                    None,
                    Some(m.generation),
                ))
                .map_err(|e| match e.status() {
                    Some(404) | Some(412) => errno(libc::ESTALE),
                    _ => storage_errno(&e),
                })?;
            let mut stream = dl.stream;
            let r: Result<(), Errno> = self.block(async {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| storage_errno(&e))?;
                    let end = s.len + chunk.len() as u64;
                    self.charge(&mut s, end)?;
                    s.file
                        .write_all_at(&chunk, s.len)
                        .map_err(|_| errno(libc::EIO))?;
                    s.len = end;
                }
                Ok(())
            });
            if let Err(e) = r {
                self.budget.release(s.charged);
                return Err(e);
            }
        }
        if let Some(m) = &meta {
            s.mtime = m.mtime;
        }
        let arc = Arc::new(Mutex::new(s));
        let mut st = lock(&self.state);
        let n = st.nodes.get_mut(&ino).ok_or(errno(libc::ENOENT))?;
        if let Some(other) = &n.staged {
            // Another thread staged it first; keep theirs.
            let mine = lock(&arc);
            self.budget.release(mine.charged);
            return Ok(other.clone());
        }
        n.staged = Some(arc.clone());
        Ok(arc)
    }

    /// Uploads `ino`'s staged content if dirty (or creates the object of a local file), then
    /// drops the staging (docs/semantics.md, "Staged Writes": written on close or fsync).
    fn sync(&self, ino: u64) -> Result<(), Errno> {
        self.alive()?;
        let (name, staged, local) = {
            let st = lock(&self.state);
            let Some(n) = st.nodes.get(&ino) else {
                return Ok(());
            };
            if n.kind != Kind::File {
                return Ok(());
            }
            (n.name.clone(), n.staged.clone(), n.local)
        };
        let Some(staged) = staged else {
            if local {
                let s = Arc::new(Mutex::new(self.new_staged()?));
                return self.upload(ino, &name, &s);
            }
            return Ok(());
        };
        let dirty = lock(&staged).dirty;
        if !dirty && !local {
            return Ok(());
        }
        self.upload(ino, &name, &staged)
    }

    fn upload(&self, ino: u64, name: &str, staged: &Arc<Mutex<Staged>>) -> Result<(), Errno> {
        let mut s = lock(staged);
        let len = s.len;
        let file = s.file.try_clone().map_err(|_| errno(libc::EIO))?;
        let stream = futures::stream::unfold(0u64, move |off| {
            let file = file.try_clone();
            async move {
                if off >= len {
                    return None;
                }
                let n = (len - off).min(READ_CHUNK) as usize;
                let mut buf = vec![0u8; n];
                let r = file.and_then(|f| f.read_exact_at(&mut buf, off));
                Some((r.map(|_| Bytes::from(buf)), off + n as u64))
            }
        });
        let opts = WriteOptions {
            metadata: BTreeMap::from([(
                MTIME_KEY.to_string(),
                s.mtime.to_rfc3339_opts(SecondsFormat::Nanos, true),
            )]),
            ..WriteOptions::default()
        };
        self.calls.write.fetch_add(1, Ordering::Relaxed);
        let obj = self
            .block(
                self.client
                    .upload_object(&self.bucket, name, stream, Some(len), &opts),
            )
            .map_err(|e| {
                tracing::warn!(object = name, error = %e, "gcsfuse twin: upload failed");
                storage_errno(&e)
            })?;
        let m = meta_of(&obj);
        s.dirty = false;
        s.retired = true;
        let charged = s.charged;
        s.charged = 0;
        drop(s);
        self.budget.release(charged);
        {
            let mut st = lock(&self.state);
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.local = false;
                n.meta = Some(m.clone());
                if n.staged.as_ref().is_some_and(|x| Arc::ptr_eq(x, staged)) {
                    n.staged = None;
                }
            }
        }
        let mut c = lock(&self.caches);
        c.put_stat(name, Some(m));
        if let Some((dir, child)) = split_parent(name) {
            c.put_child_type(dir, child, ChildType::File);
        }
        Ok(())
    }

    fn create_object(
        &self,
        name: &str,
        data: Bytes,
        metadata: BTreeMap<String, String>,
    ) -> Result<ObjMeta, Errno> {
        self.calls.write.fetch_add(1, Ordering::Relaxed);
        let opts = WriteOptions {
            metadata,
            if_generation_match: Some(0),
            ..WriteOptions::default()
        };
        let o = self
            .block(self.client.insert_object(&self.bucket, name, data, &opts))
            .map_err(|e| match e.status() {
                Some(412) => errno(libc::EEXIST),
                _ => storage_errno(&e),
            })?;
        let m = meta_of(&o);
        let mut c = lock(&self.caches);
        c.put_stat(name, Some(m.clone()));
        if let Some((dir, child)) = split_parent(name) {
            let t = if name.ends_with('/') {
                ChildType::ExplicitDir
            } else {
                ChildType::File
            };
            c.put_child_type(dir, child, t);
        }
        Ok(m)
    }

    fn delete_object(&self, name: &str, generation: Option<i64>) -> Result<(), Errno> {
        self.calls.write.fetch_add(1, Ordering::Relaxed);
        let opts = WriteOptions {
            if_generation_match: generation,
            ..WriteOptions::default()
        };
        let r = self.block(self.client.delete_object(&self.bucket, name, &opts));
        let mut c = lock(&self.caches);
        c.put_stat(name, None);
        if let Some((dir, child)) = split_parent(name) {
            c.forget_child_type(dir, child);
        }
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(storage_errno(&e)),
        }
    }

    fn list_all(
        &self,
        prefix: &str,
        delimiter: bool,
        limit: Option<usize>,
    ) -> Result<(Vec<Object>, Vec<String>), Errno> {
        let mut opts = ListOptions {
            prefix: Some(prefix.to_string()),
            delimiter: delimiter.then(|| "/".to_string()),
            include_trailing_delimiter: delimiter,
            ..ListOptions::default()
        };
        let (mut items, mut prefixes) = (Vec::new(), Vec::new());
        loop {
            self.calls.list.fetch_add(1, Ordering::Relaxed);
            let page = self
                .block(self.client.list_objects(&self.bucket, &opts))
                .map_err(|e| storage_errno(&e))?;
            items.extend(page.items);
            prefixes.extend(page.prefixes);
            if limit.is_some_and(|l| items.len() + prefixes.len() > l) {
                break;
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => opts.page_token = Some(t),
                None => break,
            }
        }
        Ok((items, prefixes))
    }

    /// The children of a directory as the kernel sees them (docs/semantics.md, "Reading
    /// directories" and "Name conflicts"), and the stat cache filled from the listing.
    fn read_entries(&self, dir: &str) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let (items, prefixes) = self.list_all(dir, true, None)?;
        let mut dirs: BTreeMap<String, Option<ObjMeta>> = BTreeMap::new();
        let mut files: BTreeMap<String, ObjMeta> = BTreeMap::new();
        {
            let mut c = lock(&self.caches);
            for o in &items {
                if o.name == dir || !o.name.starts_with(dir) {
                    continue;
                }
                let m = meta_of(o);
                c.put_stat(&o.name, Some(m.clone()));
                let rest = &o.name[dir.len()..];
                if let Some(d) = rest.strip_suffix('/') {
                    if showable(d) && !d.contains('/') {
                        dirs.insert(d.to_string(), Some(m));
                    }
                } else if showable(rest) {
                    files.insert(rest.to_string(), m);
                }
            }
        }
        if self.opts.implicit_dirs {
            for p in &prefixes {
                if let Some(d) = p
                    .strip_prefix(dir)
                    .and_then(|r| r.strip_suffix('/'))
                    .filter(|d| showable(d) && !d.contains('/'))
                {
                    dirs.entry(d.to_string()).or_insert(None);
                }
            }
        }
        let mut out = Vec::new();
        for (d, m) in dirs {
            let t = if m.is_some() {
                ChildType::ExplicitDir
            } else {
                ChildType::ImplicitDir
            };
            lock(&self.caches).put_child_type(dir, &d, t);
            let ino = self.upsert(&format!("{dir}{d}/"), Kind::Dir, m, false);
            out.push((ino, FileType::Directory, OsString::from(d)));
        }
        for (f, m) in files {
            let conflict = out.iter().any(|(_, _, n)| n.as_bytes() == f.as_bytes());
            let kind = if m.symlink.is_some() {
                Kind::Symlink
            } else {
                Kind::File
            };
            if !conflict {
                lock(&self.caches).put_child_type(dir, &f, ChildType::File);
            }
            let ino = self.upsert(&m.name.clone(), kind, Some(m), false);
            let ft = if kind == Kind::Symlink {
                FileType::Symlink
            } else {
                FileType::RegularFile
            };
            let shown = if conflict {
                format!("{f}{CONFLICT_SUFFIX}")
            } else {
                f
            };
            out.push((ino, ft, OsString::from(shown)));
        }
        // Files created here and not uploaded yet are listed too (docs/semantics.md,
        // "File inodes", Creation: it is as if the object existed).
        let st = lock(&self.state);
        for (ino, n) in &st.nodes {
            if n.local
                && let Some(rest) = n.name.strip_prefix(dir)
                && !rest.contains('/')
                && !out.iter().any(|(_, _, x)| x.as_bytes() == rest.as_bytes())
            {
                out.push((*ino, FileType::RegularFile, OsString::from(rest)));
            }
        }
        Ok(out)
    }

    fn entry(&self, ino: u64, reply: ReplyEntry) {
        match self.attr(ino) {
            Ok(a) => reply.entry(&KERNEL_TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let dir = self.dir_name(parent)?;
        let child = child_str(name)?;
        match self.resolve(&dir, child)? {
            Some(f) => Ok(self.found_inode(&dir, child, f, true)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    fn do_create_file(&self, parent: u64, name: &OsStr, now: bool) -> Result<u64, Errno> {
        if self.opts.read_only {
            return Err(errno(libc::EROFS));
        }
        let dir = self.dir_name(parent)?;
        let child = child_str(name)?;
        creatable(child)?;
        let full = format!("{dir}{child}");
        if now || self.opts.create_empty_file {
            // docs/semantics.md, "Writes" notes: create-empty-file writes the hold object.
            let m = self.create_object(&full, Bytes::new(), BTreeMap::new())?;
            return Ok(self.upsert(&full, Kind::File, Some(m), true));
        }
        // Since v1.2 the object is created at the first close or fsync (docs/semantics.md,
        // "Staged Writes - Legacy Write Path", Notes).
        let mut st = lock(&self.state);
        if let Some(&old) = st.by_name.get(&full)
            && let Some(n) = st.nodes.get(&old)
            && n.local
        {
            return Err(errno(libc::EEXIST));
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.nodes.insert(
            ino,
            Node {
                name: full.clone(),
                kind: Kind::File,
                meta: None,
                lookups: 1,
                open: 0,
                local: true,
                staged: None,
            },
        );
        st.by_name.insert(full, ino);
        Ok(ino)
    }

    fn do_write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.alive()?;
        loop {
            let staged = self.staged(ino, false)?;
            let mut s = lock(&staged);
            if s.retired {
                continue;
            }
            let end = offset + data.len() as u64;
            if end > s.len {
                self.charge(&mut s, end)?;
            }
            s.file
                .write_all_at(data, offset)
                .map_err(|_| errno(libc::EIO))?;
            s.len = s.len.max(end);
            s.dirty = true;
            s.mtime = Utc::now();
            return Ok(data.len() as u32);
        }
    }

    fn do_truncate(&self, ino: u64, size: u64) -> Result<(), Errno> {
        loop {
            let staged = self.staged(ino, size == 0)?;
            let mut s = lock(&staged);
            if s.retired {
                continue;
            }
            self.charge(&mut s, size)?;
            s.file.set_len(size).map_err(|_| errno(libc::EIO))?;
            s.len = size;
            s.dirty = true;
            s.mtime = Utc::now();
            return Ok(());
        }
    }

    fn do_read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (name, meta, staged) = {
            let st = lock(&self.state);
            let n = st.nodes.get(&ino).ok_or(errno(libc::ENOENT))?;
            (n.name.clone(), n.meta.clone(), n.staged.clone())
        };
        if let Some(s) = staged {
            let s = lock(&s);
            if offset >= s.len {
                return Ok(Vec::new());
            }
            let n = (s.len - offset).min(u64::from(size)) as usize;
            let mut buf = vec![0u8; n];
            s.file
                .read_exact_at(&mut buf, offset)
                .map_err(|_| errno(libc::EIO))?;
            return Ok(buf);
        }
        let Some(m) = meta else {
            return Ok(Vec::new());
        };
        if offset >= m.size || size == 0 {
            return Ok(Vec::new());
        }
        let want_end = (offset + u64::from(size)).min(m.size);
        {
            let st = lock(&self.state);
            if let Some(Handle::File {
                buf: Some((start, b)),
                ..
            }) = st.handles.get(&fh)
                && offset >= *start
                && want_end <= start + b.len() as u64
            {
                let a = (offset - start) as usize;
                return Ok(b[a..a + (want_end - offset) as usize].to_vec());
            }
        }
        let slot = match lock(&self.state).handles.get(&fh) {
            Some(Handle::File { reader, .. }) => reader.clone(),
            _ => return Err(errno(libc::EBADF)),
        };
        let mut held = lock(&slot);
        // A read at or a little ahead of the open response goes on with it; anywhere else
        // (behind it, far ahead) starts a new one. `fresh`: opened for this read and nothing
        // received yet, so a response that ends is an I/O error, not the end of the file.
        let (mut reader, mut fresh) = match held.take() {
            Some(r) if offset >= r.pos && offset - r.pos <= SKIP_MAX => (r, false),
            _ => (self.open_reader(&name, &m, offset)?, true),
        };
        let got_from = reader.pos;
        let skip = (offset - reader.pos) as usize;
        let need = (want_end - offset) as usize;
        let mut out = Vec::with_capacity(skip + need);
        while out.len() < skip + need {
            if reader.pending.is_empty() {
                match self.block(reader.stream.next()) {
                    Some(Ok(chunk)) => {
                        fresh = false;
                        reader.pending = chunk;
                    }
                    Some(Err(e)) => return Err(storage_errno(&e)),
                    None if fresh => return Err(errno(libc::EIO)),
                    // The range asked for is read: the next one starts here.
                    None => {
                        reader = self.open_reader(&name, &m, reader.pos)?;
                        fresh = true;
                    }
                }
                continue;
            }
            let take = (skip + need - out.len()).min(reader.pending.len());
            out.extend_from_slice(&reader.pending.split_to(take));
            reader.pos += take as u64;
        }
        if reader.pos < m.size {
            *held = Some(reader);
        }
        drop(held);
        let result = out[skip..].to_vec();
        if let Some(Handle::File { buf, .. }) = lock(&self.state).handles.get_mut(&fh) {
            *buf = Some(recent_window(buf.take(), got_from, out));
        }
        Ok(result)
    }

    /// Opens a ranged download of `name` at the inode's generation from `offset`, for up to
    /// [`SEQUENTIAL_READ`] bytes; a replaced or deleted object gives ESTALE (docs/semantics.md,
    /// "Stale File Handle Errors", Read During Modification).
    fn open_reader(&self, name: &str, m: &ObjMeta, offset: u64) -> Result<Reader, Errno> {
        let end = (offset + SEQUENTIAL_READ).min(m.size);
        self.calls.read.fetch_add(1, Ordering::Relaxed);
        let dl = self
            .block(self.client.download_generation(
                &self.bucket,
                name,
                Some((offset, Some(end - 1))),
                Some(m.generation),
            ))
            .map_err(|e| match e.status() {
                Some(404) | Some(412) => errno(libc::ESTALE),
                _ => storage_errno(&e),
            })?;
        Ok(Reader {
            pos: offset,
            pending: Bytes::new(),
            stream: dl.stream,
        })
    }

    fn do_unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        if self.opts.read_only {
            return Err(errno(libc::EROFS));
        }
        let dir = self.dir_name(parent)?;
        let child = child_str(name)?;
        match self.resolve(&dir, child)? {
            None => Err(errno(libc::ENOENT)),
            Some(Found::Dir(_)) => Err(errno(libc::EISDIR)),
            Some(Found::Local(ino)) => {
                let mut st = lock(&self.state);
                if let Some(n) = st.nodes.get_mut(&ino) {
                    n.local = false;
                    if let Some(s) = n.staged.take() {
                        let mut s = lock(&s);
                        s.retired = true;
                        self.budget.release(s.charged);
                        s.charged = 0;
                    }
                    let name = n.name.clone();
                    st.by_name.remove(&name);
                }
                Ok(())
            }
            Some(Found::File(m)) => {
                self.delete_object(&m.name, None)?;
                let mut st = lock(&self.state);
                if let Some(ino) = st.by_name.remove(&m.name)
                    && let Some(n) = st.nodes.get_mut(&ino)
                    && let Some(s) = n.staged.take()
                {
                    let mut s = lock(&s);
                    s.retired = true;
                    self.budget.release(s.charged);
                    s.charged = 0;
                }
                Ok(())
            }
        }
    }

    fn do_rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        if self.opts.read_only {
            return Err(errno(libc::EROFS));
        }
        let dir = self.dir_name(parent)?;
        let child = child_str(name)?;
        let explicit = match self.resolve(&dir, child)? {
            None => return Err(errno(libc::ENOENT)),
            Some(Found::Dir(m)) => m,
            Some(_) => return Err(errno(libc::ENOTDIR)),
        };
        let full = format!("{dir}{child}/");
        // docs/semantics.md, "Unlinking directories": list, ENOTEMPTY if anything shows up.
        if !self.read_entries(&full)?.is_empty() {
            return Err(errno(libc::ENOTEMPTY));
        }
        if let Some(m) = explicit {
            self.delete_object(&full, Some(m.generation))?;
        }
        let mut c = lock(&self.caches);
        c.forget_child_type(&dir, child);
        c.put_stat(&full, None);
        drop(c);
        lock(&self.state).by_name.remove(&full);
        Ok(())
    }

    fn do_mkdir(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        if self.opts.read_only {
            return Err(errno(libc::EROFS));
        }
        let dir = self.dir_name(parent)?;
        let child = child_str(name)?;
        creatable(child)?;
        // docs/semantics.md, "Files and Directories": mkdir creates the `dir/` placeholder.
        let full = format!("{dir}{child}/");
        let m = self.create_object(&full, Bytes::new(), BTreeMap::new())?;
        Ok(self.upsert(&full, Kind::Dir, Some(m), true))
    }

    fn do_symlink(&self, parent: u64, name: &OsStr, target: &Path) -> Result<u64, Errno> {
        if self.opts.read_only {
            return Err(errno(libc::EROFS));
        }
        let dir = self.dir_name(parent)?;
        let child = child_str(name)?;
        creatable(child)?;
        let target = target.to_str().ok_or(errno(libc::EINVAL))?.to_string();
        // docs/semantics.md, "Symlink inodes": the target is the content, marked by
        // goog-reserved-file-is-symlink=true, with the legacy key kept for older versions.
        let full = format!("{dir}{child}");
        let m = self.create_object(
            &full,
            Bytes::from(target.clone().into_bytes()),
            BTreeMap::from([
                (SYMLINK_MARKER_KEY.to_string(), "true".to_string()),
                (SYMLINK_TARGET_KEY.to_string(), target),
            ]),
        )?;
        Ok(self.upsert(&full, Kind::Symlink, Some(m), true))
    }

    fn do_readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let (name, meta) = {
            let st = lock(&self.state);
            let n = st.nodes.get(&ino).ok_or(errno(libc::ENOENT))?;
            if n.kind != Kind::Symlink {
                return Err(errno(libc::EINVAL));
            }
            (n.name.clone(), n.meta.clone())
        };
        let m = meta.ok_or(errno(libc::EIO))?;
        match m.symlink {
            Some(SymlinkTarget::Metadata(t)) => Ok(t.into_bytes()),
            Some(SymlinkTarget::Content) => {
                self.calls.read.fetch_add(1, Ordering::Relaxed);
                let dl = self
                    .block(self.client.download_generation(
                        &self.bucket,
                        &name,
                        None,
                        Some(m.generation),
                    ))
                    .map_err(|e| storage_errno(&e))?;
                Ok(self
                    .block(dl.collect())
                    .map_err(|e| storage_errno(&e))?
                    .to_vec())
            }
            None => Err(errno(libc::EINVAL)),
        }
    }

    fn rename_prefix(&self, old: &str, new: &str) {
        let mut st = lock(&self.state);
        let moved: Vec<(String, u64)> = st
            .by_name
            .iter()
            .filter(|(k, _)| k.starts_with(old))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, ino) in moved {
            st.by_name.remove(&k);
            let nk = format!("{new}{}", &k[old.len()..]);
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.name = nk.clone();
            }
            st.by_name.insert(nk, ino);
        }
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if self.opts.read_only {
            return Err(errno(libc::EROFS));
        }
        if !flags.is_empty() {
            return Err(errno(libc::EINVAL));
        }
        let (dir, newdir) = (self.dir_name(parent)?, self.dir_name(newparent)?);
        let (child, newchild) = (child_str(name)?, child_str(newname)?);
        creatable(newchild)?;
        match self.resolve(&dir, child)? {
            None => Err(errno(libc::ENOENT)),
            Some(Found::Dir(m)) => self.rename_dir(&dir, child, m, &newdir, newchild),
            Some(Found::Local(ino)) => {
                self.sync(ino)?;
                self.rename_file(&format!("{dir}{child}"), &format!("{newdir}{newchild}"))
            }
            Some(Found::File(m)) => {
                let ino = lock(&self.state).by_name.get(&m.name).copied();
                if let Some(ino) = ino {
                    self.sync(ino)?;
                }
                self.rename_file(&m.name, &format!("{newdir}{newchild}"))
            }
        }
    }

    /// gcsfuse renameFile: pending writes are flushed, then the object is moved in one step
    /// (objects.move, Cloud Storage FUSE's default `enable-atomic-rename-object`) while it is
    /// still the generation this mount saw.
    fn rename_file(&self, from: &str, to: &str) -> Result<(), Errno> {
        lock(&self.caches).forget_stat(from);
        let m = self.stat_object(from)?.ok_or(errno(libc::ENOENT))?;
        self.calls.write.fetch_add(1, Ordering::Relaxed);
        let o = self
            .block(self.client.move_object(
                &self.bucket,
                from,
                Some(m.generation),
                to,
                &WriteOptions::default(),
            ))
            .map_err(|e| storage_errno(&e))?;
        {
            let mut c = lock(&self.caches);
            c.put_stat(from, None);
            if let Some((d, ch)) = split_parent(from) {
                c.forget_child_type(d, ch);
            }
        }
        let nm = meta_of(&o);
        {
            let mut c = lock(&self.caches);
            c.put_stat(to, Some(nm.clone()));
            if let Some((d, ch)) = split_parent(to) {
                c.put_child_type(d, ch, ChildType::File);
            }
        }
        let mut st = lock(&self.state);
        if let Some(ino) = st.by_name.remove(from) {
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.name = to.to_string();
                n.meta = Some(nm);
            }
            st.by_name.insert(to.to_string(), ino);
        }
        Ok(())
    }

    /// docs/semantics.md "Missing features": a flat bucket renames a directory only when it
    /// has no more descendants than rename-dir-limit; gcsfuse answers EMFILE beyond that.
    fn rename_dir(
        &self,
        dir: &str,
        child: &str,
        old_meta: Option<ObjMeta>,
        newdir: &str,
        newchild: &str,
    ) -> Result<(), Errno> {
        let old = format!("{dir}{child}/");
        let new = format!("{newdir}{newchild}/");
        if new.starts_with(&old) {
            return Err(errno(libc::EINVAL));
        }
        {
            let st = lock(&self.state);
            if st
                .nodes
                .values()
                .any(|n| n.local && n.name.starts_with(&old))
            {
                return Err(errno(libc::ENOTSUP));
            }
        }
        let limit = usize::try_from(self.opts.rename_dir_limit).unwrap_or(usize::MAX);
        let (items, _) = self.list_all(&old, false, Some(limit))?;
        let descendants: Vec<Object> = items.into_iter().filter(|o| o.name != old).collect();
        if descendants.len() > limit {
            return Err(errno(libc::EMFILE));
        }
        match self.create_object(&new, Bytes::new(), BTreeMap::new()) {
            Ok(_) => {}
            Err(e) if e == errno(libc::EEXIST) => {
                if !self.read_entries(&new)?.is_empty() {
                    return Err(errno(libc::ENOTEMPTY));
                }
            }
            Err(e) => return Err(e),
        }
        // gcsfuse renameNonHierarchicalDir: files move in one step, directory placeholders are
        // copied and deleted.
        for o in &descendants {
            let target = format!("{new}{}", &o.name[old.len()..]);
            self.calls.write.fetch_add(1, Ordering::Relaxed);
            if o.name.ends_with('/') {
                self.block(self.client.rewrite_object(
                    &self.bucket,
                    &o.name,
                    Some(o.generation),
                    &target,
                    &WriteOptions::default(),
                ))
                .map_err(|e| storage_errno(&e))?;
                self.delete_object(&o.name, Some(o.generation))?;
            } else {
                self.block(self.client.move_object(
                    &self.bucket,
                    &o.name,
                    Some(o.generation),
                    &target,
                    &WriteOptions::default(),
                ))
                .map_err(|e| storage_errno(&e))?;
                lock(&self.caches).put_stat(&o.name, None);
            }
            lock(&self.caches).forget_stat(&target);
        }
        if let Some(m) = old_meta {
            self.delete_object(&old, Some(m.generation))?;
        }
        {
            let mut c = lock(&self.caches);
            c.forget_child_type(dir, child);
            c.forget_child_type(newdir, newchild);
            c.put_stat(&old, None);
        }
        self.rename_prefix(&old, &new);
        Ok(())
    }

    fn do_setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        if let Some(size) = size {
            if self.opts.read_only {
                return Err(errno(libc::EROFS));
            }
            self.do_truncate(ino, size)?;
            // truncate(2) on a path has no close to upload at: write it out now.
            let unopened = lock(&self.state)
                .nodes
                .get(&ino)
                .is_some_and(|n| n.open == 0);
            if unopened {
                self.sync(ino)?;
                if let Some(n) = lock(&self.state).nodes.get_mut(&ino)
                    && let Some(s) = n.staged.take()
                {
                    let mut s = lock(&s);
                    s.retired = true;
                    self.budget.release(s.charged);
                    s.charged = 0;
                }
            }
        }
        if let Some(t) = mtime {
            let t: DateTime<Utc> = match t {
                TimeOrNow::Now => Utc::now(),
                TimeOrNow::SpecificTime(t) => DateTime::<Utc>::from(t),
            };
            let (name, meta, staged, kind) = {
                let st = lock(&self.state);
                let n = st.nodes.get(&ino).ok_or(errno(libc::ENOENT))?;
                (n.name.clone(), n.meta.clone(), n.staged.clone(), n.kind)
            };
            // docs/semantics.md "File inodes", Modifications: mtime is tracked for files only.
            if kind == Kind::File {
                if let Some(s) = staged {
                    lock(&s).mtime = t;
                } else if let Some(m) = meta
                    && !self.opts.read_only
                {
                    self.calls.write.fetch_add(1, Ordering::Relaxed);
                    let o = self
                        .block(self.client.patch_object_metadata(
                            &self.bucket,
                            &name,
                            &BTreeMap::from([(
                                MTIME_KEY.to_string(),
                                t.to_rfc3339_opts(SecondsFormat::Nanos, true),
                            )]),
                            &WriteOptions {
                                if_generation_match: Some(m.generation),
                                if_metageneration_match: Some(m.metageneration),
                                ..WriteOptions::default()
                            },
                        ))
                        .map_err(|e| storage_errno(&e))?;
                    let nm = meta_of(&o);
                    lock(&self.caches).put_stat(&name, Some(nm.clone()));
                    if let Some(n) = lock(&self.state).nodes.get_mut(&ino) {
                        n.meta = Some(nm);
                    }
                }
            }
        }
        // docs/semantics.md "Permissions and ownership": chmod and chown are silently ignored.
        self.attr(ino)
    }
}

fn split_parent(name: &str) -> Option<(&str, &str)> {
    let t = name.strip_suffix('/').unwrap_or(name);
    let i = t.rfind('/').map(|i| i + 1).unwrap_or(0);
    Some((&name[..i], base_name(&t[i..])))
}

impl Filesystem for GcsFs {
    /// O_TRUNC comes with the open (FUSE_ATOMIC_O_TRUNC), so `> file` truncates the staged
    /// content and uploads once at close instead of an empty object first.
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        if let Err(e) = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::warn!(?e, "gcsfuse twin: the kernel has no atomic O_TRUNC");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok(ino) => self.entry(ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = lock(&self.state);
        if let Some(n) = st.nodes.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
        }
        Self::maybe_drop(&mut st, ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(a) => reply.attr(&KERNEL_TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino.0, size, mtime) {
            Ok(a) => reply.attr(&KERNEL_TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.do_readlink(ino.0) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    /// gcsfuse MkNode: named pipes and sockets are ENOTSUP; anything else becomes a regular
    /// file object (for a device node the kernel then fails the call with EIO, since the
    /// answer is not the type it asked for).
    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let fmt = mode & libc::S_IFMT;
        if fmt == libc::S_IFIFO || fmt == libc::S_IFSOCK {
            return reply.error(errno(libc::ENOTSUP));
        }
        match self.do_create_file(parent.0, name, true) {
            Ok(ino) => self.entry(ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mkdir(parent.0, name) {
            Ok(ino) => self.entry(ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.do_symlink(parent.0, link_name, target) {
            Ok(ino) => self.entry(ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Hard links: Cloud Storage FUSE does not implement the operation, so the kernel's
    /// request is answered ENOSYS (docs/semantics.md "Missing features"; jacobsa/fuse's
    /// NotImplementedFileSystem).
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno(libc::ENOSYS));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if writes && self.opts.read_only {
            return reply.error(errno(libc::EROFS));
        }
        {
            let mut st = lock(&self.state);
            match st.nodes.get_mut(&ino.0) {
                Some(n) => n.open += 1,
                None => return reply.error(errno(libc::ENOENT)),
            }
        }
        if writes
            && flags.0 & libc::O_TRUNC != 0
            && let Err(e) = self.do_truncate(ino.0, 0)
        {
            let mut st = lock(&self.state);
            if let Some(n) = st.nodes.get_mut(&ino.0) {
                n.open = n.open.saturating_sub(1);
            }
            return reply.error(e);
        }
        let fh = self.new_handle(Handle::File {
            buf: None,
            reader: Arc::default(),
        });
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(ino.0, fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = lock(&self.state);
        st.handles.remove(&fh.0);
        if let Some(n) = st.nodes.get_mut(&ino.0) {
            n.open = n.open.saturating_sub(1);
            if n.open == 0
                && let Some(s) = n.staged.take()
            {
                // Unsynced writes of a file nobody holds open are dropped with their memory.
                let mut s = lock(&s);
                s.retired = true;
                self.budget.release(s.charged);
                s.charged = 0;
            }
        }
        Self::maybe_drop(&mut st, ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.dir_name(ino.0).and_then(|d| self.read_entries(&d)) {
            Ok(entries) => {
                let fh = self.new_handle(Handle::Dir { entries });
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = lock(&self.state);
        let Some(Handle::Dir { entries }) = st.handles.get(&fh.0) else {
            drop(st);
            return reply.error(errno(libc::EBADF));
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        all.extend(entries.iter().cloned());
        drop(st);
        for (i, (eino, ft, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(eino), (i + 1) as u64, ft, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // gcsfuse StatFS: large made-up totals, all free.
        reply.statfs(
            1 << 33,
            1 << 33,
            1 << 33,
            1 << 50,
            1 << 50,
            1 << 17,
            1024,
            1 << 17,
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != 0 && mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(errno(libc::ENOTSUP));
        }
        let r = self.do_create_file(parent.0, name, false).and_then(|ino| {
            let a = self.attr(ino)?;
            if let Some(n) = lock(&self.state).nodes.get_mut(&ino) {
                n.open += 1;
            }
            Ok(a)
        });
        match r {
            Ok(a) => {
                let fh = self.new_handle(Handle::File {
                    buf: None,
                    reader: Arc::default(),
                });
                reply.created(
                    &KERNEL_TTL,
                    &a,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_showable_names() {
        assert_eq!(split_parent("a/b/c"), Some(("a/b/", "c")));
        assert_eq!(split_parent("a/b/"), Some(("a/", "b")));
        assert_eq!(split_parent("top"), Some(("", "top")));
        assert!(showable("x"));
        assert!(!showable("") && !showable(".") && !showable("..") && !showable("a\nb"));
    }

    /// docs/semantics.md "Symlink inodes": both representations are symlinks.
    #[test]
    fn symlinks_are_recognised_in_both_forms() {
        let mut o: Object = serde_json::from_value(serde_json::json!({
            "name": "l", "bucket": "b", "generation": "1", "metageneration": "1", "size": "3",
            "metadata": {"gcsfuse_symlink_target": "abc"}
        }))
        .unwrap();
        assert_eq!(
            meta_of(&o).symlink,
            Some(SymlinkTarget::Metadata("abc".into()))
        );
        o.metadata.clear();
        o.metadata.insert(SYMLINK_MARKER_KEY.into(), "true".into());
        assert_eq!(meta_of(&o).symlink, Some(SymlinkTarget::Content));
        o.metadata.clear();
        assert_eq!(meta_of(&o).symlink, None);
    }
}
