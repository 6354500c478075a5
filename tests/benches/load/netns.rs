//! `--netns true`: the whole measurement (generator and the servers it
//! starts) in a network namespace of its own.
//!
//! Why: the Docker engine on the bench machines installs a nat rule in
//! the host's `OUTPUT` chain, and its mere presence loads connection
//! tracking for every packet of the host's namespace, loopback included.
//! A sampling profile put `__nf_conntrack_find_get` and `ipt_do_table` at
//! 5.5 % of the server's time at 20,000 frames/s (sixteenth session):
//! the host's firewall, not roomlet. A fresh namespace has a loopback and
//! no rules. Nothing on the host is changed; the namespace goes when the
//! run ends.

use anyhow::{Context, Result, bail};
use std::process::Command;

/// Set in the re-executed generator, so it does not re-execute again.
const INSIDE: &str = "ROOMLET_LOAD_NETNS";

/// Runs this same command again inside a fresh network namespace with its
/// loopback up, and returns its exit code; `None` when already inside.
/// Needs root (`unshare -n`), as the bench machines give.
pub fn reexec() -> Result<Option<i32>> {
    if std::env::var_os(INSIDE).is_some() {
        return Ok(None);
    }
    let me = std::env::current_exe().context("finding the generator's own binary")?;
    let status = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(me)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .status()
        .context("running `unshare` (util-linux) for --netns")?;
    match status.code() {
        Some(c) => Ok(Some(c)),
        None => bail!("--netns: the generator in the namespace was killed ({status})"),
    }
}
