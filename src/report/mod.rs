//! Reports: JSON (the data), a Markdown "Phase N completion report", a self-contained HTML
//! page with inline SVG plots, and the comparison of two reports (tables through `output`).

pub mod compare;
pub mod html;
pub mod markdown;

use std::path::{Path, PathBuf};

use crate::bench::BenchReport;
use crate::output;

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

/// Writes `bytes` to `path` atomically ([`output::write_atomic`]), naming the file on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    output::write_atomic(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
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
