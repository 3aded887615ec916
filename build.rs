//! Records the git commit pgarc is built from, for `pgarc --version` (PGARC_GIT_COMMIT). A
//! build outside a git checkout (a source tarball) says `unknown` unless the variable is set.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PGARC_GIT_COMMIT");
    let from_env = std::env::var("PGARC_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    let commit = from_env
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PGARC_GIT_COMMIT={commit}");
}

/// `git rev-parse --short=12 HEAD`, with the files that change when HEAD does watched.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then_some(())?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
    };
    let dir = PathBuf::from(git(&["rev-parse", "--git-dir"])?);
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        let path = dir.join(watched);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty())
}
