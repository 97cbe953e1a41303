//! The ratio report: reads criterion's estimates and prints each measurement beside the raw
//! primitive measured in the same group, in the same run.
//!
//! Convention of the benches: a criterion group holds one function named `primitive` (the raw
//! crypto or database operation alone) and one or more tessera functions; the report prints
//! `function / primitive` for each. Groups without a `primitive` are printed without a ratio.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The name of the baseline function in a group.
pub const PRIMITIVE: &str = "primitive";

/// One benchmark's typical time per iteration, nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Group id.
    pub group: String,
    /// Function id.
    pub function: String,
    /// Criterion's typical estimate (the slope when linear sampling was used, else the mean).
    pub nanos: f64,
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`,
/// else `target/criterion`.
pub fn default_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("criterion")
}

/// Reads every `<group>/<function>/new/estimates.json` under `dir`.
pub fn read(dir: &Path) -> Result<Vec<Estimate>> {
    let mut out = Vec::new();
    let groups = std::fs::read_dir(dir)
        .with_context(|| format!("no criterion results in {}", dir.display()))?;
    for group in groups {
        let group = group?;
        if !group.file_type()?.is_dir() || group.file_name() == "report" {
            continue;
        }
        for function in std::fs::read_dir(group.path())? {
            let function = function?;
            let file = function.path().join("new").join("estimates.json");
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let json: Value = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", file.display()))?;
            let Some(nanos) = typical(&json) else {
                continue;
            };
            out.push(Estimate {
                group: group.file_name().to_string_lossy().into_owned(),
                function: function.file_name().to_string_lossy().into_owned(),
                nanos,
            });
        }
    }
    out.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    Ok(out)
}

fn typical(estimates: &Value) -> Option<f64> {
    ["slope", "mean"]
        .iter()
        .find_map(|name| estimates.get(name)?.get("point_estimate")?.as_f64())
}

/// The report as a Markdown table.
pub fn table(estimates: &[Estimate]) -> String {
    let mut groups: BTreeMap<&str, Vec<&Estimate>> = BTreeMap::new();
    for e in estimates {
        groups.entry(&e.group).or_default().push(e);
    }
    let mut out = String::from(
        "| group | function | time per op | primitive | ratio |\n|---|---|---:|---:|---:|\n",
    );
    for (group, functions) in groups {
        let primitive = functions.iter().find(|e| e.function == PRIMITIVE);
        if let Some(p) = primitive {
            out.push_str(&format!(
                "| {group} | {PRIMITIVE} | {} | | |\n",
                human(p.nanos)
            ));
        }
        for e in functions.iter().filter(|e| e.function != PRIMITIVE) {
            let (base, ratio) = match primitive {
                Some(p) if p.nanos > 0.0 => (human(p.nanos), format!("{:.2}×", e.nanos / p.nanos)),
                _ => (String::new(), String::new()),
            };
            out.push_str(&format!(
                "| {group} | {} | {} | {base} | {ratio} |\n",
                e.function,
                human(e.nanos)
            ));
        }
    }
    out
}

/// A duration in ns, µs or ms with three significant digits.
pub fn human(nanos: f64) -> String {
    if nanos < 1e3 {
        format!("{nanos:.1} ns")
    } else if nanos < 1e6 {
        format!("{:.2} µs", nanos / 1e3)
    } else {
        format!("{:.2} ms", nanos / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, group: &str, function: &str, json: &str) {
        let path = dir.join(group).join(function).join("new");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("estimates.json"), json).unwrap();
    }

    #[test]
    fn ratios_are_taken_against_the_primitive_of_the_same_group() {
        let dir = crate::TempDir::new(None).unwrap();
        let mean = |ns: f64| format!(r#"{{"mean":{{"point_estimate":{ns}}},"slope":null}}"#);
        write(dir.path(), "verify_a", PRIMITIVE, &mean(1000.0));
        write(dir.path(), "verify_a", "tessera", &mean(1100.0));
        write(
            dir.path(),
            "verify_a",
            "cached",
            r#"{"mean":{"point_estimate":9e9},"slope":{"point_estimate":250.0}}"#,
        );
        write(dir.path(), "argon2id", "hash", &mean(3.2e7));
        std::fs::create_dir_all(dir.path().join("report")).unwrap();

        let estimates = read(dir.path()).unwrap();
        assert_eq!(estimates.len(), 4);
        let text = table(&estimates);
        assert!(
            text.contains("| verify_a | tessera | 1.10 µs | 1.00 µs | 1.10× |"),
            "{text}"
        );
        assert!(
            text.contains("| verify_a | cached | 250.0 ns | 1.00 µs | 0.25× |"),
            "{text}"
        );
        assert!(
            text.contains("| argon2id | hash | 32.00 ms |  |  |"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(read(Path::new("/nonexistent/criterion")).is_err());
    }
}
