//! The on-disk store behind the emulated Cloud Storage API.
//!
//! Layout under `<state_dir>/storage/`:
//!
//! ```text
//! <bucket>/bucket.json                 bucket resource (name, location, storageClass, lifecycle, ...)
//! <bucket>/objects/<object name>       each object as a plain file ('/' in names = directories)
//! <bucket>/meta/<sha256(name)>.json    sidecar: generation, metageneration, contentType, hashes,
//!                                      times, custom metadata, and the file's mtime (ns) and size
//!                                      at the last API write
//! .tmp/<uuid>                          uploads being spooled (renamed into place when complete)
//! .uploads/<upload id>                 resumable upload sessions' received bytes
//! ```
//!
//! A file under `objects/` without a sidecar, or whose mtime/size differ from the sidecar's
//! (written by a container through a bind mount), is still an object: its generation is its
//! mtime in ns and its hashes are computed on first use and cached in a fresh sidecar.
//!
//! Divergence from Cloud Storage: object names map to paths, so names with empty, `.` or `..`
//! segments, NUL, a segment over 255 bytes or a total over 1024 bytes are rejected (400), and an
//! object `a` cannot coexist with `a/b` (the second write answers 409). Symlinks and other
//! non-regular files under `objects/` are not listed.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use md5::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::emulator::server::{ApiError, Clock};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// MD5 and CRC32C computed together over a stream.
#[derive(Clone, Default)]
pub struct Hashes {
    md5: md5::Md5,
    crc: u32,
}

impl Hashes {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.crc = crc32c::crc32c_append(self.crc, data);
    }
    /// (md5 base64, crc32c base64 of the big-endian value).
    pub fn finish(self) -> (String, String) {
        (
            B64.encode(self.md5.finalize()),
            B64.encode(self.crc.to_be_bytes()),
        )
    }
}

/// Sidecar metadata of one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Generation (ns timestamp of the write).
    pub generation: i64,
    /// Metageneration.
    pub metageneration: i64,
    /// Content type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// MD5, base64 (empty when not computed).
    pub md5: String,
    /// CRC32C, base64 big-endian (empty when not computed).
    pub crc32c: String,
    /// Creation time.
    pub time_created: DateTime<Utc>,
    /// Last update time.
    pub updated: DateTime<Utc>,
    /// File mtime in ns at the last write through the API (or hash caching).
    pub file_mtime_ns: i64,
    /// Custom metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Content-Encoding, if set.
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// Cache-Control, if set.
    #[serde(default)]
    pub cache_control: Option<String>,
}

impl ObjectMeta {
    /// The JSON object resource as the real API returns it.
    pub fn resource(&self, bucket: &str, base_url: &str) -> Value {
        let enc = encode_component(&self.name);
        let mut v = json!({
            "kind": "storage#object",
            "id": format!("{bucket}/{}/{}", self.name, self.generation),
            "selfLink": format!("{base_url}/storage/v1/b/{bucket}/o/{enc}"),
            "mediaLink": format!("{base_url}/download/storage/v1/b/{bucket}/o/{enc}?generation={}&alt=media", self.generation),
            "name": self.name,
            "bucket": bucket,
            "generation": self.generation.to_string(),
            "metageneration": self.metageneration.to_string(),
            "contentType": self.content_type,
            "storageClass": "STANDARD",
            "size": self.size.to_string(),
            "md5Hash": self.md5,
            "crc32c": self.crc32c,
            "etag": B64.encode(format!("{}:{}", self.generation, self.metageneration)),
            "timeCreated": rfc3339(self.time_created),
            "updated": rfc3339(self.updated),
            "timeStorageClassUpdated": rfc3339(self.time_created),
        });
        if !self.metadata.is_empty() {
            v["metadata"] = json!(self.metadata);
        }
        if let Some(e) = &self.content_encoding {
            v["contentEncoding"] = json!(e);
        }
        if let Some(c) = &self.cache_control {
            v["cacheControl"] = json!(c);
        }
        v
    }

