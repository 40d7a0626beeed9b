//! The install docs as a new user follows them literally: what must hold in
//! every page, beyond what scripts/check-docs.sh checks command by command
//! in docs/getting-started.md.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    headroom_testbed::moto::workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every page a user reads commands from, and the CLI's own help text.
fn pages() -> Vec<(String, String)> {
    let mut paths = vec!["README.md".to_string(), "samplecli-events/README.md".to_string()];
    for dir in ["docs", "infra", "cli/src"] {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(root().join(dir)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        entries.sort();
        for path in entries {
            paths.push(path.strip_prefix(root()).unwrap().to_string_lossy().into_owned());
        }
    }
    paths.into_iter().map(|p| (read(&p), p)).map(|(text, p)| (p, text)).collect()
}

/// The commands of a page, with backslash continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

#[test]
fn every_aws_lambda_invoke_waits_for_the_report() {
    // The AWS CLI reads for 60 s, then retries the invocation and shows no
    // report: an apply outlasts that.
    let mut missing = Vec::new();
    for (path, text) in pages() {
        for line in logical_lines(&text) {
            if line.contains("aws lambda invoke") && !line.contains("--cli-read-timeout 0") {
                missing.push(format!("{path}: {}", line.trim()));
            }
        }
    }
    assert!(missing.is_empty(), "aws lambda invoke without --cli-read-timeout 0:\n{}", missing.join("\n"));
}

#[test]
fn tools_are_installed_into_a_virtualenv_and_nothing_is_exported_for_the_build() {
    // Current Debian, Ubuntu and Homebrew Python refuse a system-wide pip.
    let mut system_pip = Vec::new();
    for (path, text) in pages() {
        for line in text.lines() {
            let bare_pip = line.contains("pip install") && !line.contains("venv") && !line.contains("-m pip");
            if bare_pip && !path.ends_with(".rs") {
                system_pip.push(format!("{path}: {}", line.trim()));
            }
            // BENCHMARKS.md records how its figures were measured, by hand.
            let by_hand = line.contains("export AWS_LC_SYS_NO_JITTER_ENTROPY")
                || line.contains("AWS_LC_SYS_NO_JITTER_ENTROPY=1 cargo");
            assert!(
                !by_hand || path.ends_with("BENCHMARKS.md"),
                "{path} still exports the build variable by hand: {line}"
            );
        }
    }
    assert!(system_pip.is_empty(), "pip outside a virtualenv:\n{}", system_pip.join("\n"));

    // So `sam build`, `cargo build` and scripts/release.sh all get it.
    let config = read(".cargo/config.toml");
    let env = config.split("[env]").nth(1).expect("an [env] table in .cargo/config.toml");
    let env = env.split("\n[").next().unwrap();
    assert!(env.lines().any(|l| l.replace(' ', "") == "AWS_LC_SYS_NO_JITTER_ENTROPY=\"1\""), "{env}");
}

#[test]
fn a_new_install_tells_someone() {
    let samconfig = read("infra/samconfig.example.toml");
    let overrides = samconfig.lines().find(|l| l.starts_with("parameter_overrides")).expect("parameter_overrides");
    assert!(overrides.contains("NotificationEmail="), "{overrides}");
    assert!(overrides.contains("DryRun=true"), "{overrides}");

    let guide = read("docs/getting-started.md");
    let deploy = logical_lines(&guide).into_iter().find(|l| l.contains("aws cloudformation deploy")).unwrap();
    for parameter in ["DryRun=true", "NotificationEmail=", "ClusterNames="] {
        assert!(deploy.contains(parameter), "{parameter} missing from the first deploy: {deploy}");
    }
}

#[test]
fn the_uninstall_removes_the_rbac_before_the_stack() {
    // The RBAC is rendered from the stack (--stack) or deleted as applied:
    // either way it goes first, while the stack can still be read.
    for (path, heading) in [("docs/getting-started.md", "## Step 9: uninstall\n"), ("docs/deploy.md", "## Uninstall\n")]
    {
        let text = read(path);
        let uninstall = &text[text.find(heading).unwrap_or_else(|| panic!("{path}: no {heading}"))..];
        let rbac = uninstall.find("kubectl delete").unwrap_or_else(|| panic!("{path}: no kubectl delete"));
        let stack = ["aws cloudformation delete-stack", "sam delete"]
            .iter()
            .filter_map(|c| uninstall.find(c))
            .min()
            .unwrap_or_else(|| panic!("{path}: no stack deletion"));
        assert!(rbac < stack, "{path}: the stack is deleted before the RBAC");
        assert!(uninstall.contains("delete-alarms"), "{path}: the capacity alarms the functions created stay");
        assert!(uninstall.contains("delete-log-group"), "{path}: log groups may stay");
    }
}

#[test]
fn getting_started_is_one_page() {
    let guide = read("docs/getting-started.md");
    assert!(guide.lines().count() <= 300, "{} lines", guide.lines().count());
    assert!(Path::new(&root().join("scripts/check-docs.sh")).exists());
    assert!(read("scripts/test.sh").contains("scripts/check-docs.sh"), "the docs check runs in CI");
}
