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

#[test]
fn the_interop_snippets_are_the_tested_files() {
    // docs/api-backends.md shows each snippet as the code block right after a
    // `<!-- snippet: PATH -->` line; PATH is the file interop.rs runs. They must be equal.
    let doc = read("docs/api-backends.md");
    let marker = "<!-- snippet: ";
    let mut shown = Vec::new();
    for (at, _) in doc.match_indices(marker) {
        let rest = &doc[at + marker.len()..];
        let (path, rest) = rest.split_once(" -->\n").unwrap();
        let (fence, rest) = rest.split_once('\n').unwrap();
        assert!(
            fence.starts_with("```"),
            "{path}: no code block after its marker"
        );
        let block = &rest[..rest.find("\n```\n").unwrap() + 1];
        assert_eq!(
            block,
            read(path),
            "the block of docs/api-backends.md differs from {path}: copy the file into it"
        );
        shown.push(path);
    }
    assert_eq!(
        shown,
        [
            "crates/tessera/tests/interop/verify_pyjwt.py",
            "crates/tessera/tests/interop/verify_jose.mjs"
        ]
    );
    // The versions the document names are the ones .ci/run installs and the tests ran.
    let ci = read(".ci/run");
    for (variable, named) in [
        ("PYJWT_VERSION", "PyJWT"),
        ("CRYPTOGRAPHY_VERSION", "cryptography"),
        ("JOSE_VERSION", "`jose`"),
    ] {
        let line = ci
            .lines()
            .find(|line| line.starts_with(&format!("{variable}=")))
            .unwrap_or_else(|| panic!(".ci/run does not pin {variable}"));
        let version = line.split_once('=').unwrap().1;
        assert!(
            doc.contains(&format!("{named} {version}")),
            "docs/api-backends.md does not name {named} {version}"
        );
    }
}