    /// The `x-goog-hash` header value.
    pub fn goog_hash(&self) -> String {
        format!("crc32c={},md5={}", self.crc32c, self.md5)
    }
}

/// RFC 3339 with milliseconds and `Z`, as Cloud Storage formats times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Percent-encodes a path component (everything but unreserved characters).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What an upload sets besides the bytes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NewObject {
    /// Name (may come from the metadata or the query).
    pub name: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Custom metadata.
    pub metadata: BTreeMap<String, String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
    /// Expected MD5 (base64), checked when given.
    pub md5_hash: Option<String>,
    /// Expected CRC32C (base64), checked when given.
    pub crc32c: Option<String>,
}

/// Generation / metageneration preconditions of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `ifGenerationMatch` (0 = the object must not exist).
    pub if_generation_match: Option<i64>,
    /// `ifGenerationNotMatch`.
    pub if_generation_not_match: Option<i64>,
    /// `ifMetagenerationMatch`.
    pub if_metageneration_match: Option<i64>,
    /// `ifMetagenerationNotMatch`.
    pub if_metageneration_not_match: Option<i64>,
}

impl Preconditions {
    /// Parses them from a query string; 400 on a non-integer value.
    pub fn from_query(q: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Preconditions::default();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "ifGenerationMatch" => &mut p.if_generation_match,
                "ifGenerationNotMatch" => &mut p.if_generation_not_match,
                "ifMetagenerationMatch" => &mut p.if_metageneration_match,
                "ifMetagenerationNotMatch" => &mut p.if_metageneration_not_match,
                _ => continue,
            };
            *slot = Some(
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("Invalid value for {k}: {v}")))?,
            );
        }
        Ok(p)
    }

    /// True when any is set.
    pub fn any(&self) -> bool {
        *self != Preconditions::default()
    }

    /// Checks against the current (generation, metageneration), `None` when absent.
    pub fn check(&self, current: Option<(i64, i64)>) -> Result<(), ApiError> {
        let fail = || {
            ApiError::precondition("At least one of the pre-conditions you specified did not hold.")
        };
        let (g, m) = match current {
            Some((g, m)) => (g, Some(m)),
            None => (0, None),
        };
        if let Some(want) = self.if_generation_match
            && want != g
        {
            return Err(fail());
        }
        if let Some(not) = self.if_generation_not_match
            && not == g
        {
            return Err(fail());
        }
        if let Some(want) = self.if_metageneration_match
            && m != Some(want)
        {
            return Err(fail());
        }
        if let Some(not) = self.if_metageneration_not_match
            && m == Some(not)
        {
            return Err(fail());
        }
        Ok(())
    }
}

/// Stored bucket resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketMeta {
    /// Name.
    pub name: String,
    /// Project given at insert.
    pub project: String,
    /// Location.
    pub location: String,
    /// Storage class.
    pub storage_class: String,
    /// Lifecycle configuration as given (`{"rule":[...]}`), if any.
    pub lifecycle: Option<Value>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub time_created: DateTime<Utc>,
    /// Update time.
    pub updated: DateTime<Utc>,
    /// Metageneration.
    pub metageneration: i64,
}

impl BucketMeta {
    /// The JSON bucket resource.
    pub fn resource(&self, base_url: &str) -> Value {
        let mut v = json!({
            "kind": "storage#bucket",
            "id": self.name,
            "selfLink": format!("{base_url}/storage/v1/b/{}", self.name),
            "name": self.name,
            "projectNumber": "0",
            "location": self.location,
            "locationType": "region",
            "storageClass": self.storage_class,
            "metageneration": self.metageneration.to_string(),
            "etag": B64.encode(self.metageneration.to_string()),
            "timeCreated": rfc3339(self.time_created),
            "updated": rfc3339(self.updated),
        });
        if let Some(l) = &self.lifecycle {
            v["lifecycle"] = l.clone();
        }
        if !self.labels.is_empty() {
            v["labels"] = json!(self.labels);
        }
        v
    }
}

