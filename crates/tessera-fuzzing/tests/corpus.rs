//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the entry
//! function its fuzz target calls: the fast check CI runs on a stable toolchain.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_committed_corpus_file_replays_without_a_crash() {
    for (target, entry) in tessera_fuzzing::TARGETS {
        let dir = corpus_dir(target);
        let mut count = 0;
        for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            entry(&data);
            count += 1;
        }
        assert!(count > 0, "no corpus for {target} in {}", dir.display());
    }
}
