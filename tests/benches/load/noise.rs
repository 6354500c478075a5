//! The machine's own latency floor: how late a thread that sleeps and
//! wakes, as the server's worker does between frames, gets the CPU back on
//! an otherwise idle core. A shared VM freezes a vCPU now and then without
//! reporting it as steal time, and kernel threads (here `kdamond`, DAMON's
//! reclaim, every ~0.5 s) take the core for a millisecond; every frame in
//! flight then waits too, whatever the server does. Run it before a
//! latency run to know what part of the tail is the machine's.

use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::{Duration, Instant};

/// What a probe measured on one core.
struct Probe {
    wakes: u64,
    late_500us: u64,
    late_1ms: u64,
    late_5ms: u64,
    /// Time lost beyond 1 ms late, summed.
    lost: Duration,
    worst: Duration,
}

/// Sleeps `sleep` at a time for `duration` on the current core and counts
/// the wake-ups that came late.
fn probe(duration: Duration, sleep: Duration) -> Probe {
    let mut p = Probe {
        wakes: 0,
        late_500us: 0,
        late_1ms: 0,
        late_5ms: 0,
        lost: Duration::ZERO,
        worst: Duration::ZERO,
    };
    let end = Instant::now() + duration;
    loop {
        let t = Instant::now();
        if t >= end {
            return p;
        }
        std::thread::sleep(sleep);
        let late = t.elapsed().saturating_sub(sleep);
        p.wakes += 1;
        p.worst = p.worst.max(late);
        if late >= Duration::from_micros(500) {
            p.late_500us += 1;
        }
        if late >= Duration::from_millis(1) {
            p.late_1ms += 1;
            p.lost += late - Duration::from_millis(1);
        }
        if late >= Duration::from_millis(5) {
            p.late_5ms += 1;
        }
    }
}

/// `noise-probe`: one core's probe (started pinned by [`noise`]).
pub fn run_probe(cpu: &str, duration: Duration, sleep: Duration) {
    let p = probe(duration, sleep);
    let secs = duration.as_secs_f64();
    println!(
        "   cpu {cpu}: {} wake-ups; late ≥0.5 ms {}, ≥1 ms {} ({:.1}/s), ≥5 ms {}; worst {:.2} ms; {:.1} ms/s lost beyond 1 ms",
        p.wakes,
        p.late_500us,
        p.late_1ms,
        p.late_1ms as f64 / secs,
        p.late_5ms,
        p.worst.as_secs_f64() * 1e3,
        p.lost.as_secs_f64() * 1e3 / secs,
    );
    println!(
        "RESULT label=noise cpu={cpu} late_1ms_per_s={:.2} late_5ms={} worst_ms={:.2}",
        p.late_1ms as f64 / secs,
        p.late_5ms,
        p.worst.as_secs_f64() * 1e3
    );
}

/// `noise`: a probe pinned to each of `cpus`, all at once.
pub fn noise(cpus: &str, duration: Duration, sleep: Duration) -> Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    println!(
        "== noise: a thread sleeping {} µs at a time, {:.0} s per core, nothing else of ours running",
        sleep.as_micros(),
        duration.as_secs_f64()
    );
    let children = cpus
        .split(',')
        .map(|cpu| {
            Command::new("taskset")
                .arg("-c")
                .arg(cpu)
                .arg(&exe)
                .args(["noise-probe", "--cpu", cpu, "--gen-cpu", "none"])
                .arg("--duration")
                .arg(duration.as_secs_f64().to_string())
                .arg("--sleep-us")
                .arg(sleep.as_micros().to_string())
                .spawn()
                .with_context(|| format!("starting the probe for cpu {cpu} (taskset, util-linux)"))
        })
        .collect::<Result<Vec<_>>>()?;
    for mut c in children {
        if !c.wait()?.success() {
            bail!("a noise probe failed");
        }
    }
    Ok(())
}
