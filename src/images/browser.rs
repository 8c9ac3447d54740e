//! The browser image: a Debian root filesystem with Chromium, a virtual display (Xvfb), a VNC
//! server on that display (x11vnc) and a TCP forwarder (socat), bootstrapped from Debian's
//! mirrors with `mmdebstrap` and imported into the engine as a base image; the harness's layer
//! on top adds the executor (the in-sandbox agent) and the start script.
//!
//! No registry is used: packages come from the Debian mirrors this machine's apt uses, and the
//! root filesystem is streamed from mmdebstrap's stdout into the engine (`docker import`). The
//! base image's tag is a hash of its recipe (package list, suites, build steps), so it is built
//! once per machine; downloaded packages are kept in a cache directory, so a rebuild downloads
//! only what changed. Building needs root (or unprivileged user namespaces for mmdebstrap).
//!
//! mmdebstrap rather than debootstrap: it resolves and installs everything with apt in one
//! pass, from several suites at once (the release, its updates and its security suite), and
//! writes a tar; debootstrap's shell resolver plus a second apt pass in a chroot took about
//! twice as long here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use super::{EXECUTOR_PATH, ImageError, ImageSpec, RootEntry, executor_binary};

/// Repository of the imported Debian root filesystem (without tag).
pub const BROWSER_BASE_REPO: &str = "sandbox-harness/browser-base";
/// Repository of the browser sandbox image (without tag).
pub const BROWSER_IMAGE_REPO: &str = "sandbox-harness/browser";

/// Debian packages the browser image installs (with their dependencies, no recommends).
pub const PACKAGES: &[&str] = &[
    "chromium",
    "xvfb",
    "x11vnc",
    "socat",
    "fonts-dejavu-core",
    "procps",
    "passwd",
];

/// The unprivileged user the display, the VNC server and Chromium run as.
pub const BROWSER_USER: &str = "browser";
/// Its uid and gid.
pub const BROWSER_UID: u32 = 1000;

/// The container port the DevTools endpoint is published on (a forwarder to Chromium's own
/// loopback-only port, [`CDP_INTERNAL_PORT`]).
pub const CDP_PORT: u16 = 9223;
/// Chromium's remote-debugging port inside the sandbox (loopback only).
pub const CDP_INTERNAL_PORT: u16 = 9222;
/// The container port of the VNC server.
pub const VNC_PORT: u16 = 5900;

/// Where the start script lands in the image.
pub const START_PATH: &str = "/usr/local/bin/sandbox-browser";

/// Version of the build steps below; part of the base image's tag, so changing the steps
/// (not only the package list) builds a new base.
const RECIPE_VERSION: u32 = 2;

/// The browser sandbox's main process (run by the container's init): starts the virtual
/// display, the VNC server showing it, Chromium on that display with its DevTools endpoint, and
/// a forwarder that makes the endpoint reachable from outside the container (Chromium listens
/// on loopback only unless it runs headless). Each runs as the unprivileged user and is
/// restarted a second after it exits; removing the container ends them all.
pub const START_SCRIPT: &str = r#"#!/bin/sh
set -u
U=browser
LOGS=/var/log/sandbox-browser
mkdir -p /tmp/.X11-unix "$LOGS"
chmod 1777 /tmp/.X11-unix
chown "$U:$U" "$LOGS"
export DISPLAY=:99 HOME=/home/browser
keep() {
  __name=$1
  shift
  while :; do
    setpriv --reuid="$U" --regid="$U" --init-groups --inh-caps=-all -- "$@" >>"$LOGS/$__name.log" 2>&1
    sleep 1
  done &
}
keep xvfb Xvfb :99 -screen 0 1280x800x24 -nolisten tcp
__i=0
while [ ! -S /tmp/.X11-unix/X99 ] && [ "$__i" -lt 100 ]; do
  sleep 0.1
  __i=$((__i + 1))
done
keep vnc x11vnc -display :99 -forever -shared -nopw -rfbport 5900 -quiet
keep cdp-forward socat TCP-LISTEN:9223,fork,reuseaddr TCP:127.0.0.1:9222
keep chromium chromium --no-sandbox --disable-dev-shm-usage --no-first-run \
  --no-default-browser-check --password-store=basic --disable-background-networking \
  --disable-component-update --remote-debugging-port=9222 \
  --user-data-dir=/home/browser/profile --window-position=0,0 --window-size=1280,800 \
  about:blank
