//! The documents a new user reads first stay true to themselves: no pointer to a file the
//! project does not have, one row per endpoint, and settings that agree between documents.

use std::path::Path;

fn read(relative: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(relative)).unwrap()
}

#[test]
fn the_readme_points_only_to_files_the_project_has() {
    let readme = read("README.md");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        !readme.contains("SPEC.md"),
        "SPEC.md is not part of the project"
    );
    // Every relative Markdown link names an existing file.
    for (i, _) in readme.match_indices("](") {
        let target = &readme[i + 2..];
        let Some(end) = target.find(')') else {
            continue;
        };
        let target = target[..end].split('#').next().unwrap_or_default();
        if target.is_empty() || target.contains("://") {
            continue;
        }
        assert!(
            root.join(target).exists(),
            "README links to missing {target}"
        );
    }
}

#[test]
fn every_endpoint_has_one_row_in_one_http_table() {
    let readme = read("README.md");
    let rows: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with("| `GET /healthz`"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    // The HTTP API table is one block: no endpoint rows stray under later sections.
    let api = readme.find("## HTTP API").unwrap();
    let after_table = api + readme[api..].find("\n\n**").unwrap_or(readme.len() - api);
    for line in readme[after_table..].lines() {
        assert!(
            !(line.starts_with("| `GET /") || line.starts_with("| `POST /")),
            "an endpoint row outside the HTTP API table: {line}"
        );
    }
}

#[test]
fn the_key_reload_interval_is_stated_alike_everywhere() {
    let design = read("docs/DESIGN.md");
    assert!(
        !design.contains("every 5 s"),
        "DESIGN.md names an old interval"
    );
    let readme = read("README.md");
    let row = readme
        .lines()
        .find(|line| line.starts_with("| `key_poll_interval`"))
        .unwrap();
    let default = tessera_server::Config::default()
        .key_poll_interval
        .as_secs();
    assert!(row.contains(&format!("\"{default}s\"")), "{row}");
    assert!(design.contains("`key_poll_interval` (15 s by default)"));
    assert_eq!(default, 15);
}
