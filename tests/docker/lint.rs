//! The deployment files lint (hadolint, Compose, Kubernetes schemas, kustomize).

use super::*;

#[test]
fn deploy_files_lint() {
    let root = workspace();
    let out = run(Command::new("bash")
        .arg(root.join("docker/lint.sh"))
        .current_dir(&root));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => eprintln!("{text}"),
        Some(3) => skip(&format!("docker/lint.sh cannot run: {}", text.trim())),
        _ => panic!("docker/lint.sh failed:\n{text}"),
    }
}
