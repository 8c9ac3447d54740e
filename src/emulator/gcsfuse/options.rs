//! Mount options of a Cloud Run `gcs` volume (`mountOptions`: Cloud Storage FUSE flags without
//! their leading dashes, `name` or `name=value`), parsed into what the twin's file system does.
//!
//! Defaults are Cloud Run's where Cloud Run sets one (Cloud Run's "Configure Cloud Storage
//! volume mounts for jobs" page: "Memory requirements" gives the 60 s stat-cache TTL, 32 MB
//! stat cache and 4 MB type cache; "Disable implicit directories" says Cloud Run enables
//! implicit directories by default), else Cloud Storage FUSE's own (`cfg/params.yaml` of
//! GoogleCloudPlatform/gcsfuse: file-mode 0644, dir-mode 0755, negative TTL 5 s,
//! rename-dir-limit 0, retries 30 s max sleep x2 unlimited attempts).
//!
//! Three kinds of names:
//! - modelled: the flags below change what the file system does;
//! - accepted, not modelled: logging, metrics, profiling and transport tuning flags Cloud
//!   Storage FUSE accepts; they do not change file semantics here (listed in [`ACCEPTED`]);
//! - refused: names Cloud Storage FUSE does not know, and flags that point a managed mount at
//!   host files or processes ([`REFUSED`]); the job is refused at creation (400), as the twin
//!   validates templates (the Cloud Run page does not say at which step it refuses them, so
//!   this is the twin's choice, documented in README).

use std::time::Duration;

/// Cloud Run's default memory limit of a job's container (Cloud Run's "Configure memory
/// limits for jobs" page: 512 MiB), used as the staging budget when a template sets none.
pub const CLOUD_RUN_DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;

/// Bytes per stat-cache entry implied by Cloud Storage FUSE's docs (docs/semantics.md,
/// "Stat caching": 32 MB is about 20460 entries, counting as many negative ones).
const STAT_ENTRY_BYTES: u64 = 32 * 1024 * 1024 / 20460;
/// Bytes per type-cache entry implied by docs/semantics.md ("Type caching": 4 MiB is about
/// 21k entries per directory).
const TYPE_ENTRY_BYTES: u64 = 4 * 1024 * 1024 / 21_000;

/// A time-to-live: `None` = entries never expire (Cloud Storage FUSE's -1).
pub type Ttl = Option<Duration>;

/// What a volume's mount options mean for the file system.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// Directories implied by object names count as directories.
    pub implicit_dirs: bool,
    /// Mount only this prefix (no leading or trailing `/`), if set.
    pub only_dir: Option<String>,
    /// Permission bits of files and symlinks.
    pub file_mode: u32,
    /// Permission bits of directories.
    pub dir_mode: u32,
    /// Owner of every inode (`None` = the mounting process's).
    pub uid: Option<u32>,
    /// Group of every inode (`None` = the mounting process's).
    pub gid: Option<u32>,
    /// Largest number of descendants of a directory a rename may move (flat buckets).
    pub rename_dir_limit: u64,
    /// Stat and type cache TTL; `Some(ZERO)` disables both.
    pub ttl: Ttl,
    /// TTL of negative stat entries; `Some(ZERO)` disables them.
    pub negative_ttl: Ttl,
    /// Stat-cache capacity in entries (`None` = unbounded, 0 = disabled).
    pub stat_cache_entries: Option<u64>,
    /// Type-cache capacity per directory in entries (`None` = unbounded, 0 = disabled).
    pub type_cache_entries: Option<u64>,
    /// Remember names found missing in the type cache as well.
    pub nonexistent_type_cache: bool,
    /// Create an empty object when a file is created, not only at its first close.
    pub create_empty_file: bool,
    /// Mount read-only (`o=ro`, besides the volume's `readOnly`).
    pub read_only: bool,
    /// Retry attempts in total (`None` = unlimited, Cloud Storage FUSE's 0).
    pub max_retry_attempts: Option<u32>,
    /// Cap on one retry backoff.
    pub max_retry_sleep: Duration,
    /// Growth of the backoff per retry.
    pub retry_multiplier: f64,
    /// Options accepted but not modelled, as given (reported in logs).
    pub unmodelled: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            implicit_dirs: true,
            only_dir: None,
            file_mode: 0o644,
            dir_mode: 0o755,
            uid: None,
            gid: None,
            rename_dir_limit: 0,
            ttl: Some(Duration::from_secs(60)),
            negative_ttl: Some(Duration::from_secs(5)),
            stat_cache_entries: Some(32 * 1024 * 1024 / STAT_ENTRY_BYTES),
            type_cache_entries: Some(4 * 1024 * 1024 / TYPE_ENTRY_BYTES),
            nonexistent_type_cache: false,
            create_empty_file: false,
            read_only: false,
            max_retry_attempts: None,
            max_retry_sleep: Duration::from_secs(30),
            retry_multiplier: 2.0,
            unmodelled: Vec::new(),
        }
    }
}

