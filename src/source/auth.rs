//! SASL OAUTHBEARER tokens that lakestream makes itself: from an OIDC token endpoint
//! (client credentials grant) and for AWS MSK IAM (a SigV4-presigned `kafka-cluster:Connect`
//! URL, as AWS's own signer libraries make it). librdkafka asks for a token when a client
//! starts and again before the last one expires; each client's context answers through
//! [`Auth::token`].

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rdkafka::client::OAuthToken;
use serde::Deserialize;

use crate::config::{ConfigError, Sasl, SecurityPlan};

/// How long a token request may take before it is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an MSK IAM token is valid (AWS's signers use the same).
const MSK_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Why no token could be made. The text goes to librdkafka (which logs it with the
/// broker's answer) as well as to our log, so each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no OAUTHBEARER token source is configured")]
    NoSource,
    #[error("cannot start a runtime for the token request")]
    Runtime(#[source] std::io::Error),
    #[error("the token request panicked")]
    Panicked,
    #[error("kafka.security.oauth.ca_file is not a PEM certificate")]
    BadCa(#[source] reqwest::Error),
    #[error("OIDC token endpoint {endpoint} did not answer")]
    Unanswered {
        endpoint: String,
        #[source]
        cause: reqwest::Error,
    },
    #[error(
        "OIDC token endpoint {endpoint} refused client '{client}' with {status}: {body}; \
         check kafka.security.oauth.client_id and the client secret"
    )]
    Refused {
        endpoint: String,
        client: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("OIDC token endpoint {endpoint} answered without an access_token")]
    NoToken {
        endpoint: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error(
        "AWS_MSK_IAM needs the cluster's region: set kafka.security.aws.region (or AWS_REGION)"
    )]
    NoRegion,
    #[error("no AWS credential provider is configured")]
    NoCredentialProvider,
    #[error(
        "no AWS credentials for AWS_MSK_IAM; the standard chain is read: \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity (EKS), the ECS \
         or EC2 instance role"
    )]
    NoCredentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("cannot sign the MSK IAM token: {0}")]
    Sign(String),
}

/// The token source of a connection (none: librdkafka needs no token).
#[derive(Clone, Default)]
pub struct Auth(Option<Arc<TokenSource>>);

enum TokenSource {
    Oidc(Oidc),
    MskIam { region: Option<String> },
}

struct Oidc {
    endpoint: String,
    client_id: String,
    secret: String,
    scope: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

impl Auth {
    /// The token source `security` asks for; secrets are read here, once.
    pub fn new(security: &SecurityPlan) -> Result<Self, ConfigError> {
        let source = match &security.sasl {
            Some(Sasl::OauthBearer(o)) => {
                let ca_pem = match &o.ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        ConfigError::key(
                            "kafka.security.oauth.ca_file",
                            format!("cannot read {path}: {e}"),
                        )
                    })?),
                    None => None,
                };
                TokenSource::Oidc(Oidc {
                    endpoint: o.token_endpoint.to_string(),
                    client_id: o.client_id.clone(),
                    secret: o.client_secret.read()?,
                    scope: o.scope.clone(),
                    ca_pem,
                })
            }
            Some(Sasl::AwsMskIam { region }) => TokenSource::MskIam {
                region: region.clone(),
            },
            _ => return Ok(Self(None)),
        };
        Ok(Self(Some(Arc::new(source))))
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// A fresh token (called by librdkafka through the client's context, on whatever
    /// thread polls it: the request runs on a thread and runtime of its own).
    pub fn token(&self) -> Result<OAuthToken, Box<dyn Error>> {
        let Some(source) = self.0.clone() else {
            return Err(TokenError::NoSource.into());
        };
        let fetched = std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(TokenError::Runtime)?;
                runtime.block_on(async {
                    match source.as_ref() {
                        TokenSource::Oidc(oidc) => oidc.fetch().await,
                        TokenSource::MskIam { region } => msk_iam_token(region.as_deref()).await,
                    }
                })
            })
            .join()
            .unwrap_or(Err(TokenError::Panicked))
        });
        // librdkafka sees only the message: give it the causes too.
        fetched.map_err(|e| crate::report::Report(&e).to_string().into())
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
}

impl Oidc {
    async fn fetch(&self) -> Result<OAuthToken, TokenError> {
        let endpoint = &self.endpoint;
        let mut client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(pem) = &self.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).map_err(TokenError::BadCa)?;
            client = client.add_root_certificate(ca);
        }
        let unanswered = |cause| TokenError::Unanswered {
            endpoint: endpoint.clone(),
            cause,
        };
        let client = client.build().map_err(unanswered)?;
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let response = client
            .post(endpoint)
            .basic_auth(&self.client_id, Some(&self.secret))
            .form(&form)
            .send()
            .await
            .map_err(unanswered)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unanswered)?;
        if !status.is_success() {
            return Err(TokenError::Refused {
                endpoint: endpoint.clone(),
                client: self.client_id.clone(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            });
        }
        let answer: TokenResponse =
            serde_json::from_slice(&body).map_err(|cause| TokenError::NoToken {
                endpoint: endpoint.clone(),
                cause,
            })?;
        let claims = jwt_claims(&answer.access_token);
        let now = now_millis();
        let lifetime_ms = claims
            .as_ref()
            .and_then(|c| c.exp)
            .map(|exp| (exp * 1000.0) as i64)
            .or_else(|| answer.expires_in.map(|s| now + s as i64 * 1000))
            .unwrap_or(now + 3_600_000);
        Ok(OAuthToken {
            principal_name: claims
                .and_then(|c| c.sub)
                .unwrap_or_else(|| self.client_id.clone()),
            token: answer.access_token,
            lifetime_ms,
        })
    }
}

