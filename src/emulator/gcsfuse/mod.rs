//! Cloud Storage FUSE volumes of the twin: each task's `gcs` volume is a FUSE file system
//! ([`fs::GcsFs`], built on the `fuser` crate, pure-Rust mount, no libfuse) that speaks the
//! Cloud Storage JSON API over HTTP to the emulator, mounted on the host by [`GcsFuse`] and
//! bind-mounted into the task container. Injected latency and faults on the API therefore
//! reach every file operation inside the task.
//!
//! Lifecycle: a mount lives for one task attempt ([`MountHandle`] unmounts on drop, lazily, so
//! a busy mount never blocks); [`GcsFuse::new`] first detaches mounts a killed process left
//! behind (their owner pid is in the mount's source name), so a stale mount never wedges a
//! later run. Where FUSE is unavailable, [`check_available`] says what is missing and the
//! emulator refuses `gcs` volumes; there is no other volume mode.

pub mod cache;
pub mod fs;
pub mod options;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use crate::emulator::base::Clock;
use crate::gcp::auth::TokenSource;
use crate::gcp::retry::RetryPolicy;
use crate::gcp::storage::StorageClient;

pub use options::MountOptions;

/// Source name prefix of every mount (`<prefix><pid>:<bucket>`), how stale ones are found.
pub const FSNAME_PREFIX: &str = "sandbox-harness-gcsfuse:pid";

/// How long the twin keeps retrying one Storage call (Cloud Storage FUSE retries without a
/// deadline; the twin stops after this so a dead emulator cannot hang a task forever).
pub const RETRY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Cloud Run's message for a task killed for memory (as Cloud Run logs it: "Memory limit of
/// 512 MiB exceeded with 516 MiB used. Consider increasing the memory limit, see
/// https://cloud.google.com/run/docs/configuring/memory-limits").
pub fn oom_message(limit: u64, used: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    format!(
        "Memory limit of {} MiB exceeded with {} MiB used. Consider increasing the memory \
         limit, see https://cloud.google.com/run/docs/configuring/memory-limits",
        limit / MIB,
        used.div_ceil(MIB)
    )
}

/// Exit status reported for a task killed for memory: the container gets SIGKILL
/// (128 + 9), as an out-of-memory kill does.
pub const OOM_EXIT_CODE: i32 = 137;