/// Validates a bucket name per Cloud Storage's rules.
pub fn validate_bucket_name(name: &str) -> Result<(), ApiError> {
    let ok = (3..=222).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && name.split('.').all(|p| !p.is_empty() && p.len() <= 63)
        && !name.starts_with("goog");
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid bucket name: '{name}'"
        )))
    }
}

/// Validates an object name for mapping to a path (see the module docs for the divergence).
pub fn validate_object_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "Invalid object name '{}': {why}",
            name.escape_debug()
        )))
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if name.contains('\0') {
        return bad("contains NUL");
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return bad(
                "empty path segment (leading, trailing or doubled '/'), which the emulator cannot map to a file",
            );
        }
        if seg == "." || seg == ".." {
            return bad("a '.' or '..' segment, which the emulator cannot map to a file");
        }
        if seg.len() > 255 {
            return bad(
                "a '/'-separated segment longer than 255 bytes, which the emulator cannot map to a file",
            );
        }
    }
    Ok(())
}

/// Disk-backed Cloud Storage state shared by the handlers.
pub struct StorageState {
    root: PathBuf,
    clock: Clock,
    base_url: String,
    sweep_interval: Duration,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    last_sweep: Mutex<HashMap<String, (u64, Instant)>>,
    pub(crate) uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<super::api::UploadSession>>>>,
}

/// A file's mtime in nanoseconds (the generation of container-written objects).
pub(crate) fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

