//! The object store behind the emulated Cloud Storage API: a flat namespace of objects per
//! bucket, content stored by id, metadata in an index.
//!
//! Layout under `<state_dir>/storage/`:
//!
//! ```text
//! buckets/<bucket>/bucket.json               bucket resource (location, class, lifecycle, ...)
//! buckets/<bucket>/index/<sha256(name)>.json one object's metadata: name, generation,
//!                                            metageneration, hashes, times, custom metadata and
//!                                            the id of its content
//! buckets/<bucket>/blobs/<id>                one object's content, never rewritten in place
//! .tmp/<uuid>                                uploads being spooled, compose/copy outputs
//! .uploads/<upload id>                       resumable upload sessions' received bytes
//! ```
//!
//! Names are never mapped to paths: any valid Cloud Storage object name is stored, including
//! names ending in `/` (folder placeholders) and `a` beside `a/b`.
//!
//! A write is committed in this order: the content is spooled to `.tmp` and synced, renamed to
//! `blobs/<new id>`, then the index entry is written to a temp file, synced and renamed over the
//! old entry (the commit point), then the old content is unlinked. A crash at any point leaves
//! either the old object or the new one; content no index entry names is removed when the
//! store is opened again, as are spooled temp files and resumable sessions.
//!
//! The index of every bucket is also held in memory (a sorted map, about 0.5 KiB per object)
//! so listings are range scans; object content is only ever streamed.
//!
//! Known differences from Cloud Storage (also listed in README): no object versioning (only
//! live generations exist; `generation=` of an older one answers 404), no soft delete, no
//! ACLs, no retention or holds, no storage class per object, no customer-supplied encryption
//! keys, flat buckets only (no hierarchical namespace or managed folders), resumable sessions
//! do not survive a restart of the emulator; the per-object mutation limit's burst (5) is the
//! emulator's choice, as Google documents only the rate.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use md5::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::emulator::base::{ApiError, Clock};

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

/// Index entry of one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Generation (ns timestamp of the write, above the previous generation).
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
    /// Id of the content under `blobs/`.
    pub blob: String,
    /// Custom metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Content-Encoding, if set.
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// Cache-Control, if set.
    #[serde(default)]
    pub cache_control: Option<String>,
    /// Content-Disposition, if set.
    #[serde(default)]
    pub content_disposition: Option<String>,
    /// Content-Language, if set.
    #[serde(default)]
    pub content_language: Option<String>,
    /// Number of components of a composed object (none for uploads).
    #[serde(default)]
    pub component_count: Option<u32>,
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
            "crc32c": self.crc32c,
            "etag": B64.encode(format!("{}:{}", self.generation, self.metageneration)),
            "timeCreated": rfc3339(self.time_created),
            "updated": rfc3339(self.updated),
            "timeStorageClassUpdated": rfc3339(self.time_created),
        });
        // Composite objects have no MD5 (Cloud Storage: "Composite objects" page).
        if !self.md5.is_empty() {
            v["md5Hash"] = json!(self.md5);
        }
        if !self.metadata.is_empty() {
            v["metadata"] = json!(self.metadata);
        }
        let optional = [
            ("contentEncoding", &self.content_encoding),
            ("cacheControl", &self.cache_control),
            ("contentDisposition", &self.content_disposition),
            ("contentLanguage", &self.content_language),
        ];
        for (k, val) in optional {
            if let Some(s) = val {
                v[k] = json!(s);
            }
        }
        if let Some(n) = self.component_count {
            v["componentCount"] = json!(n);
        }
        v
    }

    /// The `x-goog-hash` header value.
    pub fn goog_hash(&self) -> String {
        if self.md5.is_empty() {
            format!("crc32c={}", self.crc32c)
        } else {
            format!("crc32c={},md5={}", self.crc32c, self.md5)
        }
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
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
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
    /// `generation`: act on this generation only (404 when it is not the live one; the
    /// emulator keeps no other generations).
    pub generation: Option<i64>,
}

impl Preconditions {
    /// Parses them from a query string; 400 on a non-integer value.
    pub fn from_query(q: Option<&str>) -> Result<Self, ApiError> {
        Self::parse(
            q,
            [
                "generation",
                "ifGenerationMatch",
                "ifGenerationNotMatch",
                "ifMetagenerationMatch",
                "ifMetagenerationNotMatch",
            ],
        )
    }

