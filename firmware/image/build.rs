//! Links the image with its own linker script (and only the image: build
//! scripts and host crates keep the normal link), and stamps a build id.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let script = dir.join("linker.ld");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--no-dynamic-linker",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,--build-id=none",
        &format!("-Wl,-T,{}", script.display()),
    ] {
        println!("cargo:rustc-link-arg-bin=routerd={arg}");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");

    let root = dir.join("../..");
    for f in [".git/HEAD", ".git/index"] {
        if root.join(f).exists() {
            println!("cargo:rerun-if-changed={}", root.join(f).display());
        }
    }
    println!("cargo:rustc-env=ROUTERD_BUILD_ID={}", build_id(&root));
}

/// `<commit>` or `<commit>-dirty`, or `unknown` outside a git checkout.
fn build_id(root: &PathBuf) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".to_string(),
    }
}
