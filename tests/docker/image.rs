//! The `FROM scratch` image: it runs read-only, serves clients, and no secret is in it, its logs or its errors (its layers are scanned).

use super::*;
use std::io::Read as _;

/// Every regular file in a tar archive: (path, contents).
fn tar_entries(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(data);
    let Ok(entries) = archive.entries() else {
        return out;
    };
    for mut e in entries.flatten() {
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut body = Vec::new();
        if e.read_to_end(&mut body).is_ok() {
            out.push((path, body));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Scans every file of a `docker save` archive, and every file of every
/// layer in it, for `needles`. Returns (layers scanned, files scanned,
/// hits as "needle in path").
fn scan_saved_image(archive: &[u8], needles: &[&str]) -> (usize, usize, Vec<String>) {
    let mut layers = 0;
    let mut files = 0;
    let mut hits = Vec::new();
    for (path, body) in tar_entries(archive) {
        let is_tar = body.len() > 262 && &body[257..262] == b"ustar";
        assert!(
            !(body.len() > 2 && body[0] == 0x1f && body[1] == 0x8b),
            "{path} is compressed: cannot scan it"
        );
        if is_tar {
            layers += 1;
            for (inner, content) in tar_entries(&body) {
                files += 1;
                for n in needles {
                    if contains(&content, n.as_bytes()) {
                        hits.push(format!("{n} in {path}:{inner}"));
                    }
                }
            }
        } else {
            files += 1;
            for n in needles {
                if contains(&body, n.as_bytes()) {
                    hits.push(format!("{n} in {path}"));
                }
            }
        }
    }
    (layers, files, hits)
}

#[test]
fn image_runs_read_only_serves_clients_and_leaks_no_secret() {
    let _lock = docker_lock();
    if !docker_available() {
        return skip("no Docker engine (`docker info` fails)");
    }
    let build = match static_build() {
        Ok(b) => b,
        Err(why) => return skip(&why),
    };
    let root = workspace();
    let mut cleanup = Cleanup::default();
    let image = format!("roomlet-test:{}", unique("img"));

    // --- build from the local binary (FROM scratch: nothing is pulled)
    check(
        docker()
            .args(["build", "-q", "-f"])
            .arg(root.join("docker/Dockerfile.local"))
            .args(["-t", &image])
            .arg(&build.context),
    );
    cleanup.images.push(image.clone());
    let size: u64 = inspect(&image, "{{.Size}}").parse().expect("size");
    let binary_size = std::fs::metadata(&build.binary).expect("binary").len();
    eprintln!(
        "image {image}: {size} bytes ({:.1} MB); binary {binary_size} bytes ({:.1} MB)",
        size as f64 / 1e6,
        binary_size as f64 / 1e6
    );
    assert!(
        size < MAX_IMAGE_BYTES,
        "image is {size} bytes, over {MAX_IMAGE_BYTES}"
    );
    let user = inspect(&image, "{{.Config.User}}");
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user:?} is not numeric"));
    let _: u32 = gid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user:?} group is not numeric"));
    assert_ne!(uid, 0, "the image runs as root");
    assert_eq!(
        inspect(&image, "{{json .Config.Entrypoint}}"),
        r#"["/roomlet"]"#
    );
    assert_eq!(inspect(&image, "{{json .Config.Cmd}}"), r#"["serve"]"#);
    assert!(inspect(&image, "{{json .Config.Healthcheck}}").contains("health"));
    assert!(inspect(&image, "{{json .Config.Volumes}}").contains("/data"));

    // --- run it: read-only root, a named volume for /data, secrets only at
    // run time (API secret in the environment, operator token as a file)
    let api_secret = sentinel("api");
    let operator_token = sentinel("operator");
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    let operator_file = secrets_dir.path().join("operator_token");
    std::fs::write(&operator_file, format!("{operator_token}\n")).expect("write secret");
    set_mode(&operator_file, 0o644);
    let volume = unique("roomlet-test-data");
    check(docker().args(["volume", "create", &volume]));
    cleanup.volumes.push(volume.clone());
    let container = unique("roomlet-test");
    check(
        docker()
            .args(["run", "-d", "--name", &container, "--read-only"])
            .args([
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges:true",
            ])
            .args(["-v", &format!("{volume}:/data")])
            .args(["-p", "127.0.0.1::7700", "-p", "127.0.0.1::7701"])
            .args(["-e", &format!("ROOMLET_API_KEYS={API_KEY}:{api_secret}")])
            .args([
                "-e",
                "ROOMLET_OPERATOR_TOKEN_FILE=/run/secrets/operator_token",
            ])
            .args(["-e", "ROOMLET_REGION=test-region"])
            .arg("-v")
            .arg(format!(
                "{}:/run/secrets/operator_token:ro",
                operator_file.display()
            ))
            .args(["--health-interval", "1s", "--health-start-period", "30s"])
            .arg(&image),
    );
    cleanup.containers.push(container.clone());
    wait_healthy(&container);
    let public = published_port(&container, 7700);
    let internal = published_port(&container, 7701);
    let (status, body) = http_get(public, "/readyz", None).expect("readyz answers");
    assert_eq!((status, body.trim()), (200, "ready"));

    // The operator credential came from the file: the admin API takes it.
    let (status, body) =
        http_get(internal, "/v1/admin/rooms", Some(&operator_token)).expect("admin answers");
    assert_eq!(status, 200, "admin API with the operator token: {body}");
    let (status, _) = http_get(internal, "/v1/admin/rooms", Some("wrong")).expect("admin answers");
    assert!(
        status == 401 || status == 403,
        "a wrong operator token: {status}"
    );
    let (status, metrics) = http_get(internal, "/metrics", None).expect("metrics answer");
    assert_eq!(status, 200);
    assert!(metrics.contains("roomlet_connections"));

    // --- a real WebSocket client through the published port
    let joined = two_peers_signal(
        &format!("ws://127.0.0.1:{public}/v1/ws"),
        &api_secret,
        "docker-room",
    );
    assert_eq!(joined["region"], "test-region");
    eprintln!("two peers joined and exchanged a signal through the container");

    // The node wrote only to /data (the root is read-only): kv.redb is there.
    let tar = run(docker().args(["cp", &format!("{container}:/data"), "-"]));
    assert!(tar.status.success(), "docker cp /data");
    let data_files: Vec<String> = tar_entries(&tar.stdout)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        data_files.iter().any(|p| p.ends_with("kv.redb")),
        "kv.redb in /data: {data_files:?}"
    );
    // `docker diff` lists only the mount points Docker made (/data, and
    // /run/secrets for the bind-mounted secret), never a file roomlet wrote.
    let diff = check(docker().args(["diff", &container]));
    let outside: Vec<&str> = diff
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| {
            !(*p == "/data"
                || p.starts_with("/data/")
                || *p == "/run"
                || *p == "/run/secrets"
                || p.starts_with("/run/secrets/"))
        })
        .collect();
    assert!(outside.is_empty(), "writes outside /data: {outside:?}");

    // --- the dependency list reads back from the binary in the image
    let extracted = secrets_dir.path().join("roomlet-from-image");
    check(
        docker()
            .args(["cp", &format!("{container}:/roomlet")])
            .arg(&extracted),
    );
    assert_eq!(
        std::fs::read(&extracted).expect("extracted"),
        std::fs::read(&build.binary).expect("built"),
        "the image holds the binary that was built"
    );
    assert_audit_info(&extracted);

    // --- no secret in any layer (nor in the image config)
    let saved = secrets_dir.path().join("image.tar");
    check(docker().args(["save", "-o"]).arg(&saved).arg(&image));
    let archive = std::fs::read(&saved).expect("saved image");
    // The positive control proves the scanner reads layer contents.
    let control = "roomlet is listening on";
    let (layers, files, hits) =
        scan_saved_image(&archive, &[&api_secret, &operator_token, control]);
    assert!(layers >= 1, "no layer found in docker save output");
    assert!(
        hits.iter().any(|h| h.starts_with(control)),
        "the scanner did not find the binary's own text: {hits:?}"
    );
    let leaks: Vec<&String> = hits.iter().filter(|h| !h.starts_with(control)).collect();
    assert!(leaks.is_empty(), "secrets in the image: {leaks:?}");
    eprintln!(
        "docker save: {} bytes, {layers} layers, {files} files scanned, no sentinel secret found",
        archive.len()
    );
    // The run-time environment is the container's, not the image's.
    assert!(!inspect(&image, "{{json .Config.Env}}").contains(&api_secret));

    // Logs: plain text (NO_COLOR in the image), and no secret in them.
    let logs = run(docker().args(["logs", &container]));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(logs.contains("roomlet ready"), "logs: {logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in the logs: {logs}");
    assert!(
        !logs.contains(&api_secret) && !logs.contains(&operator_token),
        "a secret in the logs"
    );

    // --- stop: SIGTERM ends it cleanly within the grace period
    let started = Instant::now();
    check(docker().args(["stop", "-t", "20", &container]));
    let code = inspect(&container, "{{.State.ExitCode}}");
    eprintln!(
        "docker stop took {:.1?}, exit code {code}",
        started.elapsed()
    );
    assert_eq!(code, "0", "roomlet exits 0 on SIGTERM");
}

#[cfg(unix)]
pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