/// Cloud Storage FUSE flags accepted without changing file semantics in the twin.
pub const ACCEPTED: &[&str] = &[
    "app-name",
    "billing-project",
    "client-protocol",
    "congestion-threshold",
    "debug_fs",
    "debug_fuse",
    "debug_fuse_errors",
    "debug_gcs",
    "debug_http",
    "debug_invariants",
    "debug_mutex",
    "disable-autoconfig",
    "disable-parallel-dirops",
    "enable-buffered-read",
    "enable-cloud-profiler",
    "enable-hns",
    "enable-http-dns-cache",
    "enable-kernel-reader",
    "enable-metadata-prefetch",
    "enable-new-reader",
    "enable-read-stall-retry",
    "enable-streaming-writes",
    "experimental-enable-json-read",
    "http-client-timeout",
    "ignore-interrupts",
    "kernel-list-cache-ttl-secs",
    "limit-bytes-per-sec",
    "limit-ops-per-sec",
    "log-format",
    "log-severity",
    "max-background",
    "max-conns-per-host",
    "max-idle-conns-per-host",
    "max-read-ahead-kb",
    "read-global-max-blocks",
    "sequential-read-size-mb",
    "stackdriver-export-interval",
    "cloud-metrics-export-interval-secs",
    "write-global-max-blocks",
    "write-block-size-mb",
    "write-max-blocks-per-file",
    "metadata-prefetch-entries-limit",
];

/// Flags refused on a managed mount: they name host files, processes or credentials of the
/// gcsfuse process, which Cloud Run owns.
pub const REFUSED: &[&str] = &[
    "cache-dir",
    "config-file",
    "foreground",
    "key-file",
    "log-file",
    "prometheus-port",
    "reuse-token-from-url",
    "temp-dir",
    "token-url",
    "custom-endpoint",
    "anonymous-access",
];

fn bool_value(name: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(str::trim) {
        None | Some("true") | Some("True") | Some("1") => Ok(true),
        Some("false") | Some("False") | Some("0") => Ok(false),
        Some(o) => Err(format!("mount option {name}: {o:?} is not true or false")),
    }
}

fn need<'a>(name: &str, v: Option<&'a str>) -> Result<&'a str, String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("mount option {name} needs a value ({name}=...)"))
}

fn int_value(name: &str, v: Option<&str>) -> Result<i64, String> {
    let s = need(name, v)?;
    s.parse::<i64>()
        .map_err(|_| format!("mount option {name}: {s:?} is not an integer"))
}

fn octal_value(name: &str, v: Option<&str>) -> Result<u32, String> {
    let s = need(name, v)?;
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("mount option {name}: {s:?} is not an octal mode"))?;
    if m > 0o7777 {
        return Err(format!("mount option {name}: {s} is larger than 7777"));
    }
    Ok(m)
}

