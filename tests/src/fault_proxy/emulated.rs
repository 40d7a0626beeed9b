//! AWS answers the proxy gives itself, where moto would act or not answer:
//!
//! - an EC2 call with `DryRun=true`: moto ignores the flag for CreateSubnet
//!   and AssociateRouteTable and makes the change; EC2 answers `412
//!   DryRunOperation` and changes nothing. The proxy answers as EC2 does,
//!   unless a fault rule answers first (`UnauthorizedOperation`, say);
//! - IAM `SimulatePrincipalPolicy`, which moto lacks: every action is
//!   `allowed` but those named with [`FaultProxyHandle::deny_in_simulation`];
//! - STS `GetCallerIdentity`: moto answers `arn:aws:sts::…:user/moto`, a
//!   shape AWS never gives (an IAM user is `arn:aws:iam::…:user/…`); the
//!   proxy answers as AWS does for a role session, [`CALLER_ARN`].
//!
//! [`FaultProxyHandle::deny_in_simulation`]: super::FaultProxyHandle::deny_in_simulation

use std::collections::BTreeSet;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::identify::form_value;
use super::protocol::{ec2_error_response, xml_escape};

/// Whether an EC2 query asks for a dry run.
pub(super) fn is_dry_run(form: &str) -> bool {
    form_value(form, "DryRun").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub(super) fn dry_run_response(seq: u64) -> Response<Full<Bytes>> {
    ec2_error_response(
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
        "Request would have succeeded, but DryRun flag is set.",
        &format!("00000000-0000-4000-8000-{seq:012x}"),
    )
}

/// Who the testbed's credentials are, as STS names a role session.
pub(super) const CALLER_ARN: &str = "arn:aws:sts::123456789012:assumed-role/headroom-operator/testbed";

pub(super) fn get_caller_identity(seq: u64) -> Response<Full<Bytes>> {
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <GetCallerIdentityResult><Arn>{CALLER_ARN}</Arn><UserId>AROA3XFRBF535PLBIFPI4:testbed</UserId>\
         <Account>123456789012</Account></GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>00000000-0000-4000-8000-{seq:012x}</RequestId></ResponseMetadata>\
         </GetCallerIdentityResponse>"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

/// The values of a query list parameter: `Name.member.1`, `Name.member.2`, …
fn members(form: &str, name: &str) -> Vec<String> {
    (1..).map_while(|i| form_value(form, &format!("{name}.member.{i}"))).collect()
}

/// `SimulatePrincipalPolicy`: one result per action, per resource.
pub(super) fn simulate_principal_policy(form: &str, denied: &BTreeSet<String>, seq: u64) -> Response<Full<Bytes>> {
    let actions = members(form, "ActionNames");
    let mut resources = members(form, "ResourceArns");
    if resources.is_empty() {
        resources.push("*".into());
    }
    let mut results = String::new();
    for action in &actions {
        let decision = if denied.contains(action) { "implicitDeny" } else { "allowed" };
        let per_resource: String = resources
            .iter()
            .map(|resource| {
                format!(
                    "<member><EvalResourceName>{}</EvalResourceName><EvalResourceDecision>{decision}</EvalResourceDecision>\
                     <MatchedStatements/><MissingContextValues/></member>",
                    xml_escape(resource)
                )
            })
            .collect();
        results.push_str(&format!(
            "<member><EvalActionName>{}</EvalActionName><EvalResourceName>{}</EvalResourceName>\
             <EvalDecision>{decision}</EvalDecision><MatchedStatements/><MissingContextValues/>\
             <ResourceSpecificResults>{per_resource}</ResourceSpecificResults></member>",
            xml_escape(action),
            xml_escape(&resources[0])
        ));
    }
    let body = format!(
        "<SimulatePrincipalPolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
         <SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>{results}</EvaluationResults>\
         </SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>00000000-0000-4000-8000-{seq:012x}</RequestId>\
         </ResponseMetadata></SimulatePrincipalPolicyResponse>"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_are_read_in_order() {
        let form = "Action=SimulatePrincipalPolicy&ActionNames.member.1=ec2%3AA&ActionNames.member.2=ec2%3AB&ResourceArns.member.1=arn";
        assert_eq!(members(form, "ActionNames"), ["ec2:A", "ec2:B"]);
        assert_eq!(members(form, "ResourceArns"), ["arn"]);
        assert!(is_dry_run("Action=CreateSubnet&DryRun=true"));
        assert!(!is_dry_run("Action=CreateSubnet"));
    }
}
