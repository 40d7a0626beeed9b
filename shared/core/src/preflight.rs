//! Proving the permissions a plan needs without changing anything. The
//! checks and their verdicts; the calls are in `aws::preflight` and
//! `cluster::auto_mode_api`.
//!
//! A dry run never exercises a write, so a wrong `VpcId`, a NodeClass name
//! the RBAC does not cover or a missing verb would first show when capacity
//! is already low. So a dry run that plans, and the scheduled check once a
//! day even when nothing needs doing (with the plan a forced expansion would
//! make), asks before it would act (docs/design.md, "Preflight"):
//!
//! - EC2 writes that take `DryRun` (CreateSubnet, AssociateRouteTable on an
//!   existing subnet) are sent with it: `DryRunOperation` means allowed,
//!   `UnauthorizedOperation` denied;
//! - AssociateVpcCidrBlock has no `DryRun`, and AssociateRouteTable on a
//!   subnet that does not exist yet cannot be tried: they are asked of IAM
//!   (`iam:SimulatePrincipalPolicy` on the function's own role, with the
//!   condition keys the real call would carry);
//! - Kubernetes creates and patches are sent with `dryRun=All`, so RBAC and
//!   admission answer as for the real write.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a permission was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The EC2 call with `DryRun=true`.
    Ec2DryRun,
    /// `iam:SimulatePrincipalPolicy` on the function's role.
    IamSimulation,
    /// The Kubernetes write with `dryRun=All`.
    KubernetesDryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Allowed,
    Denied,
    /// Neither: the check could not be made (no role to simulate, another error).
    Unverified,
}

/// One permission, as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionCheck {
    /// `ec2:CreateSubnet`, `create nodeclasses`, …
    pub action: String,
    pub resource: String,
    pub method: Method,
    pub verdict: Verdict,
    /// What answered: `DryRunOperation`, `implicitDeny`, `403 Forbidden: …`.
    pub detail: String,
}

impl fmt::Display for PermissionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}: {} ({})", self.action, self.resource, verdict_word(self.verdict), self.detail)
    }
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Allowed => "allowed",
        Verdict::Denied => "denied",
        Verdict::Unverified => "not verified",
    }
}

/// Why a preflight ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Occasion {
    /// A dry run planned a change: its steps were checked.
    DryRunPlan,
    /// The daily check: the steps of the expansion headroom would make if
    /// forced, although nothing needs doing.
    Daily,
    /// A manual dry run found nothing to do: the steps of a forced
    /// expansion were checked all the same, so testing the install proves
    /// its write permissions on a healthy cluster too.
    ManualDryRun,
}

/// Every permission checked, in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preflight {
    pub occasion: Occasion,
    pub checks: Vec<PermissionCheck>,
}

impl Preflight {
    pub fn denied(&self) -> impl Iterator<Item = &PermissionCheck> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Denied)
    }

    /// The reason a run with denied permissions fails, with the fix.
    pub fn failure(&self) -> Option<String> {
        let denied: Vec<String> = self.denied().map(ToString::to_string).collect();
        (!denied.is_empty()).then(|| {
            format!(
                "the preflight found permissions the remediation needs and does not have: {}; fix the function \
                 role (infra/template.yaml: VpcId, ClusterName) or the RBAC (scripts/rbac.sh) before capacity runs low",
                denied.join("; ")
            )
        })
    }
}

/// The verdict of an EC2 call sent with `DryRun=true`, from its error code.
pub fn ec2_dry_run_verdict(code: Option<&str>) -> Verdict {
    match code {
        Some("DryRunOperation") => Verdict::Allowed,
        Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => Verdict::Denied,
        _ => Verdict::Unverified,
    }
}

/// The verdict of `SimulatePrincipalPolicy` for one action and resource.
pub fn simulation_verdict(decision: &str) -> Verdict {
    match decision {
        "allowed" => Verdict::Allowed,
        "explicitDeny" | "implicitDeny" => Verdict::Denied,
        _ => Verdict::Unverified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(verdict: Verdict) -> PermissionCheck {
        PermissionCheck {
            action: "ec2:CreateSubnet".into(),
            resource: "vpc-1".into(),
            method: Method::Ec2DryRun,
            verdict,
            detail: "x".into(),
        }
    }

    #[test]
    fn verdicts_follow_the_answers() {
        assert_eq!(ec2_dry_run_verdict(Some("DryRunOperation")), Verdict::Allowed);
        assert_eq!(ec2_dry_run_verdict(Some("UnauthorizedOperation")), Verdict::Denied);
        assert_eq!(ec2_dry_run_verdict(Some("InvalidSubnet.Range")), Verdict::Unverified);
        assert_eq!(ec2_dry_run_verdict(None), Verdict::Unverified);
        assert_eq!(simulation_verdict("allowed"), Verdict::Allowed);
        assert_eq!(simulation_verdict("implicitDeny"), Verdict::Denied);
        assert_eq!(simulation_verdict("explicitDeny"), Verdict::Denied);
    }

    #[test]
    fn only_a_denial_fails_the_run_and_it_is_named() {
        let ok = Preflight {
            occasion: Occasion::DryRunPlan,
            checks: vec![check(Verdict::Allowed), check(Verdict::Unverified)],
        };
        assert_eq!(ok.failure(), None);
        let bad =
            Preflight { occasion: Occasion::Daily, checks: vec![check(Verdict::Allowed), check(Verdict::Denied)] };
        let why = bad.failure().unwrap();
        assert!(why.contains("ec2:CreateSubnet on vpc-1: denied"), "{why}");
    }
}