    /// Parses the five conditions from a query string, named (in order) generation,
    /// generation match, generation not-match, metageneration match and not-match; 400 on a
    /// non-integer value.
    fn parse(q: Option<&str>, names: [&str; 5]) -> Result<Self, ApiError> {
        let mut p = Preconditions::default();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            let slot = match names.iter().position(|n| *n == k.as_ref()) {
                Some(0) => &mut p.generation,
                Some(1) => &mut p.if_generation_match,
                Some(2) => &mut p.if_generation_not_match,
                Some(3) => &mut p.if_metageneration_match,
                Some(4) => &mut p.if_metageneration_not_match,
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
        if let Some(want) = self.generation
            && current.is_some()
            && want != g
        {
            return Err(ApiError::not_found(format!(
                "No such object: generation {want} (the emulator keeps only the live generation {g})"
            )));
        }
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

/// Validates an object name per Cloud Storage's naming requirements
/// (<https://cloud.google.com/storage/docs/objects#naming>, "Object naming requirements"):
/// 1 to 1024 bytes of UTF-8 (a `&str` is UTF-8 already), no carriage return or line feed, not
/// starting with `.well-known/acme-challenge/`, and not `.` or `..`.
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
        return bad("longer than 1024 bytes when UTF-8 encoded");
    }
    if name.contains(['\r', '\n']) {
        return bad("contains a carriage return or line feed");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not valid object names");
    }
    if name.starts_with(".well-known/acme-challenge/") {
        return bad("names cannot start with .well-known/acme-challenge/");
    }
    Ok(())
}
/// One bucket: its resource, its index in memory, and the lock that serialises its writes.
struct BucketState {
    dir: PathBuf,
    meta: Mutex<BucketMeta>,
    objects: RwLock<BTreeMap<String, ObjectMeta>>,
    write: tokio::sync::Mutex<()>,
}

impl BucketState {
    fn index_path(&self, name: &str) -> PathBuf {
        let h = sha2::Sha256::digest(name.as_bytes());
        self.dir
            .join("index")
            .join(format!("{}.json", hex::encode(h)))
    }

    fn blob_path(&self, id: &str) -> PathBuf {
        self.dir.join("blobs").join(id)
    }

