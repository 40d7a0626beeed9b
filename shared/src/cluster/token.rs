//! EKS bearer tokens, made in process.
//!
//! This is the algorithm of kubernetes-sigs/aws-iam-authenticator (and of
//! `aws eks get-token`): an `sts:GetCallerIdentity` request is SigV4-presigned
//! for service `sts`, with the header `x-k8s-aws-id: <cluster name>` among the
//! signed headers, and the token is
//! `"k8s-aws-v1." + base64url_nopad(presigned URL)`. The API server's
//! authenticator replays the URL against STS to learn who signed it, so the
//! token never leaves the caller's credentials in clear and the signing needs
//! no network I/O.
//!
//! [`generate_token`] is pure: the time is an input, so it is tested offline
//! against an independent SigV4 computation and a vector made by botocore.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::{ClusterError, ClusterResult as Result};

/// Every EKS token starts with this.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// The signed header that binds a token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";

/// `X-Amz-Expires` of the presigned URL. STS ignores it (a presigned
/// GetCallerIdentity URL is valid 15 minutes after `X-Amz-Date`), but the
/// authenticator requires 0..=900 and every client sends 60.
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);

/// How long the API server accepts a token after signing.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// How long headroom treats a token as valid: one minute less than
/// [`TOKEN_VALIDITY`], like aws-iam-authenticator, for clock skew and
/// requests in flight.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// The authenticator rejects longer tokens.
pub const MAX_TOKEN_LEN: usize = 4096;

/// `operation` of the errors raised here.
const OPERATION: &str = "PresignGetCallerIdentity";

/// A bearer token for one EKS cluster.
///
/// `Debug` redacts the token: it is a credential for as long as it is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct EksToken {
    /// `k8s-aws-v1.…`, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Signing time + [`TOKEN_LIFETIME`]: use a new token from then on.
    pub expires_at: SystemTime,
}

impl fmt::Debug for EksToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EksToken")
            .field("token", &format_args!("{TOKEN_PREFIX}<redacted>"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The regional STS host the token is presigned for.
///
/// Regional, not `sts.amazonaws.com`, as aws-iam-authenticator does with a
/// region: the global endpoint is not reachable from VPCs that only have an
/// STS interface endpoint. China regions live under `amazonaws.com.cn`.
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

/// Makes the bearer token for `cluster`, signed with `credentials` for the
/// STS endpoint of `region` at time `now`.
///
/// Pure: no I/O, no clock. The session token of temporary credentials (Lambda
/// credentials always have one) is part of the signed query.
pub fn generate_token(cluster: &str, region: &str, credentials: &Credentials, now: SystemTime) -> Result<EksToken> {
    validate_cluster_name(cluster)?;
    validate_region(region)?;

    let host = sts_host(region);
    let base_url = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");

    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);

    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| signing_error(format!("invalid signing parameters: {e}")))?
        .into();

    let request = SignableRequest::new(
        "GET",
        base_url.as_str(),
        std::iter::once((CLUSTER_ID_HEADER, cluster)),
        // STS checks the presigned URL against the hash of the empty body
        // (not UNSIGNED-PAYLOAD, which only S3 accepts).
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| signing_error(format!("cannot build the request to sign: {e}")))?;

    let (instructions, _signature) =
        sign(request, &params).map_err(|e| signing_error(format!("SigV4 presigning failed: {e}")))?.into_parts();
    let (_headers, query) = instructions.into_parts();

    // Same parameter order as botocore (`aws eks get-token`): operation
    // parameters, then the signing parameters, the signature last. STS does
    // not care about the order; keeping it makes the tests' vector exact.
    let mut url = base_url;
    let mut signature = None;
    for (name, value) in &query {
        if *name == "X-Amz-Signature" {
            signature = Some(value);
            continue;
        }
        push_param(&mut url, name, value);
    }
    let signature = signature.ok_or_else(|| signing_error("the signer returned no X-Amz-Signature".into()))?;
    push_param(&mut url, "X-Amz-Signature", signature);

    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(url.as_bytes()));
    if token.len() > MAX_TOKEN_LEN {
        return Err(signing_error(format!(
            "the token is {} bytes, more than the {MAX_TOKEN_LEN} the EKS authenticator accepts; \
             the session token of these credentials is unusually long",
            token.len()
        )));
    }
    Ok(EksToken { token, expires_at: now + TOKEN_LIFETIME })
}

