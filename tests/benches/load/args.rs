//! A tiny `--key value` parser: the generator has many knobs and no need
//! for a CLI framework in the tests crate.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::str::FromStr;

/// The subcommand and its `--key value` options (`--flag` alone is "true").
pub struct Args {
    /// First positional argument.
    pub command: String,
    opts: HashMap<String, String>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Args {
    /// Parses `std::env::args`, skipping the `--bench` cargo passes.
    pub fn parse() -> Result<Self> {
        let raw: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        let mut command = String::from("help");
        let mut opts = HashMap::new();
        let mut i = 0;
        while i < raw.len() {
            let a = &raw[i];
            if let Some(key) = a.strip_prefix("--") {
                let (key, value) = match key.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None if raw.get(i + 1).is_some_and(|n| !n.starts_with("--")) => {
                        i += 1;
                        (key.to_string(), raw[i].clone())
                    }
                    None => (key.to_string(), "true".to_string()),
                };
                opts.insert(key, value);
            } else if command == "help" {
                command = a.clone();
            } else {
                bail!("unexpected argument {a:?}");
            }
            i += 1;
        }
        Ok(Self {
            command,
            opts,
            used: Default::default(),
        })
    }

    /// The value of `--key`, parsed, or `default`.
    pub fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.used.borrow_mut().push(key.to_string());
        match self.opts.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{key} {v:?}: {e}"))
                .context("bad option"),
        }
    }

    /// The comma-separated values of `--key`, parsed, or `default`'s.
    pub fn list<T: FromStr>(&self, key: &str, default: &str) -> Result<Vec<T>>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.get(key, default.to_string())?;
        text.split(',')
            .map(|v| {
                v.parse()
                    .map_err(|e| anyhow::anyhow!("--{key} {text:?}: {v:?}: {e}"))
            })
            .collect()
    }

    /// The value of `--key`, if given.
    pub fn opt(&self, key: &str) -> Option<String> {
        self.used.borrow_mut().push(key.to_string());
        self.opts.get(key).cloned()
    }

    /// Fails on options no code asked for (a typo would silently measure
    /// the defaults otherwise).
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        for k in self.opts.keys() {
            if !used.contains(k) {
                bail!("unknown option --{k} for `{}`", self.command);
            }
        }
        Ok(())
    }
}
