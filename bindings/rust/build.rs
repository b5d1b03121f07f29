//! Finds libkvfit for the linker: `KVFIT_LIB_DIR` if set, else the `-L`
//! folders `pkg-config --libs kvfit` prints (a build tree's
//! kvfit-uninstalled.pc works too), else the linker's default search path.
//! The folder found is also written into this crate's own test, example and
//! benchmark binaries as their run path (rpath), so that `cargo test` runs
//! against that very library without LD_LIBRARY_PATH. Crates that depend on
//! this one get the folder as DEP_KVFIT_LIB_DIR for the same purpose.
use std::env;
use std::process::Command;

fn pkg_config_lib_dirs() -> Option<Vec<String>> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let out = Command::new(pkg_config).args(["--libs-only-L", "kvfit"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.split_whitespace().filter_map(|w| w.strip_prefix("-L")).map(str::to_string).collect())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KVFIT_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    let dirs = match env::var("KVFIT_LIB_DIR") {
        Ok(dir) if !dir.is_empty() => vec![dir],
        _ => pkg_config_lib_dirs().unwrap_or_else(|| {
            println!("cargo:warning=kvfit: neither KVFIT_LIB_DIR nor pkg-config found libkvfit; using the linker's default path");
            Vec::new()
        }),
    };
    for dir in &dirs {
        println!("cargo:rustc-link-search=native={}", dir);
    }
    if let Some(dir) = dirs.first() {
        // Exposed to crates that depend on this one as DEP_KVFIT_LIB_DIR.
        println!("cargo:lib_dir={}", dir);
        // Applies to this package's own binaries (tests, examples), not to
        // those of dependent crates. A relative folder would be taken from
        // wherever the binary is started, so it is made absolute.
        if env::var("CARGO_CFG_TARGET_FAMILY").as_deref() == Ok("unix") {
            let abs = std::fs::canonicalize(dir).map(|p| p.display().to_string()).unwrap_or_else(|_| dir.clone());
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", abs);
        }
    }
    println!("cargo:rustc-link-lib=dylib=kvfit");
}
