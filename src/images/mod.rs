//! Builds the images the harness needs, offline, from files on this machine: no registry is
//! reachable and the engine starts with no images.
//!
//! An image is a build `FROM scratch` (or from a base image built here) whose context is a root
//! filesystem assembled here (a static busybox with its applet links, a few directories and
//! files, optionally the static executor). The context is written to a temporary tar file and
//! streamed to the engine, never held in memory. Tags carry a hash of the inputs, so a rebuild
//! happens only when they change.
//!
//! The browser image ([`browser`]) adds a Debian root filesystem with Chromium, a virtual
//! display and a VNC server, bootstrapped from Debian's mirrors and imported as its base.

use std::io::Write;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

pub mod browser;

/// The default sandbox image name (without tag).
pub const SANDBOX_IMAGE_REPO: &str = "sandbox-harness/sandbox";

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file the image needs is missing on this machine.
    #[error("{what} not found at {path}: {hint}")]
    MissingInput {
        /// What was looked for.
        what: String,
        /// Where.
        path: String,
        /// How to get it.
        hint: String,
    },
    /// Reading inputs or writing the context failed.
    #[error("building the image context failed: {0}")]
    Io(#[from] std::io::Error),
    /// The engine refused or failed the build.
    #[error("the Docker engine failed to build {tag}: {detail}")]
    Build {
        /// The image tag.
        tag: String,
        /// The engine's message.
        detail: String,
    },
}

/// One entry of an image's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEntry {
    /// A directory with a mode.
    Dir(String, u32),
    /// A file copied from the host, with a mode.
    HostFile(PathBuf, String, u32),
    /// A file with literal content.
    Text(String, Vec<u8>, u32),
    /// A symbolic link: path, target.
    Symlink(String, String),
}

/// What an image holds and how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Repository name, e.g. `sandbox-harness/sandbox`.
    pub repo: String,
    /// The image the root filesystem is copied onto (`None`: `FROM scratch`).
    pub base: Option<String>,
    /// Root filesystem entries.
    pub entries: Vec<RootEntry>,
    /// Extra Dockerfile lines after `COPY` (ENV, WORKDIR, ENTRYPOINT...).
    pub dockerfile_tail: Vec<String>,
}

/// Finds the static busybox: `$SANDBOX_BUSYBOX`, else /bin/busybox or /usr/bin/busybox.
pub fn find_busybox() -> Result<PathBuf, ImageError> {
    if let Some(p) = std::env::var_os("SANDBOX_BUSYBOX") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ImageError::MissingInput {
                what: "busybox (SANDBOX_BUSYBOX)".into(),
                path: p.display().to_string(),
                hint: "point SANDBOX_BUSYBOX at a static busybox binary".into(),
            })
        };
    }
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| ImageError::MissingInput {
            what: "a static busybox".into(),
            path: "/bin/busybox".into(),
            hint: "install Debian's busybox-static (scripts/setup.sh does)".into(),
        })
}

/// The applet paths of a busybox binary (`busybox --list-full`), e.g. `bin/sh`.
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()?;
    if !out.status.success() {
        return Err(ImageError::MissingInput {
            what: "a working busybox".into(),
            path: busybox.display().to_string(),
            hint: "`busybox --list-full` failed; install busybox-static".into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != "bin/busybox")
        .collect())
}

