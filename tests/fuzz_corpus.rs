//! Replays the checked-in fuzz seeds (fuzz/seeds/TARGET/*) through the same checks the
//! cargo-fuzz targets run, so every `cargo test` exercises them on stable Rust.

use std::path::Path;
use vxtap_suite::fuzz_checks::TARGETS;

#[test]
fn seeds_replay_without_breaking_a_property() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (target, check) in TARGETS {
        let dir = seeds.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seed corpus {} is missing: {e}", dir.display()))
            .map(|entry| entry.expect("readable directory entry").path())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "no seeds for {target} in {}",
            dir.display()
        );
        for file in &files {
            let data = std::fs::read(file).expect("readable seed");
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(
                result.is_ok(),
                "{target}: seed {} breaks its property",
                file.display()
            );
        }
        println!("{target}: {} seeds replayed", files.len());
    }
}
