//! How commands print records: the one place for the rules.
//!
//! - Lists print a table of tab-separated values with a header row (`--no-header` leaves it
//!   out, as before the header existed), or with `--json` one JSON array.
//! - A single record (`user show`, `token inspect`) prints one pretty JSON object; `--json` is
//!   accepted there too, so scripts can pass it to every command that prints records.
//! - Only records go to stdout; notices and errors go to stderr.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

/// How a list is printed.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct ListFormat {
    /// Print one JSON array of records instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Leave out the table's header row.
    #[arg(long, conflicts_with = "json")]
    pub no_header: bool,
}

/// How one record is printed (always JSON; the flag is there for uniform scripts).
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct RecordFormat {
    /// Print the record as JSON (the default for this command).
    #[arg(long)]
    pub json: bool,
}

/// One row of a list: its table cells (in the order of the columns) and its JSON form.
pub struct Row {
    /// The table cells.
    pub cells: Vec<String>,
    /// The record as JSON.
    pub json: Value,
}

/// Prints `rows` under `columns` as `format` says.
pub fn print_list(format: ListFormat, columns: &[&str], rows: Vec<Row>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if format.json {
        let array = Value::Array(rows.into_iter().map(|row| row.json).collect());
        writeln!(out, "{}", serde_json::to_string_pretty(&array)?)
    } else {
        let mut text = String::new();
        if !format.no_header {
            text.push_str(&columns.join("\t"));
            text.push('\n');
        }
        for row in rows {
            let cells: Vec<String> = row.cells.iter().map(|cell| table_cell(cell)).collect();
            text.push_str(&cells.join("\t"));
            text.push('\n');
        }
        out.write_all(text.as_bytes())
    }
    .context("cannot write to standard output")
}

/// Prints one record.
pub fn print_record(_format: RecordFormat, record: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(record)?;
    writeln!(std::io::stdout().lock(), "{text}").context("cannot write to standard output")
}

/// A cell holds no tab or line break, so one record stays one line of the table.
fn table_cell(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::table_cell;

    #[test]
    fn cells_never_split_a_row() {
        assert_eq!(table_cell("a\tb\nc\rd"), "a b c d");
    }
}