    fn get(&self, name: &str) -> Option<ObjectMeta> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

/// What a listing asks for (the `objects.list` parameters the emulator honours).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only names starting with this.
    pub prefix: String,
    /// Roll names up to the first delimiter after the prefix into `prefixes`.
    pub delimiter: Option<String>,
    /// With a delimiter: also list objects whose name ends in the delimiter right after the
    /// prefix part (folder placeholders), besides their prefix.
    pub include_trailing_delimiter: bool,
    /// Only names at or after this (lexicographic).
    pub start_offset: Option<String>,
    /// Only names before this.
    pub end_offset: Option<String>,
    /// Only names matching this glob (Cloud Storage's `matchGlob` syntax).
    pub match_glob: Option<regex::Regex>,
    /// Continue after this key: an object name, or a rolled-up prefix (`true`) whose names
    /// are all skipped.
    pub after: Option<(String, bool)>,
    /// Page size (items plus prefixes).
    pub max: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects.
    pub items: Vec<ObjectMeta>,
    /// Rolled-up prefixes.
    pub prefixes: Vec<String>,
    /// The key to continue after (name or prefix, as in [`ListQuery::after`]), when more may
    /// follow.
    pub next: Option<(String, bool)>,
}

/// Compiles a `matchGlob` pattern as Cloud Storage reads it ("List objects and prefixes using
/// glob", objects.list reference): `*` matches within one `/`-separated part, `**` matches
/// across `/`, `?` one character other than `/`, `[abc]`/`[a-z]`/`[!abc]` a character class,
/// `{a,b}` alternatives, `\` escapes the next character.
pub fn compile_glob(pattern: &str) -> Result<regex::Regex, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("Invalid matchGlob {pattern:?}: {why}"));
    let mut re = String::from("^(?s:");
    let mut chars = pattern.chars().peekable();
    let mut braces = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                re.push_str(".*");
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                re.push('[');
                if matches!(chars.peek(), Some('!') | Some('^')) {
                    chars.next();
                    re.push('^');
                }
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    if c == '\\' || c == '[' || c == '&' || c == '~' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                if !closed {
                    return Err(bad("unclosed '['"));
                }
                re.push(']');
            }
            '{' => {
                braces += 1;
                re.push_str("(?:");
            }
            ',' if braces > 0 => re.push('|'),
            '}' if braces > 0 => {
                braces -= 1;
                re.push(')');
            }
            '\\' => {
                let c = chars.next().ok_or_else(|| bad("trailing '\\'"))?;
                re.push_str(&regex::escape(&c.to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    if braces > 0 {
        return Err(bad("unclosed '{'"));
    }
    re.push_str(")$");
    regex::Regex::new(&re).map_err(|e| bad(&e.to_string()))
}

/// The Cloud Storage state shared by the handlers.
pub struct StorageState {
    root: PathBuf,
    clock: Clock,
    base_url: String,
    sweep_interval: Duration,
    buckets: RwLock<BTreeMap<String, Arc<BucketState>>>,
    create_lock: tokio::sync::Mutex<()>,
    last_sweep: Mutex<HashMap<String, (u64, Instant)>>,
    limiter: Option<MutationLimiter>,
    pub(crate) uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadSession>>>>,
}

impl StorageState {
    /// Opens (creating) the store at `root`: loads every bucket's index, removes content no
    /// entry names and leftovers of interrupted uploads. `limit` is the per-object mutation
    /// rate limit (`None`: off).
    pub fn open(
        root: PathBuf,
        clock: Clock,
        base_url: String,
        sweep_interval: Duration,
        limit: Option<MutationLimit>,
    ) -> std::io::Result<Self> {
        for d in [".tmp", ".uploads"] {
            let p = root.join(d);
            if p.exists() {
                std::fs::remove_dir_all(&p)?;
            }
            std::fs::create_dir_all(&p)?;
        }
        std::fs::create_dir_all(root.join("buckets"))?;
        let mut buckets = BTreeMap::new();
        for e in std::fs::read_dir(root.join("buckets"))? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(b) = load_bucket(&e.path(), &name)? {
                buckets.insert(name, Arc::new(b));
            }
        }
        Ok(StorageState {
            root,
            clock,
            base_url,
            sweep_interval,
            buckets: RwLock::new(buckets),
            create_lock: tokio::sync::Mutex::new(()),
            last_sweep: Mutex::new(HashMap::new()),
            limiter: limit.map(MutationLimiter::new),
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

    /// True when the bucket exists.
    pub fn has_bucket(&self, bucket: &str) -> bool {
        self.bucket(bucket).is_ok()
    }

    fn bucket(&self, bucket: &str) -> Result<Arc<BucketState>, ApiError> {
        self.buckets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
            .cloned()
            .ok_or_else(|| Self::no_bucket(bucket))
    }

    fn no_bucket(bucket: &str) -> ApiError {
        ApiError::not_found(format!("The specified bucket does not exist: {bucket}"))
    }

    fn no_object(bucket: &str, name: &str) -> ApiError {
        ApiError::not_found(format!("No such object: {bucket}/{name}"))
    }

    /// How many mutations the per-object rate limit answered 429 so far.
    pub fn throttled(&self) -> u64 {
        self.limiter
            .as_ref()
            .map_or(0, |l| l.refused.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Takes one token of the per-object mutation budget of `bucket/name`: 429 when spent.
    fn charge(&self, bucket: &str, name: &str) -> Result<(), ApiError> {
        match &self.limiter {
            Some(l) => l.charge(bucket, name),
            None => Ok(()),
        }
    }

    // ---- buckets ----

    /// Reads a bucket.
    pub async fn get_bucket(&self, bucket: &str) -> Result<BucketMeta, ApiError> {
        let b = self.bucket(bucket)?;
        let m = b.meta.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(m)
    }

    async fn write_bucket(&self, dir: &Path, b: &BucketMeta) -> Result<(), ApiError> {
        let data = serde_json::to_vec_pretty(b).map_err(|e| ApiError::internal(e.to_string()))?;
        atomic_write(&self.temp_path(), &dir.join("bucket.json"), &data).await
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
        let _g = self.create_lock.lock().await;
        if self.has_bucket(name) {
            return Err(ApiError::conflict(
                "Your previous request to create the named bucket succeeded and you already own it.",
            ));
        }
        let dir = self.root.join("buckets").join(name);
        tokio::fs::create_dir_all(dir.join("index")).await?;
        tokio::fs::create_dir_all(dir.join("blobs")).await?;
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
        self.write_bucket(&dir, &b).await?;
        let state = BucketState {
            dir,
            meta: Mutex::new(b.clone()),
            objects: RwLock::new(BTreeMap::new()),
            write: tokio::sync::Mutex::new(()),
        };
        self.buckets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(state));
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
        let bs = self.bucket(bucket)?;
        let _g = bs.write.lock().await;
        let mut b = bs.meta.lock().unwrap_or_else(|p| p.into_inner()).clone();
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
        self.write_bucket(&bs.dir, &b).await?;
        *bs.meta.lock().unwrap_or_else(|p| p.into_inner()) = b.clone();
        Ok(b)
    }

    /// Lists buckets (all projects), by name.
    pub async fn list_buckets(&self) -> Result<Vec<BucketMeta>, ApiError> {
        let all: Vec<Arc<BucketState>> = self
            .buckets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        Ok(all
            .iter()
            .map(|b| b.meta.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect())
    }

    /// Deletes an empty bucket; 409 when it holds objects.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), ApiError> {
        let _c = self.create_lock.lock().await;
        let bs = self.bucket(bucket)?;
        let _g = bs.write.lock().await;
        if !bs
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Err(ApiError::new(
                409,
                "FAILED_PRECONDITION",
                "conflict",
                "The bucket you tried to delete is not empty.",
            ));
        }
        // The bucket.json goes first: a crash after it leaves a directory that is not loaded.
        tokio::fs::remove_file(bs.dir.join("bucket.json")).await?;
        self.buckets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bucket);
        tokio::fs::remove_dir_all(&bs.dir).await?;
        Ok(())
    }

    // ---- objects ----

    /// The object's metadata.
    pub async fn get_object(&self, bucket: &str, name: &str) -> Result<ObjectMeta, ApiError> {
        validate_object_name(name)?;
        self.bucket(bucket)?
            .get(name)
            .ok_or_else(|| Self::no_object(bucket, name))
    }

    /// The object's metadata and its content opened for reading, consistent with each other
    /// even while the object is being replaced.
    pub async fn open_object(
        &self,
        bucket: &str,
        name: &str,
    ) -> Result<(ObjectMeta, tokio::fs::File), ApiError> {
        validate_object_name(name)?;
        let bs = self.bucket(bucket)?;
        loop {
            let m = bs.get(name).ok_or_else(|| Self::no_object(bucket, name))?;
            match tokio::fs::File::open(bs.blob_path(&m.blob)).await {
                Ok(f) => return Ok((m, f)),
                // Replaced or deleted between the lookup and the open: look again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if bs.get(name).is_some_and(|n| n.blob == m.blob) {
                        return Err(ApiError::internal(format!(
                            "the content of {bucket}/{name} is missing from the store"
                        )));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes an index entry (temp file, sync, rename: the commit point of a write).
    async fn write_entry(&self, bs: &BucketState, m: &ObjectMeta) -> Result<(), ApiError> {
        let data = serde_json::to_vec(m).map_err(|e| ApiError::internal(e.to_string()))?;
        atomic_write(&self.temp_path(), &bs.index_path(&m.name), &data).await
    }

    fn next_generation(&self, cur: Option<&ObjectMeta>) -> i64 {
        let now_ns = self.clock.now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        now_ns.max(cur.map_or(0, |c| c.generation) + 1)
    }

    /// Makes a fully written temp file object `name`, atomically with the precondition check.
    /// `hashes` are (md5, crc32c) base64 of its contents (md5 empty for composed objects).
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
        self.commit_with(bucket, name, tmp, size, hashes, new, pre, None)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_with(
        &self,
        bucket: &str,
        name: &str,
        tmp: &Path,
        size: u64,
        hashes: (String, String),
        new: &NewObject,
        pre: Preconditions,
        component_count: Option<u32>,
    ) -> Result<ObjectMeta, ApiError> {
        validate_object_name(name)?;
        let bs = self.bucket(bucket)?;
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
        let _g = bs.write.lock().await;
        let cur = bs.get(name);
        pre.check(cur.as_ref().map(|c| (c.generation, c.metageneration)))?;
        self.charge(bucket, name)?;
        let blob = uuid::Uuid::new_v4().simple().to_string();
        tokio::fs::rename(tmp, bs.blob_path(&blob)).await?;
        let now = self.clock.now();
        let m = ObjectMeta {
            name: name.to_string(),
            generation: self.next_generation(cur.as_ref()),
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
            blob,
            metadata: new.metadata.clone(),
            content_encoding: new.content_encoding.clone(),
            cache_control: new.cache_control.clone(),
            content_disposition: new.content_disposition.clone(),
            content_language: new.content_language.clone(),
            component_count,
        };
        if let Err(e) = self.write_entry(&bs, &m).await {
            let _ = tokio::fs::remove_file(bs.blob_path(&m.blob)).await;
            return Err(e);
        }
        bs.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), m.clone());
        if let Some(old) = cur {
            let _ = tokio::fs::remove_file(bs.blob_path(&old.blob)).await;
        }
        Ok(m)
    }

    /// Updates an object's metadata from a JSON resource; bumps metageneration. With
    /// `replace` (objects.update) writable fields absent from `patch` are cleared; otherwise
    /// (objects.patch) only the fields given change, and a `null` custom metadata value
    /// removes that key.
    pub async fn patch_object(
        &self,
        bucket: &str,
        name: &str,
        patch: &serde_json::Map<String, Value>,
        replace: bool,
        pre: Preconditions,
    ) -> Result<ObjectMeta, ApiError> {
        validate_object_name(name)?;
        let bs = self.bucket(bucket)?;
        let _g = bs.write.lock().await;
        let mut m = bs.get(name).ok_or_else(|| Self::no_object(bucket, name))?;
        pre.check(Some((m.generation, m.metageneration)))?;
        apply_patch(&mut m, patch, replace)?;
        self.charge(bucket, name)?;
        m.metageneration += 1;
        m.updated = self.clock.now();
        self.write_entry(&bs, &m).await?;
        bs.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), m.clone());
        Ok(m)
    }

    /// Deletes an object (checking preconditions atomically).
    pub async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        pre: Preconditions,
    ) -> Result<(), ApiError> {
        validate_object_name(name)?;
        let bs = self.bucket(bucket)?;
        let _g = bs.write.lock().await;
        let cur = bs.get(name).ok_or_else(|| Self::no_object(bucket, name))?;
        pre.check(Some((cur.generation, cur.metageneration)))?;
        self.charge(bucket, name)?;
        match tokio::fs::remove_file(bs.index_path(name)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        bs.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let _ = tokio::fs::remove_file(bs.blob_path(&cur.blob)).await;
        Ok(())
    }

    /// A new temp file holding the same bytes as `bucket/name` (a hard link when possible,
    /// else a streamed copy), with the source's metadata.
    async fn clone_content(
        &self,
        bucket: &str,
        name: &str,
        pre: SourcePreconditions,
    ) -> Result<(ObjectMeta, PathBuf), ApiError> {
        let (m, mut src) = self.open_object(bucket, name).await?;
        pre.check(&m)?;
        let bs = self.bucket(bucket)?;
        let tmp = self.temp_path();
        if tokio::fs::hard_link(bs.blob_path(&m.blob), &tmp)
            .await
            .is_err()
        {
            let mut dst = tokio::fs::File::create(&tmp).await?;
            if let Err(e) = tokio::io::copy(&mut src, &mut dst).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e.into());
            }
            dst.sync_data().await?;
        }
        Ok((m, tmp))
    }

    /// objects.copy / objects.rewrite in one step: `dst` gets the source's bytes and the
    /// source's metadata overridden by the fields of `over` (the request body).
    pub async fn copy_object(
        &self,
        src: (&str, &str),
        dst: (&str, &str),
        over: &serde_json::Map<String, Value>,
        src_pre: SourcePreconditions,
        pre: Preconditions,
    ) -> Result<ObjectMeta, ApiError> {
        validate_object_name(src.1)?;
        validate_object_name(dst.1)?;
        self.bucket(dst.0)?;
        let (mut m, tmp) = self.clone_content(src.0, src.1, src_pre).await?;
        let guard = TempFile(Some(tmp));
        apply_patch(&mut m, over, false)?;
        let new = NewObject {
            name: Some(dst.1.to_string()),
            content_type: Some(m.content_type.clone()),
            metadata: m.metadata.clone(),
            content_encoding: m.content_encoding.clone(),
            cache_control: m.cache_control.clone(),
            content_disposition: m.content_disposition.clone(),
            content_language: m.content_language.clone(),
            md5_hash: None,
            crc32c: None,
        };
        let out = self
            .commit_with(
                dst.0,
                dst.1,
                guard.path(),
                m.size,
                (m.md5.clone(), m.crc32c.clone()),
                &new,
                pre,
                m.component_count,
            )
            .await;
        if out.is_ok() {
            guard.disarm();
        }
        out
    }

    /// objects.move: renames `src` to `dst` within `bucket` atomically (one write lock: no
    /// reader sees both or neither). `dst` gets a new generation and the source's content and
    /// metadata; both names are charged to the mutation limit.
    pub async fn move_object(
        &self,
        bucket: &str,
        src: &str,
        dst: &str,
        src_pre: SourcePreconditions,
        pre: Preconditions,
    ) -> Result<ObjectMeta, ApiError> {
        validate_object_name(src)?;
        validate_object_name(dst)?;
        if src == dst {
            return Err(ApiError::bad_request(
                "The source and destination object names of a move must differ",
            ));
        }
        let bs = self.bucket(bucket)?;
        let _g = bs.write.lock().await;
        let from = bs.get(src).ok_or_else(|| Self::no_object(bucket, src))?;
        src_pre.check(&from)?;
        let cur = bs.get(dst);
        pre.check(cur.as_ref().map(|c| (c.generation, c.metageneration)))?;
        self.charge(bucket, src)?;
        self.charge(bucket, dst)?;
        // The destination gets its own content file (a hard link: no copy), so a crash between
        // the two index writes leaves two whole objects, never one file named twice.
        let blob = uuid::Uuid::new_v4().simple().to_string();
        if tokio::fs::hard_link(bs.blob_path(&from.blob), bs.blob_path(&blob))
            .await
            .is_err()
        {
            tokio::fs::copy(bs.blob_path(&from.blob), bs.blob_path(&blob)).await?;
        }
        let now = self.clock.now();
        let m = ObjectMeta {
            name: dst.to_string(),
            generation: self.next_generation(cur.as_ref()),
            metageneration: 1,
            time_created: now,
            updated: now,
            blob,
            ..from.clone()
        };
        if let Err(e) = self.write_entry(&bs, &m).await {
            let _ = tokio::fs::remove_file(bs.blob_path(&m.blob)).await;
            return Err(e);
        }
        bs.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dst.to_string(), m.clone());
        if let Some(old) = cur {
            let _ = tokio::fs::remove_file(bs.blob_path(&old.blob)).await;
        }
        tokio::fs::remove_file(bs.index_path(src)).await?;
        bs.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(src);
        let _ = tokio::fs::remove_file(bs.blob_path(&from.blob)).await;
        Ok(m)
    }

    /// objects.compose: concatenates up to 32 source objects of `bucket` into `dst`.
    pub async fn compose_object(
        &self,
        bucket: &str,
        dst: &str,
        sources: &[(String, SourcePreconditions)],
        new: &NewObject,
        pre: Preconditions,
    ) -> Result<ObjectMeta, ApiError> {
        validate_object_name(dst)?;
        if sources.is_empty() || sources.len() > MAX_COMPOSE_SOURCES {
            return Err(ApiError::bad_request(format!(
                "A compose request needs 1 to {MAX_COMPOSE_SOURCES} source objects, got {}",
                sources.len()
            )));
        }
        self.bucket(bucket)?;
        let tmp = TempFile(Some(self.temp_path()));
        let mut out = tokio::fs::File::create(tmp.path()).await?;
        let mut crc = 0u32;
        let mut size = 0u64;
        let mut components = 0u32;
        let mut buf = vec![0u8; 1 << 20];
        for (name, spre) in sources {
            let (m, mut f) = self.open_object(bucket, name).await?;
            spre.check(&m)?;
            components += m.component_count.unwrap_or(1);
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let k = f.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..k]);
                out.write_all(&buf[..k]).await?;
                size += k as u64;
            }
        }
        if components > MAX_COMPONENT_COUNT {
            return Err(ApiError::bad_request(format!(
                "The composed object would have {components} components, more than {MAX_COMPONENT_COUNT}"
            )));
        }
        out.sync_data().await?;
        drop(out);
        let crc = B64.encode(crc.to_be_bytes());
        let mut new = new.clone();
        new.md5_hash = None;
        let m = self
            .commit_with(
                bucket,
                dst,
                tmp.path(),
                size,
                (String::new(), crc),
                &new,
                pre,
                Some(components),
            )
            .await?;
        tmp.disarm();
        Ok(m)
    }

    /// One page of a listing.
    pub async fn list_objects(&self, bucket: &str, q: &ListQuery) -> Result<ListPage, ApiError> {
        let bs = self.bucket(bucket)?;
        let objects = bs.objects.read().unwrap_or_else(|p| p.into_inner());
        let mut lower: &str = &q.prefix;
        if let Some(s) = q.start_offset.as_deref()
            && s > lower
        {
            lower = s;
        }
        let mut page = ListPage::default();
        let mut last_key: Option<(String, bool)> = None;
        for (name, m) in objects.range::<str, _>((Bound::Included(lower), Bound::Unbounded)) {
            if !name.starts_with(&q.prefix) {
                break;
            }
            if let Some(e) = q.end_offset.as_deref()
                && name.as_str() >= e
            {
                break;
            }
            if let Some((a, is_prefix)) = &q.after
                && (name <= a || (*is_prefix && name.starts_with(a.as_str())))
            {
                continue;
            }
            if let Some(g) = &q.match_glob
                && !g.is_match(name)
            {
                continue;
            }
            let rolled = q.delimiter.as_deref().and_then(|d| {
                name[q.prefix.len()..]
                    .find(d)
                    .map(|i| (name[..q.prefix.len() + i + d.len()].to_string(), d))
            });
            match rolled {
                Some((p, _)) if page.prefixes.last() == Some(&p) => {
                    // Already reported; a placeholder named exactly like it may still be listed.
                    if q.include_trailing_delimiter && *name == p {
                        page.items.push(m.clone());
                    }
                }
                Some((p, _)) => {
                    if page.items.len() + page.prefixes.len() >= q.max {
                        page.next = last_key;
                        return Ok(page);
                    }
                    if q.include_trailing_delimiter && *name == p {
                        page.items.push(m.clone());
                    }
                    last_key = Some((p.clone(), true));
                    page.prefixes.push(p);
                }
                None => {
                    if page.items.len() + page.prefixes.len() >= q.max {
                        page.next = last_key;
                        return Ok(page);
                    }
                    last_key = Some((name.clone(), false));
                    page.items.push(m.clone());
                }
            }
        }
        Ok(page)
    }

    /// All object names under `prefix`, sorted bytewise.
    pub async fn object_names(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, ApiError> {
        let bs = self.bucket(bucket)?;
        let objects = bs.objects.read().unwrap_or_else(|p| p.into_inner());
        Ok(objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(n, _)| n)
            .take_while(|n| n.starts_with(prefix))
            .cloned()
            .collect())
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
    /// Lifecycle deletions are not charged to the per-object mutation limit.
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
        let bs = self.bucket(bucket)?;
        let due: Vec<ObjectMeta> = bs
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|m| {
                let age_days = (now - m.time_created).num_seconds().max(0) / 86_400;
                rules.iter().any(|r| r.matches(&m.name, age_days))
            })
            .cloned()
            .collect();
        let mut deleted = Vec::new();
        let _g = bs.write.lock().await;
        for m in due {
            // Only the generation the rule selected: a newer write survives.
            if bs.get(&m.name).is_none_or(|c| c.generation != m.generation) {
                continue;
            }
            if tokio::fs::remove_file(bs.index_path(&m.name))
                .await
                .is_err()
            {
                continue;
            }
            bs.objects
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&m.name);
            let _ = tokio::fs::remove_file(bs.blob_path(&m.blob)).await;
            tracing::debug!(bucket, name = m.name, "lifecycle rule deleted object");
            deleted.push(m.name);
        }
        Ok(deleted)
    }
}