/// The root filesystem of a minimal POSIX userland: busybox, its applets, /tmp, /workspace,
/// /root and a passwd file.
pub fn busybox_rootfs(busybox: &Path) -> Result<Vec<RootEntry>, ImageError> {
    let mut entries = vec![
        RootEntry::Dir("bin".into(), 0o755),
        RootEntry::Dir("sbin".into(), 0o755),
        RootEntry::Dir("usr".into(), 0o755),
        RootEntry::Dir("usr/bin".into(), 0o755),
        RootEntry::Dir("usr/sbin".into(), 0o755),
        RootEntry::Dir("etc".into(), 0o755),
        RootEntry::Dir("tmp".into(), 0o1777),
        RootEntry::Dir("root".into(), 0o700),
        RootEntry::Dir("workspace".into(), 0o755),
        RootEntry::Dir("proc".into(), 0o755),
        RootEntry::Dir("sys".into(), 0o755),
        RootEntry::Dir("dev".into(), 0o755),
        RootEntry::HostFile(busybox.to_path_buf(), "bin/busybox".into(), 0o755),
        RootEntry::Text(
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
        ),
        RootEntry::Text(
            "etc/group".into(),
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
    ];
    for applet in busybox_applets(busybox)? {
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        entries.push(RootEntry::Symlink(applet, target));
    }
    Ok(entries)
}

/// The spec of the default sandbox image, which both backends run: the busybox userland plus
/// the static executor (the Docker backend's agent, the Cloud Run job's worker).
pub fn sandbox_image_spec() -> Result<ImageSpec, ImageError> {
    let busybox = find_busybox()?;
    let mut entries = busybox_rootfs(&busybox)?;
    entries.push(RootEntry::Dir("usr/local".into(), 0o755));
    entries.push(RootEntry::Dir("usr/local/bin".into(), 0o755));
    entries.push(RootEntry::HostFile(
        executor_binary()?,
        EXECUTOR_PATH.trim_start_matches('/').into(),
        0o755,
    ));
    Ok(ImageSpec {
        repo: SANDBOX_IMAGE_REPO.into(),
        base: None,
        entries,
        dockerfile_tail: vec![
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
                .into(),
            "WORKDIR /workspace".into(),
            r#"CMD ["sleep", "infinity"]"#.into(),
        ],
    })
}

impl ImageSpec {
    /// The tag: repository plus a hash of every input (so changed inputs give a new tag).
    pub fn tag(&self) -> Result<String, ImageError> {
        let mut h = Sha256::new();
        if let Some(base) = &self.base {
            h.update(format!("FROM {base}\0").as_bytes());
        }
        for line in &self.dockerfile_tail {
            h.update(line.as_bytes());
            h.update([0]);
        }
        for e in &self.entries {
            match e {
                RootEntry::Dir(p, m) => h.update(format!("D{p}\0{m}\0").as_bytes()),
                RootEntry::Symlink(p, t) => h.update(format!("L{p}\0{t}\0").as_bytes()),
                RootEntry::Text(p, c, m) => {
                    h.update(format!("T{p}\0{m}\0").as_bytes());
                    h.update(c);
                }
                RootEntry::HostFile(src, p, m) => {
                    h.update(format!("F{p}\0{m}\0").as_bytes());
                    let mut f = std::fs::File::open(src)?;
                    std::io::copy(&mut f, &mut HashWriter(&mut h))?;
                }
            }
        }
        let digest = hex::encode(h.finalize());
        Ok(format!("{}:{}", self.repo, &digest[..16]))
    }

    /// Writes the build context (Dockerfile + rootfs/) as a tar file.
    fn write_context(&self, out: &Path) -> Result<(), ImageError> {
        let file = std::fs::File::create(out)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        tar.follow_symlinks(false);
        let mut dockerfile = format!(
            "FROM {}\nCOPY rootfs/ /\n",
            self.base.as_deref().unwrap_or("scratch")
        );
        for line in &self.dockerfile_tail {
            dockerfile.push_str(line);
            dockerfile.push('\n');
        }
        append_bytes(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644)?;
        for e in &self.entries {
            match e {
                RootEntry::Dir(p, mode) => {
                    let mut hdr = tar::Header::new_gnu();
                    hdr.set_entry_type(tar::EntryType::Directory);
                    hdr.set_mode(*mode);
                    hdr.set_size(0);
                    hdr.set_mtime(0);
                    tar.append_data(&mut hdr, format!("rootfs/{p}/"), std::io::empty())?;
                }
                RootEntry::HostFile(src, p, mode) => {
                    let f = std::fs::File::open(src)?;
                    let mut hdr = tar::Header::new_gnu();
                    hdr.set_size(f.metadata()?.len());
                    hdr.set_mode(*mode);
                    hdr.set_mtime(0);
                    tar.append_data(&mut hdr, format!("rootfs/{p}"), f)?;
                }
                RootEntry::Text(p, content, mode) => {
                    append_bytes(&mut tar, &format!("rootfs/{p}"), content, *mode)?
                }
                RootEntry::Symlink(p, target) => {
                    let mut hdr = tar::Header::new_gnu();
                    hdr.set_entry_type(tar::EntryType::Symlink);
                    hdr.set_size(0);
                    hdr.set_mode(0o777);
                    hdr.set_mtime(0);
                    tar.append_link(&mut hdr, format!("rootfs/{p}"), target)?;
                }
            }
        }
        tar.into_inner()?.flush()?;
        Ok(())
    }

    /// Builds the image unless an image with the same tag exists; returns the tag.
    pub async fn ensure(&self, docker: &Docker) -> Result<String, ImageError> {
        let tag = self.tag()?;
        if docker.inspect_image(&tag).await.is_ok() {
            return Ok(tag);
        }
        let dir = tempfile::tempdir()?;
        let ctx = dir.path().join("context.tar");
        self.write_context(&ctx)?;
        let file = tokio::fs::File::open(&ctx).await?;
        let body = bollard::body_try_stream(ReaderStream::new(file));
        let opts = BuildImageOptionsBuilder::default()
            .t(&tag)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream = docker.build_image(opts, None, Some(body));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        return Err(ImageError::Build { tag, detail: err });
                    }
                    if let Some(s) = info.stream {
                        tracing::debug!(image = %tag, "{}", s.trim_end());
                    }
                }
                Err(e) => {
                    return Err(ImageError::Build {
                        tag,
                        detail: e.to_string(),
                    });
                }
            }
        }
        tracing::info!(image = %tag, "built image");
        Ok(tag)
    }
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    content: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut hdr = tar::Header::new_gnu();
    hdr.set_size(content.len() as u64);
    hdr.set_mode(mode);
    hdr.set_mtime(0);
    tar.append_data(&mut hdr, path, content)
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the executor binary lands inside the sandbox image.
pub const EXECUTOR_PATH: &str = "/usr/local/bin/sandbox-executor";