/// The claims of a JWT's payload, when it is one (opaque tokens are fine too).
fn jwt_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn msk_iam_token(region: Option<&str>) -> Result<OAuthToken, TokenError> {
    use aws_credential_types::provider::ProvideCredentials;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    let shared = loader.load().await;
    let region = shared
        .region()
        .map(|r| r.to_string())
        .ok_or(TokenError::NoRegion)?;
    let credentials = shared
        .credentials_provider()
        .ok_or(TokenError::NoCredentialProvider)?
        .provide_credentials()
        .await
        .map_err(TokenError::NoCredentials)?;
    let (token, expires_ms) = msk_token(&credentials, &region, SystemTime::now())?;
    Ok(OAuthToken {
        token,
        principal_name: "aws-msk-iam".into(),
        lifetime_ms: expires_ms,
    })
}

/// The MSK IAM token: `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect`
/// presigned with SigV4 (service `kafka-cluster`, valid 900 s, signature in the query),
/// a `User-Agent` parameter appended, base64url without padding. Returns the token and
/// its expiry (ms since the epoch).
pub fn msk_token(
    credentials: &aws_credential_types::Credentials,
    region: &str,
    now: SystemTime,
) -> Result<(String, i64), TokenError> {
    use aws_sigv4::http_request::{
        sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    };
    let url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(MSK_TOKEN_LIFETIME);
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| TokenError::Sign(e.to_string()))?
        .into();
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| TokenError::Sign(e.to_string()))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| TokenError::Sign(e.to_string()))?
        .into_parts();
    let mut signed = url::Url::parse(&url).map_err(|e| TokenError::Sign(e.to_string()))?;
    {
        let mut query = signed.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
        query.append_pair(
            "User-Agent",
            concat!("lakestream/", env!("CARGO_PKG_VERSION")),
        );
    }
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed.as_str());
    let signed_at = now
        .duration_since(UNIX_EPOCH)
        .map_err(|e| TokenError::Sign(e.to_string()))?;
    let expires = signed_at + MSK_TOKEN_LIFETIME;
    Ok((token, expires.as_millis() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query parameters of a token, decoded.
    fn params(token: &str) -> Vec<(String, String)> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .expect("base64url without padding");
        let url = url::Url::parse(std::str::from_utf8(&bytes).expect("utf-8")).expect("a URL");
        assert_eq!(url.host_str(), Some("kafka.us-east-1.amazonaws.com"));
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {params:?}"))
    }

    /// Known vectors made by AWS's own signer (aws-msk-iam-sasl-signer-python 1.0.2 on
    /// botocore 1.x, `__construct_auth_token` with its clock fixed at
    /// 2024-03-01T12:00:00Z), with and without a session token.
    #[test]
    fn msk_iam_token_matches_the_aws_signer() {
        let now = UNIX_EPOCH + Duration::from_secs(1_709_294_400);
        for (session, signature) in [
            (
                Some("session/token+value="),
                "9c35509e14720f5ae0b37a1ea37d2a536079ca7f0dff6083a70c73a598f6892b",
            ),
            (
                None,
                "616f9f8546c867dca25d462c8b09c2e77869970022d00a8b72cd41bc9d73d703",
            ),
        ] {
            let credentials = aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                session.map(str::to_string),
                None,
                "test",
            );
            let (token, expires) = msk_token(&credentials, "us-east-1", now).expect("token");
            assert_eq!(expires, 1_709_295_300_000, "900 s after signing");
            let p = params(&token);
            assert_eq!(param(&p, "Action"), "kafka-cluster:Connect");
            assert_eq!(param(&p, "X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
            assert_eq!(
                param(&p, "X-Amz-Credential"),
                "AKIDEXAMPLE/20240301/us-east-1/kafka-cluster/aws4_request"
            );
            assert_eq!(param(&p, "X-Amz-Date"), "20240301T120000Z");
            assert_eq!(param(&p, "X-Amz-Expires"), "900");
            assert_eq!(param(&p, "X-Amz-SignedHeaders"), "host");
            if let Some(s) = session {
                assert_eq!(param(&p, "X-Amz-Security-Token"), s);
            }
            assert_eq!(param(&p, "X-Amz-Signature"), signature);
            assert!(param(&p, "User-Agent").starts_with("lakestream/"));
        }
    }

    #[test]
    fn jwt_claims_give_the_principal_and_expiry() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none"}"#),
            b64.encode(r#"{"sub":"svc-lakestream","exp":1700000000}"#)
        );
        let claims = jwt_claims(&token).expect("claims");
        assert_eq!(claims.sub.as_deref(), Some("svc-lakestream"));
        assert_eq!(claims.exp, Some(1_700_000_000.0));
        assert!(jwt_claims("opaque-token").is_none());
    }
}
