//! The install as docs/deploy.md describes it: the RBAC rendered for a
//! stack's parameters, the SAM settings that keep a new install in dry run.

use std::process::Command;

fn root() -> std::path::PathBuf {
    headroom_testbed::moto::workspace_root()
}

fn rbac(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("bash").arg(root().join("scripts/rbac.sh")).args(args).output().expect("bash runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A stand-in `aws` on `PATH` for `--stack` and `--cluster`: it answers
/// `describe-stacks` and `describe-cluster` with the text the real CLI
/// prints for the script's `--query ... --output text`, and logs each call.
struct FakeAwsCli {
    dir: tempfile::TempDir,
}

impl FakeAwsCli {
    fn new(stack_parameters: &[(&str, &str)], clusters: &[(&str, &str, &str, &str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let parameters: String = stack_parameters.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
        std::fs::write(dir.path().join("stack.txt"), parameters).unwrap();
        // (name, version, node role ARN, nodeclass tag, nodepool tag); "None" as the CLI prints null.
        for (name, version, role, nodeclass, nodepool) in clusters {
            std::fs::write(
                dir.path().join(format!("cluster-{name}.txt")),
                format!("{version}\t{role}\t{nodeclass}\t{nodepool}\n"),
            )
            .unwrap();
        }
        let script = r#"#!/usr/bin/env bash
here="$(dirname "$0")"
echo "$*" >> "$here/calls.log"
case "$1 $2" in
  "cloudformation describe-stacks") cat "$here/stack.txt" ;;
  "eks describe-cluster")
    while [[ $# -gt 0 && "$1" != --name ]]; do shift; done
    cat "$here/cluster-$2.txt" 2>/dev/null || { echo "ResourceNotFoundException: No cluster found for name: $2." >&2; exit 254; } ;;
  *) echo "unexpected aws $*" >&2; exit 252 ;;
esac
"#;
        let aws = dir.path().join("aws");
        std::fs::write(&aws, script).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&aws, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn rbac(&self, args: &[&str]) -> (bool, String, String) {
        let _ = std::fs::remove_file(self.dir.path().join("calls.log"));
        let path = format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new("bash")
            .arg(root().join("scripts/rbac.sh"))
            .args(args)
            .env("PATH", path)
            .output()
            .expect("bash runs");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default()
    }
}

const AUTO_ROLE: &str = "arn:aws:iam::123456789012:role/AmazonEKSAutoNodeRole";

fn kinds_and_names(stream: &str) -> Vec<(String, String)> {
    headroom_testbed::admission::yaml_documents(stream)
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap().to_owned(), d["metadata"]["name"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn flags_win_over_the_stack_and_every_clusters_names_and_role_are_allowed() {
    let aws = FakeAwsCli::new(
        &[
            ("NodeClassName", "extra-ips"),
            ("NodePoolName", "extra-ips"),
            ("KubernetesGroup", "platform-headroom"),
            ("NodeRole", ""),
            ("ClusterNames", "team-a,team-b"),
            ("DryRun", "true"),
        ],
        &[
            ("team-a", "1.33", AUTO_ROLE, "team-a-ips", "None"),
            ("team-b", "1.31", "arn:aws:iam::123456789012:role/eks/TeamBNodes", "None", "team-b-pool"),
        ],
    );
    // The stack's own names, and each cluster's tags where they override them.
    let (ok, stream, error) = aws.rbac(&["--stack", "headroom-prod"]);
    assert!(ok, "{error}");
    assert_eq!(
        kinds_and_names(&stream),
        [
            ("ClusterRole".into(), "headroom-prod".into()),
            ("ClusterRoleBinding".into(), "headroom-prod".into()),
            ("ValidatingAdmissionPolicy".into(), "headroom-prod".into()),
            ("ValidatingAdmissionPolicyBinding".into(), "headroom-prod".into()),
        ]
    );
    assert!(stream.contains("resourceNames: [\"team-a-ips\", \"extra-ips\"]"), "{stream}");
    assert!(stream.contains("    name: platform-headroom\n"), "{stream}");
    assert!(stream.contains("'platform-headroom' in request.userInfo.groups"), "{stream}");
    assert!(stream.contains("object.spec.role in ['AmazonEKSAutoNodeRole', 'TeamBNodes']"), "{stream}");
    assert!(stream.contains("object.metadata.name in ['extra-ips', 'team-b-pool']"), "{stream}");
    assert!(aws.calls().contains("eks describe-cluster --name team-b"), "{}", aws.calls());

    // Flags given explicitly win over what the stack says.
    let (ok, stream, error) = aws.rbac(&[
        "--stack",
        "headroom-prod",
        "--nodeclass",
        "mine",
        "--nodepool",
        "my-pool",
        "--group",
        "g",
        "--node-role",
        "MyRole",
        "--cluster",
        "team-a",
        "--name",
        "hr",
    ]);
    assert!(ok, "{error}");
    assert!(stream.contains("resourceNames: [\"mine\"]"), "{stream}");
    assert!(stream.contains("object.metadata.name in ['my-pool']"), "{stream}");
    assert!(stream.contains("object.spec.role in ['MyRole']"), "{stream}");
    assert!(stream.contains("'g' in request.userInfo.groups") && stream.contains("  name: hr\n"), "{stream}");
    assert!(!stream.contains("extra-ips") && !stream.contains("team-a-ips"), "{stream}");
    assert!(!aws.calls().contains("--name team-b"), "--cluster replaces ClusterNames: {}", aws.calls());

    // Two stacks on one cluster own different objects.
    let (_, other, _) = aws.rbac(&["--stack", "headroom-dev"]);
    assert!(kinds_and_names(&other).iter().all(|(_, name)| name == "headroom-dev"), "{other}");
    // A cluster that cannot be read stops the rendering.
    let (ok, _, error) = aws.rbac(&["--cluster", "missing"]);
    assert!(!ok && error.contains("cannot read cluster missing"), "{error}");
}

#[test]
fn a_cluster_older_than_1_30_gets_the_rbac_and_a_warning_of_what_is_lost() {
    let aws = FakeAwsCli::new(&[], &[("legacy", "1.29", AUTO_ROLE, "None", "None")]);
    let (ok, stream, warning) = aws.rbac(&["--cluster", "legacy"]);
    assert!(ok, "{warning}");
    let kinds: Vec<String> = kinds_and_names(&stream).into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(kinds, ["ClusterRole", "ClusterRoleBinding"]);
    assert!(warning.contains("older than 1.30 on legacy (1.29)"), "{warning}");
    assert!(warning.contains("may create any NodeClass") && warning.contains("any NodePool"), "{warning}");
    assert!(headroom_testbed::admission::AdmissionPolicy::from_yaml(&stream).unwrap().is_none());
}

/// The names the script accepts are the template's: its patterns, rebuilt
/// from the script's, equal the template's AllowedPattern.
#[test]
fn the_script_validates_names_with_the_templates_patterns() {
    let script = std::fs::read_to_string(root().join("scripts/rbac.sh")).unwrap();
    let constant = |name: &str| -> String {
        let line = script.lines().find(|l| l.starts_with(&format!("readonly {name}="))).expect(name);
        line.split_once('=').unwrap().1.trim_matches('\'').to_owned()
    };
    let template = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    let allowed_pattern = |parameter: &str| -> String {
        let section = template.split(&format!("\n  {parameter}:\n")).nth(1).expect(parameter);
        let line = section.lines().find(|l| l.trim_start().starts_with("AllowedPattern:")).unwrap();
        line.split_once(": ").unwrap().1.trim_matches('"').to_owned()
    };
    let refusing = |reserved: &str, pattern: &str| format!("^(?!{reserved}){}", &pattern[1..]);
    let name = constant("NAME_PATTERN");
    let pools: Vec<String> = constant("RESERVED_NODEPOOLS").split(' ').map(|p| format!("{p}$")).collect();
    assert_eq!(refusing(&format!("{}$", constant("RESERVED_NODECLASSES")), &name), allowed_pattern("NodeClassName"));
    assert_eq!(refusing(&pools.join("|"), &name), allowed_pattern("NodePoolName"));
    assert_eq!(
        refusing(&constant("GROUP_RESERVED_PREFIX"), &constant("GROUP_PATTERN")),
        allowed_pattern("KubernetesGroup")
    );

    for (flag, value) in [
        ("--group", "system:masters"),
        ("--group", "two words"),
        ("--group", "-dash"),
        ("--nodeclass", "default"),
        ("--nodeclass", "Upper"),
        ("--nodepool", "general-purpose"),
        ("--nodepool", "system"),
        ("--node-role", "bad role"),
        ("--name", "a_b"),
    ] {
        let (ok, _, error) = rbac(&[flag, value]);
        assert!(!ok && error.contains(&format!("'{value}'")), "{flag} {value}: {error}");
    }
    for group in ["headroom", "platform:headroom", "Team.A_b-1"] {
        assert!(rbac(&["--group", group]).0, "{group}");
    }
}

#[test]
fn the_rbac_is_rendered_for_the_stacks_nodeclass_and_group() {
    let (ok, defaults, _) = rbac(&[]);
    assert!(ok);
    let checked_in = std::fs::read_to_string(root().join("infra/rbac.yaml")).unwrap();
    assert_eq!(defaults, checked_in, "infra/rbac.yaml is the rendering of the template's defaults");

    let (ok, custom, _) = rbac(&["--nodeclass", "extra-ips", "--group", "platform-headroom"]);
    assert!(ok);
    assert!(custom.contains("resourceNames: [\"extra-ips\"]"), "{custom}");
    assert!(custom.contains("    name: platform-headroom\n"), "{custom}");
    assert!(!custom.contains("resourceNames: [\"headroom\"]"));
    // The verbs are those the code uses: no update, no delete, and watch
    // only on the managed NodeClass, by name.
    for verb in ["\"update\"", "\"delete\""] {
        assert!(!checked_in.contains(verb), "{verb} granted");
    }
    let watch_rules: Vec<&str> = checked_in.split("  - apiGroups:").filter(|rule| rule.contains("\"watch\"")).collect();
    assert_eq!(watch_rules.len(), 1, "{checked_in}");
    assert!(watch_rules[0].contains("resourceNames: [\"headroom\"]"), "{}", watch_rules[0]);

    let (ok, _, error) = rbac(&["--nodeclass", "default"]);
    assert!(!ok && error.contains("not a custom NodeClass"), "{error}");
}

#[test]
fn a_new_install_starts_in_dry_run_and_keeps_its_settings() {
    let template = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    let dry_run = template.split("\n  DryRun:\n").nth(1).expect("the DryRun parameter");
    assert!(dry_run.lines().take(3).any(|l| l.trim() == "Default: \"true\""), "{dry_run}");

    let samconfig = std::fs::read_to_string(root().join("infra/samconfig.example.toml")).unwrap();
    assert!(samconfig.contains("DryRun=true"), "{samconfig}");
    assert!(samconfig.contains("template_file = \"infra/template.yaml\""));
    assert!(samconfig.contains("beta_features = true"));

    let guide = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    assert!(guide.contains("sam build -t infra/template.yaml --beta-features"));
    assert!(guide.contains("cp infra/samconfig.example.toml samconfig.toml"));
    assert!(guide.contains("scripts/rbac.sh --stack"));
    // The sample events a new user sends name no cluster: they work for any.
    for sample in ["manual-dry-run.json", "manual-apply.json"] {
        let text = std::fs::read_to_string(root().join("samplecli-events").join(sample)).unwrap();
        assert!(!text.contains("clusterName"), "{sample}");
    }
}
