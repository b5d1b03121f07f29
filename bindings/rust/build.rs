//! Finds or builds libkvfit for the linker, in this order:
//!
//! 1. `KVFIT_LIB_DIR`, a folder holding libkvfit.so;
//! 2. the `-L` folders `pkg-config --libs kvfit` prints (an installed kvfit,
//!    or a build tree's kvfit-uninstalled.pc through `PKG_CONFIG_PATH`);
//! 3. otherwise, in a checkout of the kvfit repository, the library built
//!    from that checkout with the project's own CMake into `OUT_DIR` (CMake
//!    >= 3.20, a C++17 compiler, pkg-config and libpcre2-dev are needed; the
//!    backends are the C build's, and `KVFIT_CUDA=OFF` / `KVFIT_VULKAN=OFF` in
//!    the environment leave one out).
//!
//! `KVFIT_SYSTEM=1` (or the crate feature `system`) never builds: it takes
//! 1 or 2, else leaves `-lkvfit` to the linker's default search path.
//!
//! The folder found or built is also written into this crate's own test,
//! example and benchmark binaries as their run path (rpath), so that
//! `cargo test` runs against that very library without LD_LIBRARY_PATH.
//! Crates that depend on this one get the folder as DEP_KVFIT_LIB_DIR for the
//! same purpose.
use std::env;
use std::path::{Path, PathBuf};
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

fn env_on(name: &str) -> bool {
    matches!(env::var(name).as_deref(), Ok(v) if !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("off"))
}

/// Runs one CMake step; its output goes to a log file (a build script's
/// stdout is read by cargo as instructions), shown when the step fails.
fn run_cmake(cmake: &str, args: &[String], log: &Path) {
    let out = Command::new(cmake).args(args).output().unwrap_or_else(|e| {
        panic!(
            "kvfit: cannot run `{}` ({}). Building libkvfit from source needs CMake >= 3.20; \
             or install kvfit and set KVFIT_SYSTEM=1, or set KVFIT_LIB_DIR",
            cmake, e
        )
    });
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    let _ = std::fs::write(log, &text);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&text));
        panic!("kvfit: `{} {}` failed ({}); output above and in {}", cmake, args.join(" "), out.status, log.display());
    }
}

/// Builds the shared library from the repository this crate sits in and
/// returns the folder holding it.
fn build_from_source(repo: &Path) -> String {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let build = out_dir.join("kvfit-build");
    let cmake = env::var("CMAKE").unwrap_or_else(|_| "cmake".to_string());
    let mut configure = vec![
        "-S".to_string(),
        repo.display().to_string(),
        "-B".to_string(),
        build.display().to_string(),
        "-DCMAKE_BUILD_TYPE=Release".to_string(),
        "-DKVFIT_BUILD_TESTS=OFF".to_string(),
        "-DKVFIT_BUILD_SAMPLES=OFF".to_string(),
    ];
    for option in ["KVFIT_CUDA", "KVFIT_VULKAN"] {
        if let Ok(v) = env::var(option) {
            configure.push(format!("-D{}={}", option, v));
        }
    }
    run_cmake(&cmake, &configure, &out_dir.join("cmake-configure.log"));
    let jobs = env::var("NUM_JOBS").unwrap_or_else(|_| "1".to_string());
    let build_args = vec![
        "--build".to_string(),
        build.display().to_string(),
        "--target".to_string(),
        "kvfit".to_string(),
        "--parallel".to_string(),
        jobs,
    ];
    run_cmake(&cmake, &build_args, &out_dir.join("cmake-build.log"));
    // Rebuild when the library's sources change (cargo scans folders whole).
    for p in ["CMakeLists.txt", "cmake", "include", "src", "vulkan", "cuda"] {
        println!("cargo:rerun-if-changed={}", repo.join(p).display());
    }
    build.display().to_string()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["KVFIT_LIB_DIR", "KVFIT_SYSTEM", "KVFIT_CUDA", "KVFIT_VULKAN", "PKG_CONFIG_PATH", "PKG_CONFIG", "CMAKE"]
    {
        println!("cargo:rerun-if-env-changed={}", var);
    }
    let system = env_on("KVFIT_SYSTEM") || env::var_os("CARGO_FEATURE_SYSTEM").is_some();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let repo = manifest.join("../..");
    let in_checkout = repo.join("CMakeLists.txt").is_file() && repo.join("include/kvfit.h").is_file();

    let dirs = match env::var("KVFIT_LIB_DIR") {
        Ok(dir) if !dir.is_empty() => vec![dir],
        _ => match pkg_config_lib_dirs() {
            Some(dirs) => dirs,
            None if !system && in_checkout => vec![build_from_source(&repo.canonicalize().unwrap_or(repo))],
            None => {
                println!(
                    "cargo:warning=kvfit: neither KVFIT_LIB_DIR nor pkg-config found libkvfit{}; using the linker's default path",
                    if system { "" } else { " and there is no kvfit checkout to build it from" }
                );
                Vec::new()
            }
        },
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
