//! The one table-rendering helper every report uses (terminal and Markdown tables).

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
