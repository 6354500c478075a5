//! Is the `wasm32-wasip2` standard library there before the guests are
//! built? Without it the nested build fails deep inside ("can't find crate
//! for `core`") after minutes of compiling the host; this check stops at
//! once, or installs the target through rustup and says so.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use crate::TARGET;

/// What [`ensure_target`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Installed already.
    Present,
    /// Missing, and `rustup target add` installed it just now.
    Installed,
}

/// Checks that `rustc` has the standard library for [`TARGET`]; when it does
/// not, runs `rustup target add` for the toolchain in use. `env` is added to
/// both commands' environment (tests point rustup elsewhere with it).
///
/// The error is what a user must read: it names the command to run.
pub fn ensure_target(rustc: &OsStr, env: &[(&str, &OsStr)]) -> Result<Target, String> {
    if has_target(rustc, env) {
        return Ok(Target::Present);
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    for (k, v) in env {
        rustup.env(k, v);
    }
    let why = match rustup.output() {
        Ok(out) if out.status.success() && has_target(rustc, env) => return Ok(Target::Installed),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Its first error line; what follows can be a backtrace.
            let line = stderr
                .lines()
                .find(|l| l.trim_start().starts_with("error"))
                .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()));
            format!(
                "`rustup target add {TARGET}` failed ({})",
                line.unwrap_or("no message").trim()
            )
        }
        Err(e) => format!("rustup could not be run ({e})"),
    };
    Err(format!(
        "the Rust toolchain building roomlet has no {TARGET} target, which the \
         plugins built into roomlet need, and it could not be installed: {why}. \
         Run `rustup target add {TARGET}` and build again."
    ))
}

/// Whether `rustc`'s sysroot holds a standard library for [`TARGET`].
fn has_target(rustc: &OsStr, env: &[(&str, &OsStr)]) -> bool {
    let mut cmd = Command::new(rustc);
    cmd.args(["--print", "target-libdir", "--target", TARGET]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Ok(out) = cmd.output() else { return false };
    if !out.status.success() {
        return false;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    })
}
