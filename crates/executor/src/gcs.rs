//! The Cloud Storage JSON API calls the worker makes, behind the small [`Bucket`] trait: list
//! names under a prefix, fetch (bytes and generation), stat (with the server's clock), create
//! (optionally only if absent) and delete (optionally only at a generation). [`Gcs`] makes them over HTTPS to Google, or over HTTP to an emulator
//! named by `STORAGE_EMULATOR_HOST` (the variable Google's client libraries honour), with an
//! access token from the metadata server (`GCE_METADATA_HOST`, else Cloud Run's
//! 169.254.169.254). 429, 5xx and broken connections are retried with exponential backoff and
//! jitter, as Google's clients retry them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Why a bucket call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// 404: no such object.
    NotFound,
    /// 412: a generation precondition did not hold.
    Precondition,
    /// Another HTTP status, after retries where it was retryable.
    Http {
        /// The status code.
        status: u16,
        /// The body's message.
        message: String,
    },
    /// A connection, TLS or read failure, after retries.
    Io(String),
    /// A conditional delete was retried and its retry found the object gone or replaced: the
    /// first attempt may have deleted it, or somebody else did.
    Unsure,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("no such object"),
            StoreError::Precondition => f.write_str("precondition failed"),
            StoreError::Http { status, message } => write!(f, "HTTP {status}: {message}"),
            StoreError::Io(e) => write!(f, "I/O: {e}"),
            StoreError::Unsure => {
                f.write_str("a retried delete found the object gone: who deleted it is unknown")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// What [`Bucket::stat`] tells of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's generation.
    pub generation: i64,
    /// When it was last written, Unix ms by the server's clock.
    pub updated_ms: Option<i64>,
    /// Its custom metadata.
    pub metadata: BTreeMap<String, String>,
    /// The server's clock when it answered, Unix ms (HTTP `Date`, second resolution).
    pub server_now_ms: Option<i64>,
}

/// The object operations the worker needs; names are full object names.
pub trait Bucket: Send + Sync {
    /// Names of the objects under `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// The object's bytes and generation, in one call.
    fn fetch(&self, name: &str) -> Result<(Vec<u8>, i64), StoreError>;
    /// The object's bytes.
    fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.fetch(name).map(|(bytes, _)| bytes)
    }
    /// The object's metadata and the server's clock.
    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError>;
    /// Writes an object; with `only_if_absent`, fails with [`StoreError::Precondition`] when it
    /// exists (`ifGenerationMatch=0`). Returns the new generation.
    fn create(
        &self,
        name: &str,
        data: &[u8],
        metadata: &BTreeMap<String, String>,
        only_if_absent: bool,
    ) -> Result<i64, StoreError>;
    /// Deletes an object.
    fn delete(&self, name: &str) -> Result<(), StoreError>;
    /// Deletes an object only at `generation` (`ifGenerationMatch`): [`StoreError::NotFound`]
    /// when it is gone, [`StoreError::Precondition`] when it was replaced,
    /// [`StoreError::Unsure`] when a retry found either after an attempt whose outcome is
    /// unknown.
    fn delete_generation(&self, name: &str, generation: i64) -> Result<(), StoreError>;
}

/// Largest object body the worker reads (an answer holds at most two capped outputs in base64).
const READ_LIMIT: u64 = 256 * 1024 * 1024;

/// Google's endpoint.
pub const GOOGLE_STORAGE: &str = "https://storage.googleapis.com";
/// Cloud Run's metadata server.
pub const METADATA_HOST: &str = "169.254.169.254";

/// Retry settings (Google's clients: exponential backoff with jitter on 429, 5xx, timeouts).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// First wait.
    pub initial: Duration,
    /// Longest single wait.
    pub max: Duration,
    /// Give up after this long in all.
    pub deadline: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        }
    }
}

/// The JSON API over HTTP(S).
pub struct Gcs {
    agent: ureq::Agent,
    base: String,
    bucket: String,
    metadata_host: Option<String>,
    token: Mutex<Option<(String, Instant)>>,
    retry: Retry,
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The base URL named by `STORAGE_EMULATOR_HOST` (`host:port` or a URL), else Google's.
pub fn endpoint_from(value: Option<&str>) -> String {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
            v.trim_end_matches('/').to_string()
        }
        Some(v) => format!("http://{}", v.trim_end_matches('/')),
        None => GOOGLE_STORAGE.to_string(),
    }
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    items: Vec<ListItem>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ListItem {
    name: String,
}