/// A task's memory as far as staged writes go (Cloud Run's jobs page, "Memory requirements":
/// the entire file is staged in Cloud Run memory before it is written to Cloud Storage).
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    exceeded: watch::Sender<Option<u64>>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
            exceeded: watch::channel(None).0,
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes staged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `n` more bytes; past the limit, records the overrun (what would have been used)
    /// and fails.
    pub fn charge(&self, n: u64) -> Result<(), u64> {
        let now = self.used.fetch_add(n, Ordering::SeqCst) + n;
        if now > self.limit {
            self.used.fetch_sub(n, Ordering::SeqCst);
            self.exceeded.send_if_modified(|v| {
                if v.is_none() {
                    *v = Some(now);
                    true
                } else {
                    false
                }
            });
            return Err(now);
        }
        Ok(())
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// The bytes that would have been in use when the limit was first exceeded.
    pub fn exceeded(&self) -> Option<u64> {
        *self.exceeded.borrow()
    }

    /// Resolves when the limit is exceeded, with [`exceeded`](Self::exceeded)'s figure.
    pub async fn wait_exceeded(&self) -> u64 {
        let mut rx = self.exceeded.subscribe();
        loop {
            if let Some(v) = *rx.borrow_and_update() {
                return v;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Whether this host can mount FUSE file systems; the error says what is missing and how to
/// get it.
pub fn check_available() -> Result<(), String> {
    check_fuse(
        Path::new("/dev/fuse"),
        nix::unistd::geteuid().is_root(),
        which("fusermount3").is_some(),
    )
}

/// [`check_available`] for a given device node, privilege and fusermount3 presence.
pub fn check_fuse(dev: &Path, root: bool, fusermount3: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    if !dev.exists() {
        missing.push(format!(
            "{} does not exist (load the fuse kernel module, or give this container \
             --device /dev/fuse)",
            dev.display()
        ));
    } else if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        missing.push(format!("{} cannot be opened ({e})", dev.display()));
    }
    // As root the mount(2) call needs no helper; otherwise fusermount3 mounts and unmounts.
    if !root && !fusermount3 {
        missing.push("fusermount3 is not on PATH (Debian package fuse3)".to_string());
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this emulator cannot mount Cloud Storage volumes: {}. Run scripts/setup.sh, which \
         installs Debian's fuse3 (fusermount3); the emulator has no other volume mode",
        missing.join("; ")
    ))
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Mount points of this process that are in use (everything else with our pid is stale).
fn live() -> &'static Mutex<HashSet<PathBuf>> {
    static LIVE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashSet::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Undoes the octal escapes of /proc/self/mountinfo (`\040` for a space...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This twin's FUSE mounts in a mountinfo text: (mount point, owner pid).
pub fn parse_mountinfo(text: &str) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mp = left.split(' ').nth(4);
        let mut r = right.split(' ');
        let (Some(fstype), Some(source)) = (r.next(), r.next()) else {
            continue;
        };
        if !fstype.starts_with("fuse") {
            continue;
        }
        let source = unescape(source);
        let Some(rest) = source.strip_prefix(FSNAME_PREFIX) else {
            continue;
        };
        let pid = rest.split(':').next().and_then(|p| p.parse::<u32>().ok());
        if let (Some(mp), Some(pid)) = (mp, pid) {
            out.push((PathBuf::from(unescape(mp)), pid));
        }
    }
    out
}

fn detach(path: &Path) -> bool {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => true,
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => false,
        Err(nix::errno::Errno::EPERM) => {
            // Not root: fusermount3 -u -z does the lazy unmount.
            std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg("--")
                .arg(path)
                .output()
                .is_ok_and(|o| o.status.success())
        }
        Err(e) => {
            tracing::warn!(mount = %path.display(), error = %e, "gcsfuse twin: unmount failed");
            false
        }
    }
}

/// Lazily unmounts this twin's mounts whose owner process is gone (or is this process but no
/// longer uses them), then removes their empty mount directories; returns how many.
pub fn sweep_stale() -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let me = std::process::id();
    let mut n = 0;
    for (mp, pid) in parse_mountinfo(&text) {
        let dead = if pid == me {
            !lock(live()).contains(&mp)
        } else {
            !Path::new(&format!("/proc/{pid}")).exists()
        };
        if dead && detach(&mp) {
            tracing::info!(mount = %mp.display(), pid, "gcsfuse twin: detached a stale mount");
            let _ = std::fs::remove_dir(&mp);
            n += 1;
        }
    }
    // Empty directories of owners that are gone (remove_dir never deletes content).
    if let Ok(rd) = std::fs::read_dir(mount_root()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != me
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                if let Ok(inner) = std::fs::read_dir(e.path()) {
                    for m in inner.flatten() {
                        let _ = std::fs::remove_dir(m.path());
                    }
                }
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    n
}

/// Where mount points live on the host.
pub fn mount_root() -> PathBuf {
    std::env::temp_dir().join("sandbox-harness-gcsfuse")
}

/// Owns the runtime the file systems make their HTTP calls on; shut down in the background
/// when the last user goes (dropping a runtime in async code would panic).
struct RuntimeOwner(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Makes bearer tokens for a mount's Storage client.
pub type TokenFn = Arc<dyn Fn() -> TokenSource + Send + Sync>;

/// The twin's Cloud Storage FUSE: mounts volumes of one emulator.
pub struct GcsFuse {
    base_url: String,
    clock: Clock,
    tokens: TokenFn,
    dir: PathBuf,
    rt: Arc<RuntimeOwner>,
    seq: AtomicU64,
}

impl std::fmt::Debug for GcsFuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsFuse")
            .field("base_url", &self.base_url)
            .field("dir", &self.dir)
            .finish()
    }
}

/// Kernel requests one mount serves at once (see `GcsFuse::mount`).
const FUSE_THREADS: usize = 16;