/// Most source objects one compose request takes (Cloud Storage: "objects: compose").
pub const MAX_COMPOSE_SOURCES: usize = 32;
/// Most components a composite object may have (Cloud Storage: "Composite objects").
pub const MAX_COMPONENT_COUNT: u32 = 1024;

/// Source-object conditions of compose, copy and rewrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourcePreconditions {
    /// `sourceGeneration` / `sourceObjects[].generation`: only this generation (404 otherwise).
    pub generation: Option<i64>,
    /// `ifSourceGenerationMatch` / `objectPreconditions.ifGenerationMatch`.
    pub if_generation_match: Option<i64>,
    /// `ifSourceGenerationNotMatch`.
    pub if_generation_not_match: Option<i64>,
    /// `ifSourceMetagenerationMatch`.
    pub if_metageneration_match: Option<i64>,
    /// `ifSourceMetagenerationNotMatch`.
    pub if_metageneration_not_match: Option<i64>,
}

impl SourcePreconditions {
    /// The `sourceGeneration` and `ifSource...` parameters of a query string.
    pub fn from_query(q: Option<&str>) -> Result<Self, ApiError> {
        let p = Preconditions::parse(
            q,
            [
                "sourceGeneration",
                "ifSourceGenerationMatch",
                "ifSourceGenerationNotMatch",
                "ifSourceMetagenerationMatch",
                "ifSourceMetagenerationNotMatch",
            ],
        )?;
        Ok(SourcePreconditions {
            generation: p.generation,
            if_generation_match: p.if_generation_match,
            if_generation_not_match: p.if_generation_not_match,
            if_metageneration_match: p.if_metageneration_match,
            if_metageneration_not_match: p.if_metageneration_not_match,
        })
    }