impl StorageState {
    /// Opens (creating) the store at `root`.
    pub fn open(
        root: PathBuf,
        clock: Clock,
        base_url: String,
        sweep_interval: Duration,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join(".tmp"))?;
        std::fs::create_dir_all(root.join(".uploads"))?;
        Ok(StorageState {
            root,
            clock,
            base_url,
            sweep_interval,
            locks: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
        })
    }

    /// `<state_dir>/storage`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The emulator's base URL (for selfLink and upload session URIs).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A fresh temp file path on the store's filesystem.
    pub fn temp_path(&self) -> PathBuf {
        self.root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Where a resumable session keeps its bytes.
    pub(crate) fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join(".uploads").join(id)
    }

    fn bucket_root(&self, bucket: &str) -> Option<PathBuf> {
        validate_bucket_name(bucket).ok()?;
        Some(self.root.join(bucket))
    }

    /// The directory holding the bucket's objects as plain files, if the bucket exists.
    pub fn bucket_dir(&self, bucket: &str) -> Option<PathBuf> {
        let r = self.bucket_root(bucket)?;
        r.join("bucket.json").is_file().then(|| r.join("objects"))
    }

    fn lock_for(&self, bucket: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(bucket.to_string()).or_default().clone()
    }

    fn no_bucket(bucket: &str) -> ApiError {
        ApiError::not_found(format!("The specified bucket does not exist: {bucket}"))
    }

    fn no_object(bucket: &str, name: &str) -> ApiError {
        ApiError::not_found(format!("No such object: {bucket}/{name}"))
    }

    // ---- buckets ----

    /// Reads a bucket.
    pub async fn get_bucket(&self, bucket: &str) -> Result<BucketMeta, ApiError> {
        let r = self
            .bucket_root(bucket)
            .ok_or_else(|| Self::no_bucket(bucket))?;
        match tokio::fs::read(r.join("bucket.json")).await {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                ApiError::internal(format!("corrupt bucket metadata for {bucket}: {e}"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Self::no_bucket(bucket)),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_bucket(&self, b: &BucketMeta) -> Result<(), ApiError> {
        let r = self.root.join(&b.name);
        let data = serde_json::to_vec_pretty(b).map_err(|e| ApiError::internal(e.to_string()))?;
        atomic_write(&self.temp_path(), &r.join("bucket.json"), &data).await
    }

    /// Creates a bucket; 409 when it exists.
    pub async fn insert_bucket(
        &self,
        name: &str,
        project: &str,
        location: Option<String>,
        storage_class: Option<String>,
        lifecycle: Option<Value>,
        labels: BTreeMap<String, String>,
    ) -> Result<BucketMeta, ApiError> {
        validate_bucket_name(name)?;
        if let Some(l) = &lifecycle {
            parse_lifecycle(l)?;
        }
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        if self.bucket_dir(name).is_some() {
            return Err(ApiError::conflict(
                "Your previous request to create the named bucket succeeded and you already own it.",
            ));
        }
        let r = self.root.join(name);
        tokio::fs::create_dir_all(r.join("objects")).await?;
        tokio::fs::create_dir_all(r.join("meta")).await?;
        let now = self.clock.now();
        let b = BucketMeta {
            name: name.to_string(),
            project: project.to_string(),
            location: location.unwrap_or_else(|| "US".into()).to_uppercase(),
            storage_class: storage_class.unwrap_or_else(|| "STANDARD".into()),
            lifecycle,
            labels,
            time_created: now,
            updated: now,
            metageneration: 1,
        };
        self.write_bucket(&b).await?;
        Ok(b)
    }

    /// Updates a bucket's lifecycle/labels/storage class (each only when `Some`).
    pub async fn patch_bucket(
        &self,
        bucket: &str,
        lifecycle: Option<Option<Value>>,
        labels: Option<BTreeMap<String, String>>,
        storage_class: Option<String>,
        pre: Preconditions,
    ) -> Result<BucketMeta, ApiError> {
        let lock = self.lock_for(bucket);
        let _g = lock.lock().await;
        let mut b = self.get_bucket(bucket).await?;
        if let Some(want) = pre.if_metageneration_match
            && want != b.metageneration
        {
            return Err(ApiError::precondition(
                "At least one of the pre-conditions you specified did not hold.",
            ));
        }
        if let Some(l) = lifecycle {
            if let Some(v) = &l {
                parse_lifecycle(v)?;
            }
            b.lifecycle = l.filter(|v| !v.is_null());
        }
        if let Some(l) = labels {
            b.labels = l;
        }
        if let Some(s) = storage_class {
            b.storage_class = s;
        }
        b.metageneration += 1;
        b.updated = self.clock.now();
        self.write_bucket(&b).await?;
        Ok(b)
    }

    /// Lists buckets (all projects).
    pub async fn list_buckets(&self) -> Result<Vec<BucketMeta>, ApiError> {
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&self.root).await?;
        while let Some(e) = rd.next_entry().await? {
            if let Some(n) = e.file_name().to_str()
                && !n.starts_with('.')
                && let Ok(b) = self.get_bucket(n).await
            {
                out.push(b);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes an empty bucket; 409 when it holds objects.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), ApiError> {
        let lock = self.lock_for(bucket);
        let _g = lock.lock().await;
        let dir = self
            .bucket_dir(bucket)
            .ok_or_else(|| Self::no_bucket(bucket))?;
        let names = tokio::task::spawn_blocking(move || walk_names(&dir, ""))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        if !names.is_empty() {
            return Err(ApiError::new(
                409,
                "FAILED_PRECONDITION",
                "conflict",
                "The bucket you tried to delete is not empty.",
            ));
        }
        let r = self.root.join(bucket);
        tokio::fs::remove_file(r.join("bucket.json")).await?;
        tokio::fs::remove_dir_all(&r).await?;
        Ok(())
    }

    // ---- objects ----

    fn object_path(&self, bucket: &str, name: &str) -> Result<PathBuf, ApiError> {
        validate_object_name(name)?;
        let dir = self
            .bucket_dir(bucket)
            .ok_or_else(|| Self::no_bucket(bucket))?;
        Ok(dir.join(name))
    }

    fn sidecar_path(&self, bucket: &str, name: &str) -> PathBuf {
        let h = sha2::Sha256::digest(name.as_bytes());
        self.root
            .join(bucket)
            .join("meta")
            .join(format!("{}.json", hex::encode(h)))
    }

    /// The object's metadata; hashes of container-written files computed (and cached) when
    /// `with_hashes`, left empty otherwise.
    pub async fn get_object(
        &self,
        bucket: &str,
        name: &str,
        with_hashes: bool,
    ) -> Result<ObjectMeta, ApiError> {
        let path = self.object_path(bucket, name)?;
        let st = match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(Self::no_object(bucket, name)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(Self::no_object(bucket, name));
            }
            Err(e) => return Err(e.into()),
        };
        let side = self.read_sidecar(bucket, name).await;
        let mt = mtime_ns(&st);
        if let Some(s) = &side
            && s.file_mtime_ns == mt
            && s.size == st.len()
        {
            return Ok(s.clone());
        }
        // Written outside the API: synthesize.
        let modified = DateTime::<Utc>::from(st.modified()?);
        let mut m = ObjectMeta {
            name: name.to_string(),
            generation: mt.max(1),
            metageneration: 1,
            content_type: side
                .as_ref()
                .map(|s| s.content_type.clone())
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: st.len(),
            md5: String::new(),
            crc32c: String::new(),
            time_created: modified,
            updated: modified,
            file_mtime_ns: mt,
            metadata: side
                .as_ref()
                .map(|s| s.metadata.clone())
                .unwrap_or_default(),
            content_encoding: None,
            cache_control: None,
        };
        if !with_hashes {
            return Ok(m);
        }
        let p = path.clone();
        let (md5, crc, size) = match tokio::task::spawn_blocking(move || hash_file(&p))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
        {
            Ok(h) => h,
            // A container moved or removed the file after it was listed: it is gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Self::no_object(bucket, name));
            }
            Err(e) => return Err(e.into()),
        };
        m.md5 = md5;
        m.crc32c = crc;
        // Cache, unless the file changed meanwhile or an API write raced us.
        let lock = self.lock_for(bucket);
        let _g = lock.lock().await;
        if let Ok(st2) = tokio::fs::metadata(&path).await
            && mtime_ns(&st2) == mt
            && st2.len() == size
            && size == m.size
        {
            let cur = self.read_sidecar(bucket, name).await;
            if cur == side {
                let _ = self.write_sidecar(bucket, &m).await;
            }
        }
        Ok(m)
    }

    async fn read_sidecar(&self, bucket: &str, name: &str) -> Option<ObjectMeta> {
        let b = tokio::fs::read(self.sidecar_path(bucket, name))
            .await
            .ok()?;
        serde_json::from_slice::<ObjectMeta>(&b)
            .ok()
            .filter(|m| m.name == name)
    }

    async fn write_sidecar(&self, bucket: &str, m: &ObjectMeta) -> Result<(), ApiError> {
        let data = serde_json::to_vec(m).map_err(|e| ApiError::internal(e.to_string()))?;
        atomic_write(
            &self.temp_path(),
            &self.sidecar_path(bucket, &m.name),
            &data,
        )
        .await
    }

    async fn current(&self, bucket: &str, name: &str) -> Result<Option<ObjectMeta>, ApiError> {
        match self.get_object(bucket, name, false).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves a fully written temp file into place as object `name`, atomically with the
    /// precondition check. `hashes` are (md5, crc32c) base64 of its contents.
    #[allow(clippy::too_many_arguments)] // the spooled file's (path, size, hashes) travel apart
    pub async fn commit_object(
        &self,
        bucket: &str,
        name: &str,
        tmp: &Path,
        size: u64,
        hashes: (String, String),
        new: &NewObject,
        pre: Preconditions,
    ) -> Result<ObjectMeta, ApiError> {
        let path = self.object_path(bucket, name)?;
        if let Some(want) = &new.md5_hash
            && *want != hashes.0
        {
            return Err(ApiError::bad_request(format!(
                "Provided MD5 hash \"{want}\" doesn't match calculated MD5 hash \"{}\".",
                hashes.0
            )));
        }
        if let Some(want) = &new.crc32c
            && *want != hashes.1
        {
            return Err(ApiError::bad_request(format!(
                "Provided CRC32C \"{want}\" doesn't match calculated CRC32C \"{}\".",
                hashes.1
            )));
        }
        let lock = self.lock_for(bucket);
        let _g = lock.lock().await;
        let cur = self.current(bucket, name).await?;
        pre.check(cur.as_ref().map(|c| (c.generation, c.metageneration)))?;
        if let Some(parent) = path.parent()
            && let Err(e) = tokio::fs::create_dir_all(parent).await
        {
            return Err(conflict_or_io(name, e));
        }
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            return Err(ApiError::conflict(format!(
                "The emulator cannot store object '{name}': objects exist under '{name}/' (a name cannot be both a file and a directory)"
            )));
        }
        tokio::fs::rename(tmp, &path)
            .await
            .map_err(|e| conflict_or_io(name, e))?;
        let st = tokio::fs::metadata(&path).await?;
        let now = self.clock.now();
        let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let m = ObjectMeta {
            name: name.to_string(),
            generation: now_ns.max(cur.as_ref().map_or(0, |c| c.generation) + 1),
            metageneration: 1,
            content_type: new
                .content_type
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "application/octet-stream".into()),
            size,
            md5: hashes.0,
            crc32c: hashes.1,
            time_created: now,
            updated: now,
            file_mtime_ns: mtime_ns(&st),
            metadata: new.metadata.clone(),
            content_encoding: new.content_encoding.clone(),
            cache_control: new.cache_control.clone(),
        };
        self.write_sidecar(bucket, &m).await?;
        Ok(m)
    }

    /// Updates an object's metadata (content type, custom metadata); bumps metageneration.
    pub async fn patch_object(
        &self,
        bucket: &str,
        name: &str,
        patch: &NewObject,
        pre: Preconditions,
    ) -> Result<ObjectMeta, ApiError> {
        let mut m = self.get_object(bucket, name, true).await?;
        let lock = self.lock_for(bucket);
        let _g = lock.lock().await;
        let now_cur = self
            .current(bucket, name)
            .await?
            .ok_or_else(|| Self::no_object(bucket, name))?;
        if now_cur.generation != m.generation {
            return Err(ApiError::unavailable(
                "the object changed during the update; retry",
            ));
        }
        pre.check(Some((m.generation, m.metageneration)))?;
        if let Some(c) = &patch.content_type {
            m.content_type = c.clone();
        }
        for (k, v) in &patch.metadata {
            m.metadata.insert(k.clone(), v.clone());
        }
        if patch.cache_control.is_some() {
            m.cache_control = patch.cache_control.clone();
        }
        m.metageneration += 1;
        m.updated = self.clock.now();
        self.write_sidecar(bucket, &m).await?;
        Ok(m)
    }

    /// Deletes an object (checking preconditions atomically).
    pub async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        pre: Preconditions,
    ) -> Result<(), ApiError> {
        let path = self.object_path(bucket, name)?;
        let lock = self.lock_for(bucket);
        let _g = lock.lock().await;
        let cur = self
            .current(bucket, name)
            .await?
            .ok_or_else(|| Self::no_object(bucket, name))?;
        pre.check(Some((cur.generation, cur.metageneration)))?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Self::no_object(bucket, name));
            }
            Err(e) => return Err(e.into()),
        }
        let _ = tokio::fs::remove_file(self.sidecar_path(bucket, name)).await;
        // Remove now-empty parent directories so `a` can be written after `a/b` is gone.
        if let Some(objects) = self.bucket_dir(bucket) {
            let mut dir = path.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == objects
                    || !d.starts_with(&objects)
                    || tokio::fs::remove_dir(&d).await.is_err()
                {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
        Ok(())
    }

    /// All object names under `prefix`, sorted bytewise.
    pub async fn object_names(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, ApiError> {
        let dir = self
            .bucket_dir(bucket)
            .ok_or_else(|| Self::no_bucket(bucket))?;
        // Start the walk at the deepest directory the prefix names.
        let start = match prefix.rfind('/') {
            Some(i) if validate_object_name(&prefix[..i]).is_ok() => prefix[..=i].to_string(),
            _ => String::new(),
        };
        let mut names = tokio::task::spawn_blocking(move || {
            let base = dir.join(start.trim_end_matches('/'));
            if start.is_empty() {
                walk_names(&dir, "")
            } else if base.is_dir() {
                walk_names(&base, &start)
            } else {
                Ok(Vec::new())
            }
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
        names.retain(|n| n.starts_with(prefix));
        names.sort();
        Ok(names)
    }

    /// Runs the bucket's lifecycle rules when the clock moved or the interval passed.
    pub async fn maybe_sweep(&self, bucket: &str) {
        let epoch = self.clock.epoch();
        {
            let mut m = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((e, at)) = m.get(bucket)
                && *e == epoch
                && at.elapsed() < self.sweep_interval
            {
                return;
            }
            m.insert(bucket.to_string(), (epoch, Instant::now()));
        }
        if let Err(e) = self.sweep_lifecycle(bucket).await {
            tracing::warn!(bucket, error = %e, "lifecycle sweep failed");
        }
    }

    /// Deletes the objects the bucket's lifecycle `Delete` rules select now; returns their names.
    pub async fn sweep_lifecycle(&self, bucket: &str) -> Result<Vec<String>, ApiError> {
        let b = self.get_bucket(bucket).await?;
        let Some(l) = &b.lifecycle else {
            return Ok(Vec::new());
        };
        let rules = parse_lifecycle(l)?;
        if rules.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let mut deleted = Vec::new();
        for name in self.object_names(bucket, "").await? {
            let Ok(m) = self.get_object(bucket, &name, false).await else {
                continue;
            };
            let age_days = (now - m.time_created).num_seconds().max(0) / 86_400;
            if rules.iter().any(|r| r.matches(&name, age_days)) {
                let pre = Preconditions {
                    if_generation_match: Some(m.generation),
                    ..Default::default()
                };
                if self.delete_object(bucket, &name, pre).await.is_ok() {
                    tracing::debug!(bucket, name, "lifecycle rule deleted object");
                    deleted.push(name);
                }
            }
        }
        Ok(deleted)
    }
}

/// One enforced lifecycle rule: `Delete` when age and name conditions hold.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteRule {
    /// Minimum age in days.
    pub age: Option<i64>,
    /// Name prefixes (any).
    pub matches_prefix: Vec<String>,
    /// Name suffixes (any).
    pub matches_suffix: Vec<String>,
}

impl DeleteRule {
    fn matches(&self, name: &str, age_days: i64) -> bool {
        self.age.is_none_or(|a| age_days >= a)
            && (self.matches_prefix.is_empty()
                || self
                    .matches_prefix
                    .iter()
                    .any(|p| name.starts_with(p.as_str())))
            && (self.matches_suffix.is_empty()
                || self
                    .matches_suffix
                    .iter()
                    .any(|s| name.ends_with(s.as_str())))
    }
}

/// Parses `{"rule":[...]}`; returns the enforced Delete rules. Rules with other actions or with
/// conditions other than age/matchesPrefix/matchesSuffix are stored but not enforced.
pub fn parse_lifecycle(v: &Value) -> Result<Vec<DeleteRule>, ApiError> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let bad = |m: &str| ApiError::bad_request(format!("Invalid lifecycle configuration: {m}"));
    let rules = match v.get("rule") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("rule must be a list")),
    };
    let mut out = Vec::new();
    for r in rules {
        let action = r
            .get("action")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("each rule needs action.type"))?;
        let cond = r
            .get("condition")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("each rule needs a condition"))?;
        let strings = |k: &str| -> Result<Vec<String>, ApiError> {
            match cond.get(k) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad(&format!("{k} must hold strings")))
                    })
                    .collect(),
                Some(_) => Err(bad(&format!("{k} must be a list"))),
            }
        };
        let age = match cond.get("age") {
            None => None,
            Some(a) => Some(
                a.as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad("age must be a non-negative integer"))?,
            ),
        };
        let rule = DeleteRule {
            age,
            matches_prefix: strings("matchesPrefix")?,
            matches_suffix: strings("matchesSuffix")?,
        };
        let only_known = cond
            .keys()
            .all(|k| matches!(k.as_str(), "age" | "matchesPrefix" | "matchesSuffix"));
        if action == "Delete" && only_known && !cond.is_empty() {
            out.push(rule);
        }
    }
    Ok(out)
}