fn id_value(name: &str, v: Option<&str>) -> Result<Option<u32>, String> {
    let n = int_value(name, v)?;
    match n {
        -1 => Ok(None),
        n if (0..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        n => Err(format!("mount option {name}: {n} is not a valid id")),
    }
}

/// Seconds with Cloud Storage FUSE's conventions: -1 = never expires, 0 = off.
fn secs_ttl(name: &str, v: Option<&str>) -> Result<Ttl, String> {
    match int_value(name, v)? {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(Duration::from_secs(n as u64))),
        n => Err(format!(
            "mount option {name}: {n} is below -1 (Cloud Storage FUSE refuses it at mount)"
        )),
    }
}

/// A Go duration (`90s`, `1.5h`, `500ms`, `1m30s`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mul = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mul;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

fn duration_value(name: &str, v: Option<&str>) -> Result<Duration, String> {
    let s = need(name, v)?;
    parse_go_duration(s).ok_or_else(|| format!("mount option {name}: {s:?} is not a duration"))
}

/// Capacity from a size in MiB: -1 unbounded, 0 disabled (Cloud Storage FUSE's conventions).
fn mib_capacity(name: &str, v: Option<&str>, entry_bytes: u64) -> Result<Option<u64>, String> {
    match int_value(name, v)? {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some((n as u64).saturating_mul(1024 * 1024) / entry_bytes)),
        n => Err(format!(
            "mount option {name}: {n} is below -1 (Cloud Storage FUSE refuses it at mount)"
        )),
    }
}