#[derive(Deserialize)]
struct ObjectJson {
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TokenJson {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A failed attempt: whether to try again.
enum Attempt<T> {
    Done(Result<T, StoreError>),
    Retry(StoreError),
}

impl Gcs {
    /// A client for `bucket` at `base` (e.g. [`GOOGLE_STORAGE`]), tokens from `metadata_host`
    /// (`None`: no token, for an emulator without auth).
    pub fn new(base: &str, bucket: &str, metadata_host: Option<&str>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Gcs {
            agent,
            base: base.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            metadata_host: metadata_host.map(str::to_string),
            token: Mutex::new(None),
            retry: Retry::default(),
        }
    }

    /// A client configured as Google's libraries are: `STORAGE_EMULATOR_HOST` and
    /// `GCE_METADATA_HOST` when set, Google's endpoint and Cloud Run's metadata server if not.
    pub fn from_env(bucket: &str) -> Self {
        let base = endpoint_from(std::env::var("STORAGE_EMULATOR_HOST").ok().as_deref());
        let meta = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| METADATA_HOST.into());
        Self::new(&base, bucket, Some(&meta))
    }

    /// Overrides the retry settings.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            encode(&self.bucket),
            encode(name)
        )
    }

    /// A bearer token from the metadata server, cached until a minute before it expires;
    /// `None` when there is no metadata server (an emulator without auth).
    fn token(&self) -> Option<String> {
        let host = self.metadata_host.as_deref()?;
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Some(t.clone());
        }
        let url =
            format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
        let mut resp = self
            .agent
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .call()
            .ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let t: TokenJson = serde_json::from_slice(&resp.body_mut().read_to_vec().ok()?).ok()?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(300).saturating_sub(60).max(10));
        *cached = Some((t.access_token.clone(), Instant::now() + life));
        Some(t.access_token)
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match self.token() {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// Runs `attempt` until it is done or the retry deadline passes.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Attempt<T>) -> Result<T, StoreError> {
        let started = Instant::now();
        let mut wait = self.retry.initial;
        loop {
            match attempt() {
                Attempt::Done(r) => return r,
                Attempt::Retry(e) => {
                    if started.elapsed() + wait > self.retry.deadline {
                        return Err(e);
                    }
                    // Equal jitter: half the wait fixed, half random.
                    let half = wait / 2;
                    let jitter = Duration::from_nanos(
                        (jitter_seed() % (half.as_nanos().max(1) as u64)).max(1),
                    );
                    std::thread::sleep(half + jitter);
                    wait = (wait * 2).min(self.retry.max);
                }
            }
        }
    }

    fn classify<T>(
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: impl FnOnce(ureq::http::Response<ureq::Body>) -> Result<T, StoreError>,
    ) -> Attempt<T> {
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(StoreError::Io(e.to_string())),
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => Attempt::Done(ok(resp)),
            404 => Attempt::Done(Err(StoreError::NotFound)),
            412 => Attempt::Done(Err(StoreError::Precondition)),
            _ => {
                let message = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                let err = StoreError::Http { status, message };
                if status == 408 || status == 429 || status >= 500 {
                    Attempt::Retry(err)
                } else {
                    Attempt::Done(Err(err))
                }
            }
        }
    }

    fn read_body(mut resp: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, StoreError> {
        resp.body_mut()
            .with_config()
            .limit(READ_LIMIT)
            .read_to_vec()
            .map_err(|e| StoreError::Io(e.to_string()))
    }
}

/// A cheap varying number for jitter (no RNG dependency in the executor).
fn jitter_seed() -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(7);
    n.wrapping_mul(6364136223846793005).rotate_left(17)
}

/// Unix ms of an RFC 3339 time as Cloud Storage writes it (`2026-11-27T17:40:01.123Z`).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (time, offset_ms) = match time.rfind(['+', '-']) {
        Some(i) if i >= 8 => {
            let (t, off) = time.split_at(i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let mut hm = off[1..].split(':').map(|p| p.parse::<i64>());
            let (oh, om) = (hm.next()?.ok()?, hm.next().unwrap_or(Ok(0)).ok()?);
            (t, sign * (oh * 3600 + om * 60) * 1000)
        }
        _ => (time, 0),
    };
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    Some(
        days_from_civil(y, m, day) * 86_400_000
            + hh * 3_600_000
            + mm * 60_000
            + (sec * 1000.0).round() as i64
            - offset_ms,
    )
}

