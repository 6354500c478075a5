//! Settings from the environment: every key of the configuration file has
//! an environment twin, `ROOMLET_` and its path in upper case with `__`
//! between the levels (keys themselves hold `_`): `[nats] liveness_ttl_ms`
//! is `ROOMLET_NATS__LIVENESS_TTL_MS`, `[modules.rooms] deadline_ms` is
//! `ROOMLET_MODULES__ROOMS__DEADLINE_MS`; a top-level list is one variable
//! (`ROOMLET_ICE_SERVERS='[{urls = ["stun:stun.example.org"]}]'`). A value
//! takes the type the key has in the defaults (`ROOMLET_SERVER__NODE=7` is
//! the name "7"); a key without a default is read as TOML where it parses
//! as one (`64`, `true`, `["a"]`), else as a string.
//!
//! Not settings, and never read here: the command-line flags' own twins
//! (`ROOMLET_LISTEN`, …, which clap reads), and secrets (`ROOMLET_API_KEYS`,
//! `ROOMLET_OPERATOR_TOKEN`, `ROOMLET_TURN_SECRET`, `ROOMLET_NATS_USER`,
//! `_PASSWORD`, `_TOKEN`, `_NKEY`, `ROOMLET_AGORA_APP_CERTIFICATE`,
//! `ROOMLET_LIVEKIT_API_SECRET`, and every `*_FILE`), which only
//! `roomlet_runtime::secrets` reads. Any other `ROOMLET_*` variable is
//! unknown and reported.

/// The flags' environment twins (main.rs).
const FLAG_TWINS: &[&str] = &[
    "ROOMLET_CONFIG",
    "ROOMLET_LISTEN",
    "ROOMLET_INTERNAL_LISTEN",
    "ROOMLET_FUNCTIONS",
    "ROOMLET_MODULES",
    "ROOMLET_DATA_DIR",
    "ROOMLET_REGION",
    "ROOMLET_NODE",
    "ROOMLET_PUBLIC_URL",
    "ROOMLET_NATS",
    "ROOMLET_NATS_PREFIX",
    "ROOMLET_LOG_FORMAT",
    "ROOMLET_DEV",
    "ROOMLET_HEALTH_URL",
];

/// Secrets: read from the environment by their owners, never as settings.
const SECRETS: &[&str] = &[
    "ROOMLET_API_KEYS",
    "ROOMLET_OPERATOR_TOKEN",
    "ROOMLET_TURN_SECRET",
    "ROOMLET_NATS_USER",
    "ROOMLET_NATS_PASSWORD",
    "ROOMLET_NATS_TOKEN",
    "ROOMLET_NATS_NKEY",
    "ROOMLET_AGORA_APP_CERTIFICATE",
    "ROOMLET_LIVEKIT_API_SECRET",
];

/// The prefix of every roomlet variable.
const PREFIX: &str = "ROOMLET_";

/// What the environment says.
#[derive(Debug, Default)]
pub struct Overlay {
    /// The settings, as a TOML table to lay over the file's.
    pub settings: toml::Table,
    /// The variables that set them, for messages.
    pub from: Vec<String>,
    /// `ROOMLET_*` variables that are neither settings, flags nor secrets.
    pub unknown: Vec<String>,
}

/// Reads the settings among `vars` (the process's environment, or a
/// test's). `defaults` is the default configuration as TOML: its keys are
/// the top-level ones, and its values give the keys' types.
pub fn overlay(
    vars: impl IntoIterator<Item = (String, String)>,
    defaults: &toml::Table,
    top_level: &[&str],
) -> Overlay {
    let mut out = Overlay::default();
    for (name, value) in vars {
        let Some(path) = name.strip_prefix(PREFIX) else {
            continue;
        };
        // A secret's `*_FILE` twin is one word; `ROOMLET_NATS__CA_FILE` is
        // the setting `[nats] ca_file`.
        if FLAG_TWINS.contains(&name.as_str())
            || SECRETS.contains(&name.as_str())
            || (name.ends_with("_FILE") && !path.contains("__"))
        {
            continue;
        }
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if !top_level.contains(&keys[0].as_str()) {
            out.unknown.push(name);
            continue;
        }
        let like = lookup(defaults, &keys);
        insert(&mut out.settings, &keys, typed(&value, like));
        out.from.push(name);
    }
    out.from.sort();
    out.unknown.sort();
    out
}

/// The default value at `keys`, if the defaults have one.
fn lookup<'a>(defaults: &'a toml::Table, keys: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = keys.split_first()?;
    let mut v = defaults.get(first)?;
    for k in rest {
        v = v.as_table()?.get(k)?;
    }
    Some(v)
}

/// A variable's value, typed like the key's default when it has one; a
/// value that does not fit stays a string, which the configuration's own
/// check then refuses with the key's name.
fn typed(value: &str, like: Option<&toml::Value>) -> toml::Value {
    let text = || toml::Value::String(value.to_owned());
    match like {
        Some(toml::Value::String(_)) => text(),
        Some(toml::Value::Integer(_)) => value
            .trim()
            .parse()
            .map_or_else(|_| text(), toml::Value::Integer),
        Some(toml::Value::Float(_)) => value
            .trim()
            .parse()
            .map_or_else(|_| text(), toml::Value::Float),
        Some(toml::Value::Boolean(_)) => value
            .trim()
            .parse()
            .map_or_else(|_| text(), toml::Value::Boolean),
        _ => format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(text),
    }
}

/// Sets `keys` (a path) in `table` to `value`, making tables on the way.
fn insert(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    let Some((last, path)) = keys.split_last() else {
        return;
    };
    let mut t = table;
    for k in path {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        t = next;
    }
    t.insert(last.clone(), value);
}

/// Lays `over` onto `base`, table by table; a value in `over` wins.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn settings_flags_secrets_and_strangers_are_told_apart() {
        let defaults: toml::Table = "[server]\nnode = \"\"\n[nats]\nliveness_ttl_ms = 5000\n"
            .parse()
            .expect("toml");
        let top = ["server", "nats", "modules", "ice_servers"];
        let o = overlay(
            vars(&[
                ("ROOMLET_SERVER__NODE", "7"),
                ("ROOMLET_NATS__LIVENESS_TTL_MS", "9000"),
                ("ROOMLET_MODULES__ROOMS__CONFIG__GREETING", "hello there"),
                ("ROOMLET_ICE_SERVERS", "[]"),
                ("ROOMLET_LISTEN", "127.0.0.1:1"),
                ("ROOMLET_API_KEYS", "k:s"),
                ("ROOMLET_API_KEYS_FILE", "/run/secrets/k"),
                ("ROOMLET_NATS_PASSWORD", "p"),
                ("ROOMLET_TYPO", "1"),
                ("HOME", "/root"),
            ]),
            &defaults,
            &top,
        );
        assert_eq!(
            o.settings["nats"]["liveness_ttl_ms"],
            toml::Value::Integer(9000)
        );
        assert_eq!(
            o.settings["modules"]["rooms"]["config"]["greeting"],
            toml::Value::String("hello there".into())
        );
        assert_eq!(
            o.settings["server"]["node"],
            toml::Value::String("7".into())
        );
        assert_eq!(o.settings["ice_servers"], toml::Value::Array(Vec::new()));
        assert_eq!(o.unknown, ["ROOMLET_TYPO"]);
        assert_eq!(o.from.len(), 4);
        assert!(!o.settings.contains_key("api_keys"));
    }
}