    fn check(&self, m: &ObjectMeta) -> Result<(), ApiError> {
        if let Some(g) = self.generation
            && g != m.generation
        {
            return Err(ApiError::not_found(format!(
                "No such object: generation {g} of {} (the emulator keeps only live generations)",
                m.name
            )));
        }
        Preconditions {
            if_generation_match: self.if_generation_match,
            if_generation_not_match: self.if_generation_not_match,
            if_metageneration_match: self.if_metageneration_match,
            if_metageneration_not_match: self.if_metageneration_not_match,
            generation: None,
        }
        .check(Some((m.generation, m.metageneration)))
    }
}

/// Applies the writable fields of an object resource to `m` (see `patch_object`).
fn apply_patch(
    m: &mut ObjectMeta,
    patch: &serde_json::Map<String, Value>,
    replace: bool,
) -> Result<(), ApiError> {
    let text = |k: &str| -> Result<Option<Option<String>>, ApiError> {
        match patch.get(k) {
            None => Ok(replace.then_some(None)),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(v) => Err(ApiError::bad_request(format!(
                "Invalid value for {k}: {v} (expected a string)"
            ))),
        }
    };
    if let Some(c) = text("contentType")? {
        m.content_type = c.unwrap_or_else(|| "application/octet-stream".into());
    }
    for (k, slot) in [
        ("contentEncoding", &mut m.content_encoding),
        ("cacheControl", &mut m.cache_control),
        ("contentDisposition", &mut m.content_disposition),
        ("contentLanguage", &mut m.content_language),
    ] {
        if let Some(v) = text(k)? {
            *slot = v;
        }
    }
    match patch.get("metadata") {
        None if replace => m.metadata.clear(),
        None => {}
        Some(Value::Null) => m.metadata.clear(),
        Some(Value::Object(o)) => {
            if replace {
                m.metadata.clear();
            }
            for (k, v) in o {
                match v {
                    Value::Null => {
                        m.metadata.remove(k);
                    }
                    Value::String(s) => {
                        m.metadata.insert(k.clone(), s.clone());
                    }
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid value for metadata.{k}: {other} (expected a string)"
                        )));
                    }
                }
            }
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "Invalid value for metadata: {v} (expected an object)"
            )));
        }
    }
    Ok(())
}

