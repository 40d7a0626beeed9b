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
