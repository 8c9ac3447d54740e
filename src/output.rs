//! Output helpers for every module that prints or writes a result: the one table renderer
//! (terminal and Markdown tables), the figure formats, atomic file writes. A leaf: it imports
//! nothing of the crate, so measuring and judging modules can render without reaching up into
//! `report`.

use std::path::Path;

use tabled::builder::Builder;
use tabled::settings::Style;

/// How a table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableStyle {
    /// Box-drawing characters, for terminals.
    #[default]
    Terminal,
    /// A GitHub-flavoured Markdown table.
    Markdown,
}

/// Renders `headers` and `rows` as a table; short rows are padded with empty cells.
pub fn render(headers: &[&str], rows: &[Vec<String>], style: TableStyle) -> String {
    let width = rows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .max(headers.len());
    let mut builder = Builder::default();
    let mut head: Vec<String> = headers.iter().map(|h| cell(h, style)).collect();
    head.resize(width, String::new());
    builder.push_record(head);
    for row in rows {
        let mut r: Vec<String> = row.iter().map(|c| cell(c, style)).collect();
        r.resize(width, String::new());
        builder.push_record(r);
    }
    let mut table = builder.build();
    match style {
        TableStyle::Terminal => table.with(Style::sharp()),
        TableStyle::Markdown => table.with(Style::markdown()),
    };
    table.to_string()
}

/// Markdown cells cannot hold `|` or line breaks; terminal cells keep them.
fn cell(text: &str, style: TableStyle) -> String {
    match style {
        TableStyle::Terminal => text.to_string(),
        TableStyle::Markdown => text.replace('|', "\\|").replace('\n', "<br>"),
    }
}

/// Renders a Markdown table through [`render`], ending in a newline (so text pushed after a
/// `\n` is a new paragraph, not another table row).
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = render(headers, rows, TableStyle::Markdown);
    t.push('\n');
    t
}

/// Seconds as shown in reports.
pub fn fmt_seconds(s: f64) -> String {
    if s < 0.01 {
        format!("{:.2} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.3} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A measured figure in its unit.
pub fn fmt_figure(v: Option<f64>, rate: bool) -> String {
    match v {
        None => "-".into(),
        Some(v) if rate => format!("{v:.2} %"),
        Some(v) => fmt_seconds(v),
    }
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, then a rename),
/// readable by others (0644).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    // Reports are for others to read too (a temporary file starts as 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown_and_pads_rows() {
        let out = render(
            &["case", "docker"],
            &[vec!["a.b".into(), "pass".into()], vec!["c|d".into()]],
            TableStyle::Markdown,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].contains("case") && lines[0].contains("docker"));
        assert!(lines[1].contains("---"));
        assert!(lines[3].contains("c\\|d"), "{out}");
    }

    #[test]
    fn renders_terminal_table() {
        let out = render(&["x"], &[vec!["multi\nline".into()]], TableStyle::Terminal);
        assert!(out.contains("multi") && out.contains("line"));
        assert!(!out.contains("<br>"));
    }
}