/// Loads one bucket directory: its resource and index; removes content no entry names.
fn load_bucket(dir: &Path, name: &str) -> std::io::Result<Option<BucketState>> {
    let meta: BucketMeta = match std::fs::read(dir.join("bucket.json")) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            std::io::Error::other(format!("corrupt bucket metadata {}: {e}", dir.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.name != name {
        return Ok(None);
    }
    std::fs::create_dir_all(dir.join("index"))?;
    std::fs::create_dir_all(dir.join("blobs"))?;
    let mut objects = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("index"))? {
        let e = e?;
        let p = e.path();
        let m: ObjectMeta = match std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(m) => m,
            None => {
                tracing::warn!(path = %p.display(), "unreadable index entry; ignored");
                continue;
            }
        };
        objects.insert(m.name.clone(), m);
    }
    let live: std::collections::HashSet<&str> = objects.values().map(|m| m.blob.as_str()).collect();
    for e in std::fs::read_dir(dir.join("blobs"))? {
        let e = e?;
        if !e.file_name().to_str().is_some_and(|n| live.contains(n)) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(Some(BucketState {
        dir: dir.to_path_buf(),
        meta: Mutex::new(meta),
        objects: RwLock::new(objects),
        write: tokio::sync::Mutex::new(()),
    }))
}

/// Removes a temp file on drop unless disarmed.
pub(crate) struct TempFile(pub(crate) Option<PathBuf>);

impl TempFile {
    /// The path ("" once disarmed).
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    /// Keeps the file.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The per-object mutation rate limit (token bucket per object name).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MutationLimit {
    /// Sustained mutations per second of one object name.
    pub per_second: f64,
    /// Mutations that may come at once before the rate applies.
    pub burst: u32,
}

impl Default for MutationLimit {
    /// Cloud Storage's documented rate, one write per second of one object name, with a
    /// burst of 5 (Google documents no burst size; it says short bursts are tolerated).
    fn default() -> Self {
        MutationLimit {
            per_second: 1.0,
            burst: 5,
        }
    }
}

/// Token buckets per (bucket, object name).
struct MutationLimiter {
    limit: MutationLimit,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
    refused: std::sync::atomic::AtomicU64,
}

impl MutationLimiter {
    fn new(limit: MutationLimit) -> Self {
        MutationLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn charge(&self, bucket: &str, name: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let cap = f64::from(self.limit.burst.max(1));
        let rate = self.limit.per_second;
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 10_000 {
            // Forget names whose bucket has refilled: they are back at full burst anyway.
            m.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < cap);
        }
        let e = m
            .entry((bucket.to_string(), name.to_string()))
            .or_insert((cap, now));
        let tokens = (e.0 + now.duration_since(e.1).as_secs_f64() * rate).min(cap);
        if tokens < 1.0 {
            e.0 = tokens;
            e.1 = now;
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ApiError::rate_limited(format!(
                "The object {bucket}/{name} exceeded the rate limit for object mutation operations (create, update, and delete). Please reduce your request rate. (emulator: {} per second, burst {})",
                self.limit.per_second, self.limit.burst
            )));
        }
        e.0 = tokens - 1.0;
        e.1 = now;
        Ok(())
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

/// Writes `data` to `tmp`, syncs it and renames it over `dst` (then syncs the directory), so
/// `dst` is always either the old or the new whole content.
async fn atomic_write(tmp: &Path, dst: &Path, data: &[u8]) -> Result<(), ApiError> {
    let res = async {
        let mut f = tokio::fs::File::create(tmp).await?;
        use tokio::io::AsyncWriteExt;
        f.write_all(data).await?;
        f.sync_data().await?;
        drop(f);
        tokio::fs::rename(tmp, dst).await?;
        if let Some(dir) = dst.parent() {
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        Ok::<(), std::io::Error>(())
    }
    .await;
    if let Err(e) = res {
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

/// A resumable upload in progress.
pub struct UploadSession {
    pub(super) bucket: String,
    pub(super) name: String,
    pub(super) new: NewObject,
    pub(super) pre: Preconditions,
    pub(super) path: PathBuf,
    pub(super) received: u64,
    pub(super) total: Option<u64>,
    pub(super) hashes: Hashes,
    pub(super) done: Option<ObjectMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cloud Storage's object naming requirements
    /// (<https://cloud.google.com/storage/docs/objects#naming>): 1-1024 bytes of UTF-8, no CR
    /// or LF, not `.` or `..`, not under `.well-known/acme-challenge/`. Anything else is a
    /// valid name, including names a file system could not hold.
    #[test]
    fn object_names_follow_google_naming_requirements() {
        for bad in [
            "",
            ".",
            "..",
            "a\rb",
            "a\nb",
            ".well-known/acme-challenge/x",
            &"x".repeat(1025),
            &"\u{e9}".repeat(513),
        ] {
            assert_eq!(validate_object_name(bad).unwrap_err().code, 400, "{bad:?}");
        }
        for good in [
            "a",
            "a/",
            "/a",
            "a//b",
            "./a",
            "a/../b",
            "a\0b",
            "dir/",
            "with space",
            "\u{fc}n\u{ef}",
            ".well-known/other",
            &"x".repeat(1024),
            &"y".repeat(300),
            &"\u{e9}".repeat(512),
        ] {
            validate_object_name(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn globs_follow_cloud_storage_syntax() {
        let m = |p: &str, n: &str| compile_glob(p).unwrap().is_match(n);
        assert!(m("d/*.txt", "d/a.txt") && !m("d/*.txt", "d/s/a.txt"));
        assert!(m("d/**.txt", "d/s/a.txt") && m("**/a", "x/y/a"));
        assert!(m("a?c", "abc") && !m("a?c", "a/c"));
        assert!(m("[ab]x", "bx") && !m("[!ab]x", "ax") && m("[a-c]x", "cx"));
        assert!(m("f.{txt,md}", "f.md") && !m("f.{txt,md}", "f.rs"));
        assert!(m("lit\\*", "lit*") && !m("lit\\*", "litx"));
        assert!(m("a.b", "a.b") && !m("a.b", "axb"));
        for bad in ["[ab", "{a,b", "x\\"] {
            assert_eq!(compile_glob(bad).unwrap_err().code, 400, "{bad}");
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
