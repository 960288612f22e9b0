//! Replays the inputs kept for the fuzz targets, crash inputs in
//! fuzz/regressions/<target>/ and the seeds in fuzz/corpus/<target>/,
//! through the same harness the targets run (fuzz/src/lib.rs), so a fixed
//! crash stays fixed without running the fuzzer.

use std::{fs, panic, path::Path};

#[path = "../../fuzz/src/lib.rs"]
mod harness;

#[test]
fn kept_fuzz_inputs_still_pass() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    let mut failed = Vec::new();
    for (target, run) in harness::TARGETS {
        for kind in ["regressions", "corpus"] {
            let Ok(entries) = fs::read_dir(fuzz.join(kind).join(target)) else {
                continue;
            };
            let mut paths: Vec<_> = entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_file())
                .collect();
            paths.sort();
            for path in paths {
                let data = fs::read(&path).expect("readable input");
                ran += 1;
                if panic::catch_unwind(|| run(&data)).is_err() {
                    failed.push(path.display().to_string());
                }
            }
        }
    }
    assert!(ran > 0, "no inputs found under {}", fuzz.display());
    assert!(failed.is_empty(), "fuzz inputs that fail: {failed:?}");
}