wait
"#;

/// One line of the root filesystem's apt sources: a mirror and a suite (component `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// Mirror URL, e.g. `http://deb.debian.org/debian`.
    pub uri: String,
    /// Suite, e.g. `bookworm-security`.
    pub suite: String,
}

/// Which Debian the browser image is bootstrapped from, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianSource {
    /// The release codename debootstrap installs (e.g. `bookworm`).
    pub suite: String,
    /// The mirror debootstrap uses.
    pub mirror: String,
    /// Every source apt in the root filesystem uses (the release, its updates and security
    /// suites where this machine has them).
    pub sources: Vec<AptSource>,
}

const DEFAULT_SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

impl DebianSource {
    /// What this machine uses: the release of /etc/os-release and the mirrors of
    /// /etc/apt/sources.list*, with `SANDBOX_DEBIAN_SUITE` / `SANDBOX_DEBIAN_MIRROR` overriding
    /// them; Debian's own mirror where the machine is not Debian.
    pub fn from_host() -> DebianSource {
        let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let field = |k: &str| {
            os.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
        };
        let host_suite = (field("ID").as_deref() == Some("debian"))
            .then(|| field("VERSION_CODENAME"))
            .flatten()
            .filter(|s| !s.is_empty());
        let host_lists = if host_suite.is_some() {
            read_host_sources(Path::new("/etc/apt"))
        } else {
            Vec::new()
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let suite = env("SANDBOX_DEBIAN_SUITE")
            .or(host_suite)
            .unwrap_or_else(|| DEFAULT_SUITE.into());
        Self::select(&suite, &host_lists, env("SANDBOX_DEBIAN_MIRROR"))
    }

    /// Picks the release, updates and security sources of `suite` from `host`; `mirror`
    /// replaces the release's mirror (and the updates suite's).
    pub fn select(suite: &str, host: &[AptSource], mirror: Option<String>) -> DebianSource {
        let find = |s: &str| host.iter().find(|a| a.suite == s).map(|a| a.uri.clone());
        let main = mirror
            .clone()
            .or_else(|| find(suite))
            .unwrap_or_else(|| DEFAULT_MIRROR.into());
        let mut sources = vec![AptSource {
            uri: main.clone(),
            suite: suite.to_string(),
        }];
        let updates = format!("{suite}-updates");
        if let Some(uri) = find(&updates) {
            sources.push(AptSource {
                uri: mirror.clone().unwrap_or(uri),
                suite: updates,
            });
        }
        let security = format!("{suite}-security");
        match find(&security) {
            Some(uri) => sources.push(AptSource {
                uri,
                suite: security,
            }),
            None if host.is_empty() => sources.push(AptSource {
                uri: DEFAULT_SECURITY_MIRROR.into(),
                suite: security,
            }),
            None => {}
        }
        DebianSource {
            suite: suite.to_string(),
            mirror: main,
            sources,
        }
    }

    /// The root filesystem's `/etc/apt/sources.list`.
    pub fn sources_list(&self) -> String {
        self.sources
            .iter()
            .map(|s| format!("deb {} {} main\n", s.uri, s.suite))
            .collect()
    }
}

/// The `deb` sources of an apt configuration directory: `sources.list`, `sources.list.d/*.list`
/// (one-line format) and `sources.list.d/*.sources` (deb822 format); other files are ignored.
pub fn read_host_sources(apt_dir: &Path) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        files.extend(names);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_one_line_sources(&text)),
            Some("sources") => out.extend(parse_deb822_sources(&text)),
            _ => {}
        }
    }
    out
}

