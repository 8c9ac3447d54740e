//! Reports: JSON (the data), a Markdown "Phase N completion report", a self-contained HTML
//! page with inline SVG plots, the comparison of two reports, and the one table renderer.

pub mod compare;
pub mod environment;
pub mod html;
pub mod markdown;
pub mod table;

use std::path::{Path, PathBuf};

use crate::bench::BenchReport;

pub use compare::{CompareOptions, CompareRow, CompareStatus, Comparison, compare};
pub use markdown::MarkdownOptions;

/// Failure to write or read a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// JSON failure.
    #[error("{path}: not a bench report: {detail}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The report's layout version is not one this harness reads.
    #[error("{path}: schema_version {found} is not supported (this harness reads {expected})")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Found.
        found: u32,
        /// Supported.
        expected: u32,
    },
}

/// The files one `write_all` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenReports {
    /// reports/bench-<timestamp>.json
    pub json: PathBuf,
    /// reports/latest.json
    pub latest_json: PathBuf,
    /// reports/bench-<timestamp>.md
    pub markdown: PathBuf,
    /// reports/bench-<timestamp>.html
    pub html: PathBuf,
}

/// Renders a Markdown table through the one table renderer, [`table::render`], ending in a
/// newline (so text pushed after a `\n` is a new paragraph, not another table row).
pub(crate) fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = table::render(headers, rows, table::TableStyle::Markdown);
    t.push('\n');
    t
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, then a rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
    // Reports are for others to read too (a temp file starts as 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The report as pretty JSON.
pub fn to_json(report: &BenchReport) -> String {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Reads a JSON bench report.
pub fn load(path: &Path) -> Result<BenchReport, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ReportError::Json {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let found = v
        .get("schema_version")
        .and_then(|s| s.as_u64())
        .unwrap_or(0) as u32;
    if found != crate::bench::SCHEMA_VERSION {
        return Err(ReportError::Schema {
            path: path.to_path_buf(),
            found,
            expected: crate::bench::SCHEMA_VERSION,
        });
    }
    serde_json::from_value(v).map_err(|e| ReportError::Json {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// The timestamp used in report file names.
pub fn file_stamp(report: &BenchReport) -> String {
    report.started_at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Writes `bench-<timestamp>.json`, `latest.json`, `bench-<timestamp>.md` and
/// `bench-<timestamp>.html` into `dir` (each written atomically).
pub fn write_all(
    report: &BenchReport,
    dir: &Path,
    md: &MarkdownOptions,
) -> Result<WrittenReports, ReportError> {
    let stamp = file_stamp(report);
    let json = to_json(report);
    let out = WrittenReports {
        json: dir.join(format!("bench-{stamp}.json")),
        latest_json: dir.join("latest.json"),
        markdown: dir.join(format!("bench-{stamp}.md")),
        html: dir.join(format!("bench-{stamp}.html")),
    };
    write_atomic(&out.json, json.as_bytes())?;
    write_atomic(&out.latest_json, json.as_bytes())?;
    write_atomic(&out.markdown, markdown::render(report, md).as_bytes())?;
    write_atomic(&out.html, html::render(report, md).as_bytes())?;
    Ok(out)
}

/// Seconds as shown in reports.
pub(crate) fn fmt_seconds(s: f64) -> String {
    if s < 0.01 {
        format!("{:.2} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.3} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A measured figure in its unit.
pub(crate) fn fmt_figure(v: Option<f64>, rate: bool) -> String {
    match v {
        None => "-".into(),
        Some(v) if rate => format!("{v:.2} %"),
        Some(v) => fmt_seconds(v),
    }
}