fn signing_error(message: String) -> ClusterError {
    ClusterError::Credentials { operation: OPERATION, message, retryable: false }
}

/// EKS cluster names: 1 to 100 characters, alphanumerics, `-` and `_`,
/// starting with an alphanumeric.
fn validate_cluster_name(cluster: &str) -> Result<()> {
    let valid = (1..=100).contains(&cluster.len())
        && cluster.as_bytes()[0].is_ascii_alphanumeric()
        && cluster.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(signing_error(format!(
            "{cluster:?} is not a valid EKS cluster name (1-100 letters, digits, '-' or '_', \
             starting with a letter or digit)"
        )))
    }
}

fn validate_region(region: &str) -> Result<()> {
    let valid = !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(signing_error(format!("{region:?} is not an AWS region name; set AWS_REGION (e.g. eu-west-1)")))
    }
}

/// Appends `&name=value`, both encoded as SigV4 canonical query components
/// (everything but `A-Z a-z 0-9 - _ . ~` percent-encoded, upper-case hex).
fn push_param(url: &mut String, name: &str, value: &str) {
    url.push('&');
    percent_encode(url, name);
    url.push('=');
    percent_encode(url, value);
}

fn percent_encode(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    // Has '/', '+' and '=', which must be percent-encoded.
    const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLE/token+with=special";
    const CLUSTER: &str = "headroom-test";
    const REGION: &str = "eu-west-1";

    /// 2024-01-15T12:34:56Z
    fn fixed_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_705_322_096)
    }

    fn creds(session_token: Option<&str>) -> Credentials {
        Credentials::new(AKID, SECRET, session_token.map(str::to_owned), None, "test")
    }

    /// Decodes a token into its URL.
    fn url_of(token: &EksToken) -> String {
        let b64 = token.token.strip_prefix(TOKEN_PREFIX).expect("token prefix");
        assert!(!b64.contains('='), "base64 must be unpadded");
        assert!(!b64.contains('+') && !b64.contains('/'), "base64 must be URL-safe");
        String::from_utf8(URL_SAFE_NO_PAD.decode(b64).expect("base64url")).expect("UTF-8 URL")
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                assert_ne!(bytes[i], b'+', "'+' must be encoded as %2B");
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Splits the URL into (scheme+host, path, decoded query parameters).
    fn parse(url: &str) -> (String, String, BTreeMap<String, String>) {
        let uri: http::Uri = url.parse().expect("valid URI");
        assert_eq!(uri.scheme_str(), Some("https"));
        let mut params = BTreeMap::new();
        for pair in uri.query().unwrap_or_default().split('&') {
            let (k, v) = pair.split_once('=').expect("key=value");
            let previous = params.insert(percent_decode(k), percent_decode(v));
            assert!(previous.is_none(), "duplicate parameter {k}");
        }
        (uri.host().unwrap().to_owned(), uri.path().to_owned(), params)
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn canonical_encode(s: &str) -> String {
        let mut out = String::new();
        percent_encode(&mut out, s);
        out
    }

    /// SigV4 written out from the AWS specification, step by step, for a
    /// presigned GET to `https://{host}/` with headers `host` and
    /// `x-k8s-aws-id`, independently of aws-sigv4.
    fn expected_signature(host: &str, cluster: &str, params: &BTreeMap<String, String>) -> String {
        // 1. Canonical request. Query: every parameter but the signature,
        //    encoded, sorted by encoded name.
        let mut query: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k.as_str() != "X-Amz-Signature")
            .map(|(k, v)| (canonical_encode(k), canonical_encode(v)))
            .collect();
        query.sort();
        let canonical_query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let empty_body_hash = hex(&Sha256::digest(b""));
        let canonical_request = format!(
            "GET\n/\n{canonical_query}\nhost:{host}\nx-k8s-aws-id:{cluster}\n\nhost;x-k8s-aws-id\n{empty_body_hash}"
        );

        // 2. String to sign.
        let date_time = &params["X-Amz-Date"];
        let date = &date_time[..8];
        let region = params["X-Amz-Credential"].split('/').nth(2).unwrap().to_owned();
        let scope = format!("{date}/{region}/sts/aws4_request");
        let string_to_sign =
            format!("AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}", hex(&Sha256::digest(canonical_request.as_bytes())));

        // 3. Signing key and signature.
        let k_date = hmac(format!("AWS4{SECRET}").as_bytes(), date);
        let k_region = hmac(&k_date, &region);
        let k_service = hmac(&k_region, "sts");
        let k_signing = hmac(&k_service, "aws4_request");
        hex(&hmac(&k_signing, &string_to_sign))
    }

    #[test]
    fn token_has_the_prefix_and_decodes_to_a_presigned_sts_url() {
        let token = generate_token(CLUSTER, REGION, &creds(Some(SESSION_TOKEN)), fixed_time()).unwrap();
        assert!(token.token.starts_with("k8s-aws-v1."));

        let (host, path, params) = parse(&url_of(&token));
        assert_eq!(host, "sts.eu-west-1.amazonaws.com");
        assert_eq!(path, "/");
        assert_eq!(params["Action"], "GetCallerIdentity");
        assert_eq!(params["Version"], "2011-06-15");
        assert_eq!(params["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(params["X-Amz-Credential"], "AKIAIOSFODNN7EXAMPLE/20240115/eu-west-1/sts/aws4_request");
        assert_eq!(params["X-Amz-Date"], "20240115T123456Z");
        assert_eq!(params["X-Amz-Expires"], "60");
        assert_eq!(params["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(params["X-Amz-Security-Token"], SESSION_TOKEN);
        let signature = &params["X-Amz-Signature"];
        assert_eq!(signature.len(), 64);
        assert!(signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

        // Only parameters the authenticator's allow-list accepts.
        let allowed = [
            "Action",
            "Version",
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-Security-Token",
            "X-Amz-Signature",
            "X-Amz-SignedHeaders",
        ];
        assert!(params.keys().all(|k| allowed.contains(&k.as_str())), "{params:?}");
    }

    #[test]
    fn signature_matches_an_independent_sigv4_computation() {
        for session_token in [Some(SESSION_TOKEN), None] {
            let token = generate_token(CLUSTER, REGION, &creds(session_token), fixed_time()).unwrap();
            let (host, _, params) = parse(&url_of(&token));
            assert_eq!(params.get("X-Amz-Security-Token").map(String::as_str), session_token);
            assert_eq!(
                params["X-Amz-Signature"],
                expected_signature(&host, CLUSTER, &params),
                "session token: {session_token:?}"
            );
        }
    }

    /// Made with botocore 1.35 the way `aws eks get-token` does it
    /// (`generate_presigned_url('get_caller_identity', ExpiresIn=60,
    /// HttpMethod='GET')` with `x-k8s-aws-id` added before signing), with the
    /// clock frozen at 2024-01-15T12:34:56Z and the credentials above.
    #[test]
    fn token_is_byte_identical_to_aws_eks_get_token() {
        let with_session = generate_token(CLUSTER, REGION, &creds(Some(SESSION_TOKEN)), fixed_time()).unwrap();
        assert_eq!(
            url_of(&with_session),
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240115%2Feu-west-1%2Fsts%2Faws4_request\
             &X-Amz-Date=20240115T123456Z&X-Amz-Expires=60\
             &X-Amz-SignedHeaders=host%3Bx-k8s-aws-id\
             &X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE%2Ftoken%2Bwith%3Dspecial\
             &X-Amz-Signature=287106bcbefb34e7180a9d64a83285fb16b2dde304e7b459513efefe2762be9f"
        );
        assert_eq!(
            with_session.token,
            "k8s-aws-v1.aHR0cHM6Ly9zdHMuZXUtd2VzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eSZWZXJzaW9uPTIwMTEtMDYtMTUmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD1BS0lBSU9TRk9ETk43RVhBTVBMRSUyRjIwMjQwMTE1JTJGZXUtd2VzdC0xJTJGc3RzJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNDAxMTVUMTIzNDU2WiZYLUFtei1FeHBpcmVzPTYwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCUzQngtazhzLWF3cy1pZCZYLUFtei1TZWN1cml0eS1Ub2tlbj1Gd29HWlhJdllYZHpFWEFNUExFJTJGdG9rZW4lMkJ3aXRoJTNEc3BlY2lhbCZYLUFtei1TaWduYXR1cmU9Mjg3MTA2YmNiZWZiMzRlNzE4MGE5ZDY0YTgzMjg1ZmIxNmIyZGRlMzA0ZTdiNDU5NTEzZWZlZmUyNzYyYmU5Zg"
        );

        let (_, _, params) = parse(&url_of(&generate_token(CLUSTER, REGION, &creds(None), fixed_time()).unwrap()));
        assert_eq!(params["X-Amz-Signature"], "cff98e559a81a64b01958f48ae7d4d4b0da5ebcba408dd898e67f0d863f106fe");
        let (_, _, params) =
            parse(&url_of(&generate_token("other-cluster", REGION, &creds(None), fixed_time()).unwrap()));
        assert_eq!(params["X-Amz-Signature"], "075563a0605e88a8d399967b51c5e04064eadcde3306f649b3babd0877fde952");
    }

    #[test]
    fn the_cluster_name_is_signed() {
        let sig = |cluster: &str| {
            let token = generate_token(cluster, REGION, &creds(Some(SESSION_TOKEN)), fixed_time()).unwrap();
            parse(&url_of(&token)).2["X-Amz-Signature"].clone()
        };
        assert_eq!(sig(CLUSTER), sig(CLUSTER), "reproducible for fixed inputs");
        assert_ne!(sig(CLUSTER), sig("another-cluster"));
    }

    #[test]
    fn the_time_is_the_injected_time_and_the_token_expires_14_minutes_later() {
        let now = fixed_time() + Duration::from_millis(999);
        let token = generate_token(CLUSTER, REGION, &creds(None), now).unwrap();
        assert_eq!(token.expires_at, now + Duration::from_secs(14 * 60));
        assert_eq!(parse(&url_of(&token)).2["X-Amz-Date"], "20240115T123456Z");

        let later = generate_token(CLUSTER, REGION, &creds(None), now + Duration::from_secs(86_400)).unwrap();
        let (_, _, params) = parse(&url_of(&later));
        assert_eq!(params["X-Amz-Date"], "20240116T123456Z");
        assert_eq!(params["X-Amz-Credential"], "AKIAIOSFODNN7EXAMPLE/20240116/eu-west-1/sts/aws4_request");
    }

    #[test]
    fn china_regions_use_the_cn_sts_host() {
        assert_eq!(sts_host("us-east-1"), "sts.us-east-1.amazonaws.com");
        assert_eq!(sts_host("us-gov-west-1"), "sts.us-gov-west-1.amazonaws.com");
        let token = generate_token(CLUSTER, "cn-north-1", &creds(None), fixed_time()).unwrap();
        assert_eq!(parse(&url_of(&token)).0, "sts.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn a_realistic_lambda_session_token_fits_the_size_limit() {
        // Lambda session tokens are around 1,000-1,300 characters.
        let session_token = "IQoJb3JpZ2luX2VjE".repeat(80);
        let token = generate_token(CLUSTER, REGION, &creds(Some(&session_token)), fixed_time()).unwrap();
        assert!(token.token.len() <= MAX_TOKEN_LEN, "{}", token.token.len());

        let too_long = "A".repeat(3_000);
        let err = generate_token(CLUSTER, REGION, &creds(Some(&too_long)), fixed_time()).unwrap_err();
        assert!(matches!(err, ClusterError::Credentials { retryable: false, .. }), "{err}");
        assert!(err.to_string().contains("4096"), "{err}");
    }

    #[test]
    fn invalid_names_are_refused_without_signing() {
        for cluster in ["", "-starts-with-dash", "has space", "new\nline", &"a".repeat(101)] {
            let err = generate_token(cluster, REGION, &creds(None), fixed_time()).unwrap_err();
            assert!(matches!(err, ClusterError::Credentials { retryable: false, .. }), "{cluster:?}: {err}");
        }
        assert!(generate_token(&"a".repeat(100), REGION, &creds(None), fixed_time()).is_ok());
        assert!(generate_token("my_cluster-1", REGION, &creds(None), fixed_time()).is_ok());
        for region in ["", "EU-WEST-1", "eu-west-1/x", "eu west"] {
            let err = generate_token(CLUSTER, region, &creds(None), fixed_time()).unwrap_err();
            assert!(err.to_string().contains("AWS_REGION"), "{region:?}: {err}");
        }
    }

    #[test]
    fn debug_redacts_the_token() {
        let token = generate_token(CLUSTER, REGION, &creds(Some(SESSION_TOKEN)), fixed_time()).unwrap();
        let debug = format!("{token:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains(&token.token[TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + 8]), "{debug}");
        assert!(debug.contains("expires_at"), "{debug}");
    }
}