/// `deb [options] URI SUITE COMPONENT...` lines.
pub fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
            rest.drain(..=end);
        }
        if let [uri, suite, ..] = rest[..] {
            out.push(AptSource {
                uri: uri.trim_end_matches('/').to_string(),
                suite: suite.to_string(),
            });
        }
    }
    out
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Enabled:`).
pub fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        if get("enabled").eq_ignore_ascii_case("no")
            || !get("types").split_whitespace().any(|t| t == "deb")
        {
            continue;
        }
        for uri in get("uris").split_whitespace() {
            for suite in get("suites").split_whitespace() {
                out.push(AptSource {
                    uri: uri.trim_end_matches('/').to_string(),
                    suite: suite.to_string(),
                });
            }
        }
    }
    out
}

/// The recipe of the base image: which Debian, which packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRecipe {
    /// Release and mirrors.
    pub source: DebianSource,
    /// Packages installed on top of debootstrap's minimal base.
    pub packages: Vec<String>,
}

/// The image configuration the base is imported with (so the harness's layer on top is a
/// single `COPY`: on a storage driver without native diffs, such as fuse-overlayfs, every
/// build instruction over a large image costs a walk of the whole tree).
pub fn base_changes() -> Vec<String> {
    vec![
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "ENV HOME=/root".into(),
        "WORKDIR /workspace".into(),
        format!("EXPOSE {CDP_PORT}/tcp {VNC_PORT}/tcp"),
        format!(r#"CMD ["{START_PATH}"]"#),
    ]
}

impl BaseRecipe {
    /// The recipe for this machine: [`DebianSource::from_host`] and [`PACKAGES`].
    pub fn from_host() -> BaseRecipe {
        BaseRecipe {
            source: DebianSource::from_host(),
            packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The tag: a hash of the package list, the suites and the build steps (not of the mirror
    /// URLs: another mirror of the same suites serves the same packages).
    pub fn tag(&self) -> String {
        let mut h = Sha256::new();
        h.update(
            format!("recipe {RECIPE_VERSION}\0user {BROWSER_USER} {BROWSER_UID}\0").as_bytes(),
        );
        for s in &self.source.sources {
            h.update(format!("suite {}\0", s.suite).as_bytes());
        }
        let mut packages = self.packages.clone();
        packages.sort();
        for p in &packages {
            h.update(format!("package {p}\0").as_bytes());
        }
        for c in base_changes() {
            h.update(format!("change {c}\0").as_bytes());
        }
        let digest = hex::encode(h.finalize());
        format!("{BROWSER_BASE_REPO}:{}", &digest[..16])
    }
}

/// Figures of one `ensure` of the browser image.
#[derive(Debug, Clone, PartialEq)]
pub struct BrowserImageReport {
    /// The browser sandbox image.
    pub tag: String,
    /// The imported Debian base it is built on.
    pub base_tag: String,
    /// The base was built in this call (else it was cached).
    pub built_base: bool,
    /// mmdebstrap streaming into the engine's import, when the base was built.
    pub bootstrap: Option<Duration>,
    /// The whole call (the executor build and the harness's layer included).
    pub total: Duration,
    /// Size of the browser image as the engine reports it, bytes.
    pub size_bytes: Option<i64>,
}

/// The spec of the browser sandbox image: the base plus the executor and the start script
/// (its configuration comes from the base, see [`base_changes`]). The base's image id is
/// recorded in the image, so a rebuilt base gives a new tag.
pub fn browser_image_spec(base_tag: &str, base_id: &str) -> Result<ImageSpec, ImageError> {
    Ok(ImageSpec {
        repo: BROWSER_IMAGE_REPO.into(),
        base: Some(base_tag.to_string()),
        entries: vec![
            RootEntry::HostFile(
                executor_binary()?,
                EXECUTOR_PATH.trim_start_matches('/').into(),
                0o755,
            ),
            RootEntry::Text(
                START_PATH.trim_start_matches('/').into(),
                START_SCRIPT.as_bytes().to_vec(),
                0o755,
            ),
            RootEntry::Text(
                "etc/sandbox-harness-base".into(),
                format!("{base_tag} {base_id}\n").into_bytes(),
                0o644,
            ),
        ],
        dockerfile_tail: Vec::new(),
    })
}

/// The image browser sandboxes run: `SANDBOX_BROWSER_IMAGE`, else the browser image built here
/// (see [`ensure_browser_image_report`]).
pub async fn ensure_browser_image(docker: &Docker) -> Result<String, ImageError> {
    if let Ok(image) = std::env::var("SANDBOX_BROWSER_IMAGE")
        && !image.is_empty()
    {
        return Ok(image);
    }
    Ok(ensure_browser_image_report(docker, false).await?.tag)
}

async fn spec_for(base_tag: &str, base_id: &str) -> Result<ImageSpec, ImageError> {
    let (t, i) = (base_tag.to_string(), base_id.to_string());
    tokio::task::spawn_blocking(move || browser_image_spec(&t, &i))
        .await
        .map_err(|e| ImageError::Io(std::io::Error::other(e)))?
}

async fn image_id(docker: &Docker, tag: &str) -> Option<String> {
    docker.inspect_image(tag).await.ok().and_then(|i| i.id)
}

/// Builds the browser image unless it exists (`rebuild` builds the base again even then, and
/// removes the images it replaces when no container uses them), and says what it did. One
/// build at a time per machine: a lock file in the cache directory serialises builds across
/// processes.
pub async fn ensure_browser_image_report(
    docker: &Docker,
    rebuild: bool,
) -> Result<BrowserImageReport, ImageError> {
    let started = Instant::now();
    let recipe = BaseRecipe::from_host();
    let base_tag = recipe.tag();
    let mut report = BrowserImageReport {
        tag: String::new(),
        base_tag: base_tag.clone(),
        built_base: false,
        bootstrap: None,
        total: Duration::ZERO,
        size_bytes: None,
    };
    let mut cached = None;
    if !rebuild && let Some(id) = image_id(docker, &base_tag).await {
        let tag = spec_for(&base_tag, &id).await?.tag()?;
        if docker.inspect_image(&tag).await.is_ok() {
            cached = Some(tag);
        }
    }
    let tag = match cached {
        Some(tag) => tag,
        None => {
            let cache = cache_dir();
            let lock = {
                let cache = cache.clone();
                tokio::task::spawn_blocking(move || lock_builds(&cache))
                    .await
                    .map_err(|e| ImageError::Io(std::io::Error::other(e)))??
            };
            // Another process may have built the base while this one waited for the lock.
            let old = image_id(docker, &base_tag).await;
            if rebuild || old.is_none() {
                build_base(docker, &recipe, &cache, &mut report).await?;
            }
            let id = image_id(docker, &base_tag).await.ok_or_else(|| {
                build_error(&base_tag, "the base image is missing after its build")
            })?;
            let tag = spec_for(&base_tag, &id).await?.ensure(docker).await?;
            if let Some(old) = old.filter(|o| *o != id) {
                remove_replaced(docker, &base_tag, &old).await;
            }
            drop(lock);
            tag
        }
    };
    report.size_bytes = docker.inspect_image(&tag).await.ok().and_then(|i| i.size);
    report.tag = tag;
    report.total = started.elapsed();
    Ok(report)
}

/// Removes the browser image built on a replaced base, and that base, unless a container still
/// uses them (then they stay; the engine refuses without `force`).
async fn remove_replaced(docker: &Docker, base_tag: &str, old_base_id: &str) {
    let old_tag = match spec_for(base_tag, old_base_id).await.and_then(|s| s.tag()) {
        Ok(t) => t,
        Err(_) => return,
    };
    for image in [old_tag.as_str(), old_base_id] {
        if let Err(e) = docker
            .remove_image(
                image,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            tracing::info!(image, error = %e, "a replaced browser image stays");
        }
    }
}

/// Where downloaded packages and build directories live: `SANDBOX_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/sandbox-harness`, else `~/.cache/sandbox-harness`.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("SANDBOX_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("sandbox-harness")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("sandbox-harness")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp/sandbox-harness"))
}

fn lock_builds(cache: &Path) -> Result<std::fs::File, ImageError> {
    std::fs::create_dir_all(cache)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join("browser-build.lock"))?;
    f.lock()?;
    Ok(f)
}

fn build_error(tag: &str, detail: impl Into<String>) -> ImageError {
    ImageError::Build {
        tag: tag.to_string(),
        detail: detail.into(),
    }
}

/// The lines of this machine's apt configuration the new root's apt must share to reach the
/// same mirrors (release-file date checks, proxies), as `Name "value";` options.
fn host_apt_settings() -> Vec<String> {
    let Ok(out) = Command::new("apt-config").arg("dump").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            [
                "Acquire::Check-Valid-Until ",
                "Acquire::Check-Date ",
                "Acquire::http::Proxy ",
                "Acquire::https::Proxy ",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(str::to_string)
        .collect()
}

/// The `mmdebstrap` argv that writes the base's root filesystem as a tar to stdout. It runs
/// in the package cache directory: the hooks copy cached packages in before the download and
/// every package back out afterwards (mmdebstrap's documented caching recipe). Hooks are
/// constants; nothing from outside is pasted into them.
pub fn mmdebstrap_argv(recipe: &BaseRecipe, apt_settings: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "--variant=apt".into(),
        "--format=tar".into(),
        format!("--include={}", recipe.packages.join(",")),
        // The root is thrown away if the build fails: no fsync per unpacked file.
        "--dpkgopt=force-unsafe-io".into(),
        "--dpkgopt=path-exclude=/usr/share/man/*".into(),
        "--dpkgopt=path-exclude=/usr/share/info/*".into(),
        "--dpkgopt=path-exclude=/usr/share/locale/*".into(),
        "--aptopt=APT::Install-Recommends \"false\"".into(),
    ];
    argv.extend(apt_settings.iter().map(|s| format!("--aptopt={s}")));
    argv.extend(
        [
            "--skip=essential/unlink",
            "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
            "--setup-hook=sync-in . /var/cache/apt/archives/",
            "--customize-hook=sync-out /var/cache/apt/archives .",
            "--customize-hook=mkdir -p \"$1\"/workspace",
        ]
        .map(String::from),
    );
    argv.push(format!(
        "--customize-hook=chroot \"$1\" useradd --create-home --uid {BROWSER_UID} --user-group --shell /bin/sh {BROWSER_USER}"
    ));
    argv.push(recipe.source.suite.clone());
    argv.push("-".into());
    argv.extend(
        recipe
            .source
            .sources
            .iter()
            .map(|s| format!("deb {} {} main", s.uri, s.suite)),
    );
    argv
}

/// Builds the base: `mmdebstrap` writes the root filesystem as a tar to its stdout, which is
/// streamed into the engine as an image import (nothing of it is held in memory or on disk
/// here).
async fn build_base(
    docker: &Docker,
    recipe: &BaseRecipe,
    cache: &Path,
    report: &mut BrowserImageReport,
) -> Result<(), ImageError> {
    let tag = recipe.tag();
    let debs = cache.join("debs").join(&recipe.source.suite);
    std::fs::create_dir_all(&debs)?;
    let settings = tokio::task::spawn_blocking(host_apt_settings)
        .await
        .map_err(|e| ImageError::Io(std::io::Error::other(e)))?;
    let argv = mmdebstrap_argv(recipe, &settings);
    tracing::info!(image = %tag, "bootstrapping Debian {} with mmdebstrap", recipe.source.suite);
    let started = Instant::now();
    let mut child = tokio::process::Command::new("mmdebstrap")
        .args(&argv)
        .current_dir(&debs)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImageError::MissingInput {
            what: "mmdebstrap".into(),
            path: "PATH".into(),
            hint: format!("{e}; install Debian's mmdebstrap (scripts/setup.sh does)"),
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| build_error(&tag, "mmdebstrap has no stdout"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| build_error(&tag, "mmdebstrap has no stderr"))?;
    let log = tokio::spawn(tail_of(stderr, 8 * 1024));
    let (repo, version) = tag.split_once(':').unwrap_or((&tag, "latest"));
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(base_changes())
        .build();
    let body = bollard::body_try_stream(ReaderStream::new(stdout));
    let mut stream = docker.create_image(Some(opts), Some(body), None);
    let mut engine_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(m) = info.error_detail.and_then(|d| d.message) {
                    engine_error = Some(m);
                }
            }
            Err(e) => {
                engine_error = Some(e.to_string());
                break;
            }
        }
    }
    let status = child.wait().await?;
    let log = log.await.unwrap_or_default();
    if !status.success() {
        return Err(build_error(
            &tag,
            format!(
                "mmdebstrap failed ({status}); it needs root or unprivileged user namespaces, \
                 and the Debian mirror {}. Its last words:\n{log}",
                recipe.source.mirror
            ),
        ));
    }
    if let Some(e) = engine_error {
        return Err(build_error(
            &tag,
            format!("the engine refused the import: {e}"),
        ));
    }
    docker
        .inspect_image(&tag)
        .await
        .map_err(|e| build_error(&tag, format!("imported, yet not found: {e}")))?;
    report.bootstrap = Some(started.elapsed());
    report.built_base = true;
    tracing::info!(image = %tag, seconds = started.elapsed().as_secs_f64(), "imported the browser base image");
    Ok(())
}

/// The last `keep` bytes a reader produces, as text (a build's log: bounded memory).
async fn tail_of(mut r: impl tokio::io::AsyncRead + Unpin, keep: usize) -> String {
    use tokio::io::AsyncReadExt;
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_source_formats() {
        let one = "# comment\ndeb http://m/debian bookworm main\ndeb [arch=amd64 signed-by=/k] http://m/sec/ bookworm-security main\ndeb-src http://m/debian bookworm main\n";
        assert_eq!(
            parse_one_line_sources(one),
            vec![
                AptSource {
                    uri: "http://m/debian".into(),
                    suite: "bookworm".into()
                },
                AptSource {
                    uri: "http://m/sec".into(),
                    suite: "bookworm-security".into()
                },
            ]
        );
        let deb822 = "Types: deb\n# a note\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nEnabled: no\nURIs: http://off\nSuites: bookworm\n\nTypes: deb-src\nURIs: http://src\nSuites: bookworm\n";
        let got = parse_deb822_sources(deb822);
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|a| (a.uri.as_str(), a.suite.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("http://deb.debian.org/debian", "bookworm"),
                ("http://deb.debian.org/debian", "bookworm-updates"),
                ("http://deb.debian.org/debian-security", "bookworm-security"),
            ]
        );
    }

    #[test]
    fn selects_release_updates_and_security() {
        let host = parse_one_line_sources(
            "deb http://a/debian bookworm main\ndeb http://a/debian bookworm-updates main\ndeb http://s/debian-security bookworm-security main\ndeb http://x trixie main\n",
        );
        let s = DebianSource::select("bookworm", &host, None);
        assert_eq!(s.mirror, "http://a/debian");
        assert_eq!(
            s.sources_list(),
            "deb http://a/debian bookworm main\ndeb http://a/debian bookworm-updates main\ndeb http://s/debian-security bookworm-security main\n"
        );
        // An explicit mirror replaces the release's and the updates' mirror, not security's.
        let s = DebianSource::select("bookworm", &host, Some("http://m/debian".into()));
        assert!(s.sources_list().starts_with(
            "deb http://m/debian bookworm main\ndeb http://m/debian bookworm-updates"
        ));
        assert!(s.sources_list().contains("http://s/debian-security"));
        // No host sources (not Debian): Debian's own mirrors.
        let s = DebianSource::select("bookworm", &[], None);
        assert_eq!(s.mirror, DEFAULT_MIRROR);
        assert_eq!(s.sources.len(), 2);
    }

    #[test]
    fn base_tag_follows_packages_and_suites_not_mirrors() {
        let host = parse_one_line_sources("deb http://a/debian bookworm main\n");
        let r = BaseRecipe {
            source: DebianSource::select("bookworm", &host, None),
            packages: vec!["chromium".into(), "xvfb".into()],
        };
        let mut other_mirror = r.clone();
        other_mirror.source = DebianSource::select("bookworm", &host, Some("http://b".into()));
        assert_eq!(r.tag(), other_mirror.tag());
        let mut reordered = r.clone();
        reordered.packages.reverse();
        assert_eq!(r.tag(), reordered.tag());
        let mut more = r.clone();
        more.packages.push("socat".into());
        assert_ne!(r.tag(), more.tag());
        let mut trixie = r.clone();
        trixie.source = DebianSource::select("trixie", &host, None);
        assert_ne!(r.tag(), trixie.tag());
        assert!(r.tag().starts_with("sandbox-harness/browser-base:"));
    }
}