/// Unix ms of an HTTP date (`Fri, 27 Nov 2026 17:40:01 GMT`).
pub fn parse_http_date_ms(s: &str) -> Option<i64> {
    let mut p = s.split_whitespace().skip(1);
    let day: i64 = p.next()?.parse().ok()?;
    let month = match p.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = p.next()?.parse().ok()?;
    let mut t = p.next()?.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    Some(days_from_civil(year, month, day) * 86_400_000 + (hh * 3600 + mm * 60 + ss) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Bucket for Gcs {
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let url = format!("{}/storage/v1/b/{}/o", self.base, encode(&self.bucket));
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let got = self.retrying(|| {
                let mut req = self
                    .agent
                    .get(&url)
                    .query("prefix", prefix)
                    .query("fields", "items(name),nextPageToken");
                if let Some(p) = &page {
                    req = req.query("pageToken", p);
                }
                Self::classify(self.with_auth(req).call(), |r| {
                    serde_json::from_slice::<ListPage>(&Self::read_body(r)?)
                        .map_err(|e| StoreError::Io(format!("bad list page: {e}")))
                })
            })?;
            names.extend(got.items.into_iter().map(|i| i.name));
            match got.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => break,
            }
        }
        names.sort();
        Ok(names)
    }

    fn fetch(&self, name: &str) -> Result<(Vec<u8>, i64), StoreError> {
        let url = self.object_url(name);
        self.retrying(|| {
            let req = self.agent.get(&url).query("alt", "media");
            Self::classify(self.with_auth(req).call(), |r| {
                // Media downloads carry the object's generation in `x-goog-generation`.
                let generation = r
                    .headers()
                    .get("x-goog-generation")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| StoreError::Io("no x-goog-generation header".into()))?;
                Ok((Self::read_body(r)?, generation))
            })
        })
    }

    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        let url = self.object_url(name);
        self.retrying(|| {
            let req = self.agent.get(&url).query("alt", "json");
            Self::classify(self.with_auth(req).call(), |r| {
                let server_now_ms = r
                    .headers()
                    .get("date")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_http_date_ms);
                let o: ObjectJson = serde_json::from_slice(&Self::read_body(r)?)
                    .map_err(|e| StoreError::Io(format!("bad object resource: {e}")))?;
                Ok(ObjectInfo {
                    generation: o.generation.and_then(|g| g.parse().ok()).unwrap_or(0),
                    updated_ms: o.updated.as_deref().and_then(parse_rfc3339_ms),
                    metadata: o.metadata,
                    server_now_ms,
                })
            })
        })
    }

    fn create(
        &self,
        name: &str,
        data: &[u8],
        metadata: &BTreeMap<String, String>,
        only_if_absent: bool,
    ) -> Result<i64, StoreError> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o",
            self.base,
            encode(&self.bucket)
        );
        // Metadata travel in a multipart/related body: the JSON resource, then the bytes.
        let boundary = format!("sandbox-executor-{:016x}", jitter_seed());
        let resource = serde_json::json!({"name": name, "metadata": metadata});
        let mut body = Vec::with_capacity(data.len() + 512);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let ctype = format!("multipart/related; boundary={boundary}");
        let mut attempts = 0;
        let r = self.retrying(|| {
            attempts += 1;
            let mut req = self
                .agent
                .post(&url)
                .query("uploadType", "multipart")
                .query("fields", "generation")
                .header("Content-Type", &ctype);
            if only_if_absent {
                req = req.query("ifGenerationMatch", "0");
            }
            Self::classify(self.with_auth(req).send(&body[..]), |r| {
                let o: ObjectJson = serde_json::from_slice(&Self::read_body(r)?)
                    .map_err(|e| StoreError::Io(format!("bad object resource: {e}")))?;
                Ok(o.generation.and_then(|g| g.parse().ok()).unwrap_or(0))
            })
        });
        match r {
            // A retried create whose first attempt landed meets its own object: the caller
            // tells its own bytes apart (see `worker::claim`).
            Err(StoreError::Precondition) if attempts > 1 => Err(StoreError::Precondition),
            other => other,
        }
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let url = self.object_url(name);
        let mut attempts = 0;
        let r = self.retrying(|| {
            attempts += 1;
            Self::classify(self.with_auth(self.agent.delete(&url)).call(), |_| Ok(()))
        });
        match r {
            // A retried delete whose first attempt landed.
            Err(StoreError::NotFound) if attempts > 1 => Ok(()),
            other => other,
        }
    }

    fn delete_generation(&self, name: &str, generation: i64) -> Result<(), StoreError> {
        let url = self.object_url(name);
        let generation = generation.to_string();
        let mut attempts = 0;
        let r = self.retrying(|| {
            attempts += 1;
            let req = self
                .agent
                .delete(&url)
                .query("ifGenerationMatch", &generation);
            Self::classify(self.with_auth(req).call(), |_| Ok(()))
        });
        match r {
            Err(StoreError::NotFound | StoreError::Precondition) if attempts > 1 => {
                Err(StoreError::Unsure)
            }
            other => other,
        }
    }
}