/// The static executor binary: `$SANDBOX_EXECUTOR_BIN`, else built here with cargo (a no-op
/// when it is up to date) as a static-pie glibc binary that runs in a `FROM scratch` image.
pub fn executor_binary() -> Result<PathBuf, ImageError> {
    if let Some(p) = std::env::var_os("SANDBOX_EXECUTOR_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ImageError::MissingInput {
                what: "the executor binary (SANDBOX_EXECUTOR_BIN)".into(),
                path: p.display().to_string(),
                hint: "point SANDBOX_EXECUTOR_BIN at a static sandbox-executor binary".into(),
            })
        };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target").join("executor");
    let triple = "x86_64-unknown-linux-gnu";
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "sandbox-executor",
            "--target",
            triple,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .map_err(|e| ImageError::MissingInput {
            what: "cargo (to build the executor)".into(),
            path: root.display().to_string(),
            hint: format!("{e}; or set SANDBOX_EXECUTOR_BIN"),
        })?;
    if !out.status.success() {
        return Err(ImageError::Build {
            tag: "sandbox-executor binary".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(target_dir
        .join(triple)
        .join("release")
        .join("sandbox-executor"))
}

/// The image Cloud Run jobs run (it must hold the executor): `SANDBOX_EXECUTOR_IMAGE`, else the
/// default sandbox image.
pub async fn ensure_executor_image(docker: &Docker) -> Result<String, ImageError> {
    if let Ok(image) = std::env::var("SANDBOX_EXECUTOR_IMAGE")
        && !image.is_empty()
    {
        return Ok(image);
    }
    default_image(docker).await
}

/// The image Docker sandboxes run: `SANDBOX_IMAGE`, else the default sandbox image. A foreign
/// image without the executor still works, with one engine exec per command.
pub async fn ensure_sandbox_image(docker: &Docker) -> Result<String, ImageError> {
    if let Ok(image) = std::env::var("SANDBOX_IMAGE")
        && !image.is_empty()
    {
        return Ok(image);
    }
    default_image(docker).await
}

async fn default_image(docker: &Docker) -> Result<String, ImageError> {
    // Building the executor runs cargo: keep it off the async threads.
    let spec = tokio::task::spawn_blocking(sandbox_image_spec)
        .await
        .map_err(|e| ImageError::Io(std::io::Error::other(e)))??;
    spec.ensure(docker).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_changes_with_inputs() {
        let a = ImageSpec {
            repo: "x/y".into(),
            base: None,
            entries: vec![RootEntry::Text("a".into(), b"1".to_vec(), 0o644)],
            dockerfile_tail: vec![],
        };
        let mut b = a.clone();
        b.entries = vec![RootEntry::Text("a".into(), b"2".to_vec(), 0o644)];
        assert_ne!(a.tag().unwrap(), b.tag().unwrap());
        let mut c = a.clone();
        c.base = Some("x/base:1".into());
        assert_ne!(a.tag().unwrap(), c.tag().unwrap());
        assert!(a.tag().unwrap().starts_with("x/y:"));
    }
}
