//! Other languages' runtimes for the cross-language tests: a Python with redis-py, cbor2 and croniter, and the TypeScript
//! package built with its dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root (where SPEC.md is), from whichever crate of it the test belongs to.
pub fn repo() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .find(|p| p.join("SPEC.md").is_file())
            .expect("a crate inside the repository")
            .to_path_buf()
    })
}

/// The first Python that imports `redis`, `cbor2` and `croniter`: `RILL_TEST_PYTHON`, then `python3` on PATH, then
/// Debian's `/usr/bin/python3` (where `apt-get install python3-redis python3-cbor2` puts them when PATH leads to
/// another Python, such as pyenv's).
pub fn python() -> &'static str {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("RILL_TEST_PYTHON")
            .into_iter()
            .chain(["python3".to_string(), "/usr/bin/python3".to_string()])
            .collect();
        candidates
            .iter()
            .find(|py| {
                Command::new(py.as_str())
                    .args(["-c", "import redis, cbor2, croniter"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no Python with the redis, cbor2 and croniter modules among {candidates:?}: \
                     apt-get install python3-redis python3-cbor2 python3-pip, then \
                     pip install --break-system-packages 'croniter>=6' (or pip install redis cbor2 croniter)"
                )
            })
    })
}

/// `clients/typescript`, built once per test binary (`npx tsc`), with its dependencies (`npm install`, which `.ci/run`
/// does). Returns its directory.
pub fn typescript_package() -> &'static str {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = repo().join("clients/typescript");
        assert!(
            dir.join("node_modules").is_dir(),
            "clients/typescript has no node_modules: run `npm install` there (as .ci/run does)"
        );
        let out = Command::new("npx")
            .args(["tsc", "-p", "."])
            .current_dir(&dir)
            .output()
            .expect("npx (Node.js) runs");
        assert!(
            out.status.success(),
            "building the TypeScript package failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        dir.display().to_string()
    })
}