fn conflict_or_io(name: &str, e: std::io::Error) -> ApiError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotADirectory | K::AlreadyExists | K::IsADirectory | K::DirectoryNotEmpty => {
            ApiError::conflict(format!(
                "The emulator cannot store object '{name}': a prefix of it is an existing object, or objects exist under it (a name cannot be both a file and a directory)"
            ))
        }
        _ => e.into(),
    }
}

async fn atomic_write(tmp: &Path, dst: &Path, data: &[u8]) -> Result<(), ApiError> {
    if let Some(p) = dst.parent() {
        tokio::fs::create_dir_all(p).await?;
    }
    tokio::fs::write(tmp, data).await?;
    if let Err(e) = tokio::fs::rename(tmp, dst).await {
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(e.into());
    }
    Ok(())
}

/// (md5 b64, crc32c b64, bytes hashed) of a file, streamed.
pub fn hash_file(p: &Path) -> std::io::Result<(String, String, u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Hashes::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let (m, c) = h.finish();
    Ok((m, c, n))
}

fn walk_names(dir: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), prefix.to_string())];
    while let Some((d, pre)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let ft = e.file_type()?;
            let full = format!("{pre}{n}");
            if ft.is_dir() {
                stack.push((e.path(), format!("{full}/")));
            } else if ft.is_file() && full.len() <= 1024 {
                out.push(full);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_that_cannot_be_files_are_rejected() {
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "./a",
            "a/../b",
            "a\0b",
            &"x".repeat(1025),
            &"y".repeat(256),
        ] {
            assert_eq!(validate_object_name(bad).unwrap_err().code, 400, "{bad:?}");
        }
        for good in [
            "a",
            "a/b/c.txt",
            "sessions/x/inbox/1.json",
            "with space",
            "ünï",
        ] {
            validate_object_name(good).unwrap();
        }
    }

    #[test]
    fn preconditions_compare_generations() {
        let p = Preconditions {
            if_generation_match: Some(0),
            ..Default::default()
        };
        p.check(None).unwrap();
        assert_eq!(p.check(Some((5, 1))).unwrap_err().code, 412);
        let p = Preconditions {
            if_generation_not_match: Some(5),
            if_metageneration_match: Some(1),
            ..Default::default()
        };
        assert_eq!(p.check(Some((5, 1))).unwrap_err().code, 412);
        p.check(Some((6, 1))).unwrap();
        assert_eq!(p.check(Some((6, 2))).unwrap_err().code, 412);
    }

    #[test]
    fn lifecycle_rules_parse_and_match() {
        let v = json!({"rule":[
            {"action":{"type":"Delete"},"condition":{"age":3,"matchesPrefix":["tmp/"]}},
            {"action":{"type":"SetStorageClass","storageClass":"NEARLINE"},"condition":{"age":1}},
            {"action":{"type":"Delete"},"condition":{"createdBefore":"2020-01-01"}}
        ]});
        let r = parse_lifecycle(&v).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r[0].matches("tmp/a", 3));
        assert!(!r[0].matches("tmp/a", 2));
        assert!(!r[0].matches("keep/a", 9));
        assert!(
            parse_lifecycle(&json!({"rule":[{"action":{"type":"Delete"},"condition":{"age":-1}}]}))
                .is_err()
        );
    }

    #[test]
    fn crc32c_is_big_endian_base64() {
        let mut h = Hashes::default();
        h.update(b"hello world");
        let (md5, crc) = h.finish();
        assert_eq!(md5, "XrY7u+Ae7tCTyyK7j1rNww==");
        assert_eq!(crc, "yZRlqg==");
    }
}
