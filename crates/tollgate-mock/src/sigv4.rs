//! AWS Signature Version 4, checked the way AWS checks it: the signature
//! is recomputed (with `aws-sigv4`) from the method, URL, signed headers
//! and body the mock received, and compared with the one sent.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http::{HeaderMap, header};

/// Why a request's SigV4 signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    #[error("no Authorization header")]
    NoAuthorization,
    #[error("not an AWS4-HMAC-SHA256 signature")]
    NotSigV4,
    #[error("the Authorization header has no {0}")]
    MissingField(&'static str),
    #[error("unknown access key {0}")]
    UnknownAccessKey(String),
    #[error("no x-amz-date header")]
    NoDate,
    #[error("x-amz-date {0:?} is not YYYYMMDDTHHMMSSZ")]
    BadDate(String),
    #[error("cannot recompute the signature: {0}")]
    Signing(String),
    #[error("SignatureDoesNotMatch: expected {expected}, got {got}")]
    Mismatch { expected: String, got: String },
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
struct Authorization {
    key_id: String,
    region: String,
    service: String,
    signed_headers: String,
    signature: String,
}

/// Reads the `Authorization` header's credential scope, signed header
/// names and signature.
fn parse_authorization(headers: &HeaderMap) -> Result<Authorization, SigV4Error> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(SigV4Error::NoAuthorization)?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(SigV4Error::NotSigV4)?;
    let field = |name: &'static str| {
        rest.split(", ")
            .find_map(|p| p.strip_prefix(name))
            .map(str::to_owned)
            .ok_or(SigV4Error::MissingField(name))
    };
    let credential = field("Credential=")?;
    let mut scope = credential.split('/').map(str::to_owned);
    let mut next = || scope.next().unwrap_or_default();
    let (key_id, _date, region, service) = (next(), next(), next(), next());
    Ok(Authorization {
        key_id,
        region,
        service,
        signed_headers: field("SignedHeaders=")?,
        signature: field("Signature=")?,
    })
}

/// The request time from `x-amz-date`.
fn request_time(headers: &HeaderMap) -> Result<SystemTime, SigV4Error> {
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(SigV4Error::NoDate)?;
    let time = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| SigV4Error::BadDate(amz_date.to_owned()))?;
    Ok(SystemTime::from(time.and_utc()))
}

/// Recomputes a SigV4 signature as AWS does and compares it with the one
/// in `Authorization`; the error says what did not match.
pub fn verify_sigv4(
    method: &str,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
    access: &str,
    secret: &str,
) -> Result<(), SigV4Error> {
    let auth = parse_authorization(headers)?;
    if auth.key_id != access {
        return Err(SigV4Error::UnknownAccessKey(auth.key_id));
    }
    let time = request_time(headers)?;
    // The signer adds these itself; passing them too would sign them twice.
    let added_by_signer = [
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
    ];
    let pairs: Vec<(&str, &str)> = auth
        .signed_headers
        .split(';')
        .filter(|n| !added_by_signer.contains(n))
        .filter_map(|n| headers.get(n).and_then(|v| v.to_str().ok()).map(|v| (n, v)))
        .collect();
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let identity = Credentials::new(access, secret, token, None, "mock").into();
    let signing = |e: &dyn std::fmt::Display| SigV4Error::Signing(e.to_string());
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(&auth.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| signing(&e))?
        .into();
    let signable = SignableRequest::new(method, url, pairs.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| signing(&e))?;
    let (_, expected) = sign(signable, &params)
        .map_err(|e| signing(&e))?
        .into_parts();
    if expected == auth.signature {
        Ok(())
    } else {
        Err(SigV4Error::Mismatch {
            expected,
            got: auth.signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 test suite, case `get-vanilla`.
    #[test]
    fn sigv4_verifier_accepts_the_aws_get_vanilla_test_vector() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31".parse().unwrap(),
        );
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let url = "https://example.amazonaws.com/";
        verify_sigv4("GET", url, &headers, b"", "AKIDEXAMPLE", secret).unwrap();
        // One byte of the body changed: the signature no longer matches.
        let err = verify_sigv4("GET", url, &headers, b"x", "AKIDEXAMPLE", secret).unwrap_err();
        assert!(matches!(err, SigV4Error::Mismatch { .. }), "{err}");
        let err = verify_sigv4("GET", url, &headers, b"", "AKIDOTHER", secret).unwrap_err();
        assert!(matches!(err, SigV4Error::UnknownAccessKey(_)), "{err}");
    }
}