/// An in-memory bucket for tests of the worker.
#[cfg(test)]
pub mod mem {
    use super::*;

    /// One stored object: bytes, metadata, generation.
    type Stored = (Vec<u8>, BTreeMap<String, String>, i64);

    /// Objects by name.
    #[derive(Default)]
    pub struct MemBucket {
        objects: Mutex<BTreeMap<String, Stored>>,
        next_gen: std::sync::atomic::AtomicI64,
        /// Conditional deletes land but answer [`StoreError::Unsure`], as a retried delete
        /// whose first attempt's answer was lost.
        pub unsure_deletes: std::sync::atomic::AtomicBool,
    }

    impl Bucket for MemBucket {
        fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            Ok(self
                .objects
                .lock()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        }
        fn fetch(&self, name: &str) -> Result<(Vec<u8>, i64), StoreError> {
            self.objects
                .lock()
                .unwrap()
                .get(name)
                .map(|o| (o.0.clone(), o.2))
                .ok_or(StoreError::NotFound)
        }
        fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
            let now = crate::exec::now_ms() as i64;
            self.objects
                .lock()
                .unwrap()
                .get(name)
                .map(|o| ObjectInfo {
                    generation: o.2,
                    updated_ms: Some(now),
                    metadata: o.1.clone(),
                    server_now_ms: Some(now),
                })
                .ok_or(StoreError::NotFound)
        }
        fn create(
            &self,
            name: &str,
            data: &[u8],
            metadata: &BTreeMap<String, String>,
            only_if_absent: bool,
        ) -> Result<i64, StoreError> {
            let mut o = self.objects.lock().unwrap();
            if only_if_absent && o.contains_key(name) {
                return Err(StoreError::Precondition);
            }
            let g = self
                .next_gen
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            o.insert(name.to_string(), (data.to_vec(), metadata.clone(), g));
            Ok(g)
        }
        fn delete(&self, name: &str) -> Result<(), StoreError> {
            self.objects
                .lock()
                .unwrap()
                .remove(name)
                .map(|_| ())
                .ok_or(StoreError::NotFound)
        }
        fn delete_generation(&self, name: &str, generation: i64) -> Result<(), StoreError> {
            let mut o = self.objects.lock().unwrap();
            match o.get(name) {
                None => Err(StoreError::NotFound),
                Some(s) if s.2 != generation => Err(StoreError::Precondition),
                Some(_) => {
                    o.remove(name);
                    if self
                        .unsure_deletes
                        .load(std::sync::atomic::Ordering::SeqCst)
                    {
                        return Err(StoreError::Unsure);
                    }
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_path_segment() {
        assert_eq!(encode("sessions/a b/x.json"), "sessions%2Fa%20b%2Fx.json");
        assert_eq!(encode("ü~"), "%C3%BC~");
    }

    #[test]
    fn emulator_hosts_become_base_urls() {
        assert_eq!(endpoint_from(None), GOOGLE_STORAGE);
        assert_eq!(
            endpoint_from(Some("127.0.0.1:9023")),
            "http://127.0.0.1:9023"
        );
        assert_eq!(endpoint_from(Some("http://h:1/")), "http://h:1");
        assert_eq!(endpoint_from(Some("  ")), GOOGLE_STORAGE);
    }

    #[test]
    fn server_times_parse() {
        // 2026-11-27T17:40:01Z = 1795801201 s.
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T17:40:01Z"),
            Some(1_795_801_201_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T17:40:01.250Z"),
            Some(1_795_801_201_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T18:40:01.250+01:00"),
            Some(1_795_801_201_250)
        );
        assert_eq!(
            parse_http_date_ms("Fri, 27 Nov 2026 17:40:01 GMT"),
            Some(1_795_801_201_000)
        );
        assert_eq!(parse_rfc3339_ms("nonsense"), None);
        assert_eq!(parse_http_date_ms("Fri, 27 Foo 2026 17:40:01 GMT"), None);
    }
}