impl MountOptions {
    /// Parses a volume's `mountOptions`; the error is the message of a 400 INVALID_ARGUMENT.
    pub fn parse(list: &[String]) -> Result<MountOptions, String> {
        let mut o = MountOptions::default();
        let mut metadata_ttl_set = false;
        let mut stat_ttl: Option<Duration> = None;
        let mut type_ttl: Option<Duration> = None;
        let mut stat_mb_set = false;
        let mut stat_capacity: Option<u64> = None;
        for raw in list {
            let opt = raw.trim();
            if opt.is_empty() {
                continue;
            }
            if opt.starts_with('-') {
                return Err(format!(
                    "mount option {opt:?}: give Cloud Storage FUSE flags without their leading dashes"
                ));
            }
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v)),
                None => (opt, None),
            };
            match name {
                "implicit-dirs" => o.implicit_dirs = bool_value(name, value)?,
                "only-dir" => {
                    let v = value.unwrap_or("").trim().trim_matches('/');
                    if v.split('/').any(|c| c.is_empty() || c == "." || c == "..") && !v.is_empty()
                    {
                        return Err(format!(
                            "mount option only-dir={v}: not a plain relative path"
                        ));
                    }
                    o.only_dir = (!v.is_empty()).then(|| v.to_string());
                }
                "file-mode" => o.file_mode = octal_value(name, value)?,
                "dir-mode" => o.dir_mode = octal_value(name, value)?,
                "uid" => o.uid = id_value(name, value)?,
                "gid" => o.gid = id_value(name, value)?,
                "rename-dir-limit" => {
                    let n = int_value(name, value)?;
                    o.rename_dir_limit = u64::try_from(n)
                        .map_err(|_| format!("mount option rename-dir-limit: {n} is negative"))?;
                }
                "metadata-cache-ttl-secs" => {
                    o.ttl = secs_ttl(name, value)?;
                    metadata_ttl_set = true;
                }
                "stat-cache-ttl" => stat_ttl = Some(duration_value(name, value)?),
                "type-cache-ttl" => type_ttl = Some(duration_value(name, value)?),
                "metadata-cache-negative-ttl-secs" => o.negative_ttl = secs_ttl(name, value)?,
                "stat-cache-max-size-mb" => {
                    o.stat_cache_entries = mib_capacity(name, value, STAT_ENTRY_BYTES)?;
                    stat_mb_set = true;
                }
                "stat-cache-capacity" => {
                    let n = int_value(name, value)?;
                    stat_capacity = Some(u64::try_from(n).map_err(|_| {
                        format!("mount option stat-cache-capacity: {n} is negative")
                    })?);
                }
                "type-cache-max-size-mb" => {
                    o.type_cache_entries = mib_capacity(name, value, TYPE_ENTRY_BYTES)?
                }
                "enable-nonexistent-type-cache" => {
                    o.nonexistent_type_cache = bool_value(name, value)?
                }
                "create-empty-file" => o.create_empty_file = bool_value(name, value)?,
                "max-retry-attempts" => {
                    let n = int_value(name, value)?;
                    o.max_retry_attempts = match n {
                        0 => None,
                        n if n > 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                        n => {
                            return Err(format!(
                                "mount option max-retry-attempts: {n} is negative"
                            ));
                        }
                    };
                }
                "max-retry-sleep" => o.max_retry_sleep = duration_value(name, value)?,
                "retry-multiplier" => {
                    let s = need(name, value)?;
                    let m: f64 = s.parse().map_err(|_| {
                        format!("mount option retry-multiplier: {s:?} is not a number")
                    })?;
                    if !(m.is_finite() && m >= 1.0) {
                        return Err(format!(
                            "mount option retry-multiplier: {s} must be at least 1"
                        ));
                    }
                    o.retry_multiplier = m;
                }
                "o" => {
                    for part in need(name, value)?.split(',') {
                        match part.trim() {
                            "ro" => o.read_only = true,
                            "rw" => o.read_only = false,
                            "" => {}
                            other => o.unmodelled.push(format!("o={other}")),
                        }
                    }
                }
                n if REFUSED.contains(&n) => {
                    return Err(format!(
                        "mount option {n} is not accepted on a Cloud Run volume: it configures \
                         files, credentials or processes of the Cloud Storage FUSE process, which \
                         Cloud Run manages"
                    ));
                }
                n if ACCEPTED.contains(&n) => o.unmodelled.push(opt.to_string()),
                n => {
                    return Err(format!(
                        "mount option {n:?} is not a Cloud Storage FUSE flag (see \
                         https://cloud.google.com/storage/docs/cloud-storage-fuse/cli-options)"
                    ));
                }
            }
        }
        // docs/semantics.md, "Kernel List Cache" note 1: without metadata-cache:ttl-secs, the
        // smaller of stat-cache-ttl and type-cache-ttl, rounded up to whole seconds, is used.
        if !metadata_ttl_set && (stat_ttl.is_some() || type_ttl.is_some()) {
            let d = match (stat_ttl, type_ttl) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => unreachable!("checked above"),
            };
            o.ttl = Some(Duration::from_secs(d.as_secs_f64().ceil() as u64));
        }
        // docs/semantics.md, "Stat caching": stat-cache-capacity counts entries and is ignored
        // when stat-cache-max-size-mb is set.
        if let (Some(c), false) = (stat_capacity, stat_mb_set) {
            o.stat_cache_entries = Some(c);
        }
        Ok(o)
    }

    /// The object-name prefix the mount shows (`""` or `dir/`).
    pub fn root_prefix(&self) -> String {
        match &self.only_dir {
            Some(d) => format!("{d}/"),
            None => String::new(),
        }
    }
}

/// Cloud Run refuses volume mounts at these paths and below (Cloud Run's "Configure Cloud
/// Storage volume mounts for jobs" page, "Disallowed paths").
pub const DISALLOWED_MOUNT_PATHS: &[&str] = &["/dev", "/proc", "/sys"];

