//! Throughput at a latency bound: fixed-rate runs at rising offered rates
//! against each server, and the highest rate each one sustains with its p99
//! under the bound.
//!
//! A closed-loop max-rate run measures how many frames a saturated server
//! pushes through, but its latency is whatever queue the loop builds, so it
//! cannot say "at equal p99". Offering the same rates to every server and
//! asking which ones each keeps under one p99 bound can: both servers are
//! held to the same latency, and the throughput is what differs.

use crate::relay::{self, Report, Workload};
use anyhow::{Result, bail};

/// What makes a rate held.
pub struct Bound {
    /// p99 bounds (sender's stamp to receiver), µs: the summary gives the
    /// sustained rate under each.
    pub p99_us: Vec<f64>,
    /// Runs per server and rate; a rate is held when more than half held.
    pub repeat: usize,
}

/// One run's outcome at one rate.
struct Outcome {
    /// Nothing refused, lost or closed, and what was offered delivered.
    delivered: bool,
    p99_us: f64,
    cpu_us_per_frame: f64,
}

impl Outcome {
    fn of(r: &Report, rate: f64) -> Self {
        Self {
            delivered: r.errors.is_empty()
                && r.lost == 0
                && r.closed == 0
                && r.delivered_per_s >= 0.99 * rate,
            p99_us: r.latency[1],
            cpu_us_per_frame: r.server_cpu_per_frame_us.unwrap_or(f64::NAN),
        }
    }
}

/// Whether more than half of `runs` delivered within `p99_us`.
fn held(runs: &[Outcome], p99_us: f64) -> bool {
    2 * runs
        .iter()
        .filter(|o| o.delivered && o.p99_us <= p99_us)
        .count()
        > runs.len()
}

/// Runs every server at every rate (interleaved: rate by rate, server by
/// server, so a slow phase of the machine falls on all of them) and prints
/// the table and the sustained rates. `servers` are (name, binary) pairs;
/// `run` starts a fresh server, runs the workload and stops it.
pub fn sweep(
    w: &Workload,
    rates: &[f64],
    servers: &[(&str, &str)],
    bound: &Bound,
    mut run: impl FnMut(&str, &str, &Workload) -> Result<Report>,
) -> Result<()> {
    if rates.is_empty() || servers.is_empty() || bound.p99_us.is_empty() {
        bail!("sweep needs --rates R1,R2,..., --p99-us B1,B2,... and at least one server");
    }
    // outcomes[server][rate]: one per repeat.
    let mut outcomes: Vec<Vec<Vec<Outcome>>> = servers
        .iter()
        .map(|_| rates.iter().map(|_| Vec::new()).collect())
        .collect();
    for (ri, &rate) in rates.iter().enumerate() {
        let at = Workload {
            rate: Some(rate),
            ..w.clone()
        };
        for _ in 0..bound.repeat {
            for (si, &(name, bin)) in servers.iter().enumerate() {
                let r = run(name, bin, &at)?;
                relay::print(&format!("{name}@{rate:.0}"), &at, &r);
                outcomes[si][ri].push(Outcome::of(&r, rate));
            }
        }
    }
    println!(
        "== sweep: {} rooms x {} peers, mix {}:{}:{}, {} run(s) per server and rate; \
         p99 µs and server CPU µs per frame (`!`: offered frames not all delivered, or errors)",
        w.rooms, w.peers, w.mix[0], w.mix[1], w.mix[2], bound.repeat
    );
    print!("   {:>8}", "rate/s");
    for (name, _) in servers {
        print!("   {name:<28}");
    }
    println!();
    for (ri, rate) in rates.iter().enumerate() {
        print!("   {rate:>8.0}");
        for runs in &outcomes {
            let runs = &runs[ri];
            let p99s: Vec<String> = runs
                .iter()
                .map(|o| format!("{:.0}{}", o.p99_us, if o.delivered { "" } else { "!" }))
                .collect();
            let cpu = runs.iter().map(|o| o.cpu_us_per_frame).sum::<f64>() / runs.len() as f64;
            let cell = format!("{} µs, {cpu:.1} µs/f", p99s.join("/"));
            print!("   {cell:<28}");
        }
        println!();
    }
    // Sustained: the highest rate held with every rate below it held too,
    // so one lucky run above a miss does not count.
    println!(
        "== sustained rate under each p99 bound (every rate up to it held in more than half its runs); ratios against {}",
        servers[0].0
    );
    for &b in &bound.p99_us {
        let sustained: Vec<f64> = outcomes
            .iter()
            .map(|row| {
                rates
                    .iter()
                    .zip(row)
                    .take_while(|(_, runs)| held(runs, b))
                    .last()
                    .map_or(0.0, |(rate, _)| *rate)
            })
            .collect();
        for ((name, _), s) in servers.iter().zip(&sustained) {
            // No ratio against a server that held nothing.
            let ratio = if sustained[0] > 0.0 {
                format!("{:.2}x", s / sustained[0])
            } else {
                "-".into()
            };
            println!("   p99 <= {b:>6.0} µs   {name:<10} {s:>8.0}/s  {ratio:>6}");
            println!("SWEEP label={name} p99_bound_us={b:.0} sustained_per_s={s:.0}");
        }
    }
    Ok(())
}