/// A mounted volume; unmounted (lazily) when dropped.
pub struct MountHandle {
    path: PathBuf,
    session: Option<fuser::BackgroundSession>,
    calls: Arc<fs::CallCounts>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl MountHandle {
    /// The host mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Storage API calls this mount made so far.
    pub fn calls(&self) -> &fs::CallCounts {
        &self.calls
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        detach(&self.path);
        lock(live()).remove(&self.path);
        if let Some(s) = self.session.take() {
            // The session thread ends when the kernel drops the connection; join it off the
            // caller's thread so a mount still held elsewhere never blocks this drop.
            let _ = std::thread::Builder::new()
                .name("gcsfuse-reap".into())
                .spawn(move || {
                    let _ = s.join();
                });
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

impl GcsFuse {
    /// A mounter for the Storage API at `base_url`, caches on `clock`; `instance` names this
    /// emulator's mount directory. Detaches stale mounts first.
    pub fn new(
        base_url: &str,
        clock: Clock,
        tokens: TokenFn,
        instance: &str,
    ) -> Result<Self, String> {
        let swept = sweep_stale();
        if swept > 0 {
            tracing::info!(swept, "gcsfuse twin: stale mounts detached");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gcsfuse-io")
            .enable_all()
            .build()
            .map_err(|e| format!("gcsfuse twin: cannot start its runtime: {e}"))?;
        let dir = mount_root().join(format!("{}-{instance}", std::process::id()));
        Ok(GcsFuse {
            base_url: base_url.trim_end_matches('/').to_string(),
            clock,
            tokens,
            dir,
            rt: Arc::new(RuntimeOwner(Some(rt))),
            seq: AtomicU64::new(0),
        })
    }

    /// The Storage endpoint the mounts talk to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Mounts `bucket` with `opts` (read-only when `read_only`), staging writes against
    /// `budget`. Blocking: call it from a blocking context.
    pub fn mount(
        &self,
        bucket: &str,
        opts: &MountOptions,
        read_only: bool,
        budget: Arc<Budget>,
    ) -> Result<MountHandle, String> {
        check_available()?;
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("m{n}"));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("creating mount point {}: {e}", path.display()))?;
        let mut opts = opts.clone();
        opts.read_only |= read_only;
        if !opts.unmodelled.is_empty() {
            tracing::info!(options = ?opts.unmodelled, "gcsfuse twin: mount options accepted but not modelled");
        }
        let retry = RetryPolicy {
            max_attempts: opts.max_retry_attempts.unwrap_or(u32::MAX),
            // Go's gax default initial backoff (Cloud Storage FUSE sets Max and Multiplier).
            initial_backoff: std::time::Duration::from_secs(1),
            max_backoff: opts.max_retry_sleep,
            multiplier: opts.retry_multiplier,
            deadline: RETRY_DEADLINE,
        };
        let client = StorageClient::new(&self.base_url, (self.tokens)())
            .map_err(|e| e.to_string())?
            .with_retry(retry);
        let handle = self
            .rt
            .0
            .as_ref()
            .ok_or("gcsfuse twin: runtime gone")?
            .handle()
            .clone();
        let keep: Arc<dyn std::any::Any + Send + Sync> = self.rt.clone();
        // Cloud Storage FUSE checks the bucket when it mounts; a missing bucket fails the mount.
        match handle.block_on(client.get_bucket(bucket)) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                let _ = std::fs::remove_dir(&path);
                return Err(format!("The bucket {bucket} does not exist."));
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                return Err(format!(
                    "mounting Cloud Storage bucket {bucket} failed: {e}"
                ));
            }
        }
        let fsys = fs::GcsFs::new(
            client,
            (handle, keep),
            bucket,
            opts.clone(),
            self.clock.clone(),
            budget,
        );
        let calls = fsys.calls.clone();
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            fuser::MountOption::FSName(format!("{FSNAME_PREFIX}{}:{bucket}", std::process::id())),
            fuser::MountOption::Subtype("gcsfuse".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            if opts.read_only {
                fuser::MountOption::RO
            } else {
                fuser::MountOption::RW
            },
        ];
        cfg.acl = fuser::SessionACL::All;
        // Cloud Storage FUSE serves every kernel request in its own goroutine (jacobsa/fuse,
        // fuseutil.NewFileSystemServer: `go s.handleOp(c, ctx, op)`), so one slow Storage call
        // never holds up the others; each thread here blocks on its call, so there are enough
        // of them for the concurrent commands of a sandbox.
        cfg.n_threads = Some(FUSE_THREADS);
        lock(live()).insert(path.clone());
        let session = match fuser::spawn_mount(fsys, &path, &cfg) {
            Ok(s) => s,
            Err(e) => {
                lock(live()).remove(&path);
                let _ = std::fs::remove_dir(&path);
                return Err(format!(
                    "mounting Cloud Storage bucket {bucket} with FUSE at {} failed: {e}",
                    path.display()
                ));
            }
        };
        Ok(MountHandle {
            path,
            session: Some(session),
            calls,
        })
    }
}

impl Drop for GcsFuse {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fuse_is_named_with_the_way_to_get_it() {
        let e = check_fuse(Path::new("/nonexistent/fuse"), false, false).unwrap_err();
        assert!(e.contains("/nonexistent/fuse does not exist"), "{e}");
        assert!(e.contains("fusermount3 is not on PATH"), "{e}");
        assert!(e.contains("scripts/setup.sh"), "{e}");
        let e = check_fuse(Path::new("/nonexistent/fuse"), true, false).unwrap_err();
        assert!(
            !e.contains("fusermount3 is not"),
            "root needs no helper: {e}"
        );
    }

    #[test]
    fn mountinfo_lines_of_this_twin_are_found_with_their_owner() {
        let text = "36 35 0:47 / /tmp/sandbox-harness-gcsfuse/12-x/m0 rw,nosuid,nodev - fuse \
                    sandbox-harness-gcsfuse:pid12:bkt rw,user_id=0\n\
                    37 35 0:48 / /mnt/other rw - fuse other-fs rw\n\
                    38 35 0:49 / /tmp/with\\040space rw - fuse.gcsfuse \
                    sandbox-harness-gcsfuse:pid7:b rw\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                (PathBuf::from("/tmp/sandbox-harness-gcsfuse/12-x/m0"), 12),
                (PathBuf::from("/tmp/with space"), 7),
            ]
        );
    }

    /// Cloud Run's jobs page, "Memory requirements": staged bytes are the task's memory.
    #[test]
    fn the_budget_records_the_first_overrun() {
        let b = Budget::new(100);
        assert!(b.charge(60).is_ok());
        assert_eq!(b.charge(50), Err(110));
        assert_eq!(b.used(), 60);
        assert_eq!(b.exceeded(), Some(110));
        b.release(60);
        assert_eq!(b.used(), 0);
        assert_eq!(
            oom_message(64 << 20, (64 << 20) + 1),
            "Memory limit of 64 MiB exceeded with 65 MiB used. Consider increasing the memory \
             limit, see https://cloud.google.com/run/docs/configuring/memory-limits"
        );
    }
}