/// Checks a container mount path against [`DISALLOWED_MOUNT_PATHS`].
pub fn check_mount_path(path: &str) -> Result<(), String> {
    let p = path.trim_end_matches('/');
    for d in DISALLOWED_MOUNT_PATHS {
        if p == *d || p.starts_with(&format!("{d}/")) {
            return Err(format!(
                "volumeMounts: mountPath {path:?} is not allowed: Cloud Run does not allow \
                 mounting a volume at /dev, /proc or /sys, or below them"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<MountOptions, String> {
        MountOptions::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Cloud Run's jobs page, "Memory requirements" (60 s TTL) and "Disable implicit
    /// directories" (on by default); gcsfuse cfg/params.yaml for the rest.
    #[test]
    fn defaults_are_cloud_runs_then_gcsfuses() {
        let o = parse(&[]).unwrap();
        assert!(o.implicit_dirs);
        assert_eq!((o.file_mode, o.dir_mode), (0o644, 0o755));
        assert_eq!(o.ttl, Some(Duration::from_secs(60)));
        assert_eq!(o.negative_ttl, Some(Duration::from_secs(5)));
        assert_eq!(o.rename_dir_limit, 0);
        assert_eq!(o.stat_cache_entries, Some(20460));
        assert_eq!(o.max_retry_attempts, None);
        assert_eq!(o.max_retry_sleep, Duration::from_secs(30));
    }

    #[test]
    fn modelled_options_change_behaviour() {
        let o = parse(&[
            "implicit-dirs=false",
            "only-dir=/a/b/",
            "file-mode=600",
            "dir-mode=0700",
            "uid=1000",
            "gid=1001",
            "rename-dir-limit=10",
            "metadata-cache-ttl-secs=-1",
            "metadata-cache-negative-ttl-secs=0",
            "o=ro",
            "log-severity=trace",
        ])
        .unwrap();
        assert!(!o.implicit_dirs);
        assert_eq!(o.only_dir.as_deref(), Some("a/b"));
        assert_eq!(o.root_prefix(), "a/b/");
        assert_eq!((o.file_mode, o.dir_mode), (0o600, 0o700));
        assert_eq!((o.uid, o.gid), (Some(1000), Some(1001)));
        assert_eq!(o.rename_dir_limit, 10);
        assert_eq!(o.ttl, None);
        assert_eq!(o.negative_ttl, Some(Duration::ZERO));
        assert!(o.read_only);
        assert_eq!(o.unmodelled, vec!["log-severity=trace".to_string()]);
        assert!(parse(&["implicit-dirs"]).unwrap().implicit_dirs);
    }

    /// docs/semantics.md, "Kernel List Cache", note 1: the deprecated duration flags give the
    /// smaller of the two, rounded up to a second, unless metadata-cache-ttl-secs is set.
    #[test]
    fn deprecated_ttls_take_the_smaller_rounded_up() {
        let o = parse(&["stat-cache-ttl=1500ms", "type-cache-ttl=1m"]).unwrap();
        assert_eq!(o.ttl, Some(Duration::from_secs(2)));
        let o = parse(&["stat-cache-ttl=1s", "metadata-cache-ttl-secs=7"]).unwrap();
        assert_eq!(o.ttl, Some(Duration::from_secs(7)));
    }

    #[test]
    fn unknown_refused_and_malformed_options_are_errors() {
        assert!(
            parse(&["no-such-flag"])
                .unwrap_err()
                .contains("not a Cloud Storage FUSE flag")
        );
        assert!(
            parse(&["key-file=/x.json"])
                .unwrap_err()
                .contains("not accepted")
        );
        assert!(
            parse(&["--implicit-dirs"])
                .unwrap_err()
                .contains("leading dashes")
        );
        assert!(parse(&["file-mode=999"]).is_err());
        assert!(parse(&["uid=x"]).is_err());
        assert!(parse(&["metadata-cache-ttl-secs=-2"]).is_err());
        assert!(parse(&["only-dir=a/../b"]).is_err());
        assert!(parse(&["retry-multiplier=0.5"]).is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    /// Cloud Run's jobs page, "Disallowed paths".
    #[test]
    fn dev_proc_and_sys_are_not_mount_paths() {
        assert!(check_mount_path("/dev").is_err());
        assert!(check_mount_path("/proc/x").is_err());
        assert!(check_mount_path("/sys/").is_err());
        assert!(check_mount_path("/devices").is_ok());
        assert!(check_mount_path("/workspace").is_ok());
    }
}
