//! Which kind of sidecar the webhook injects. A native sidecar (an init container with
//! `restartPolicy: Always`) only runs where the API server knows the field: Kubernetes 1.29 and
//! later (`SidecarContainers`, on by default from 1.29). An older server drops the field and then
//! refuses the probes of what became a plain init container, so every injected pod is
//! rejected. The choice is made once, at start, from the API server's `/version`:
//!
//! - `auto` (default): native from 1.29, a regular container before;
//! - `native`: refused at start on an older server (instead of breaking every pod);
//! - `container`: always works, so the version is not read.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::version::Info;

use super::{SidecarMode, WebhookError};

/// The first Kubernetes minor version (of major 1) that runs native sidecars by default.
pub const NATIVE_SIDECARS_SINCE: (u32, u32) = (1, 29);

/// How long start-up keeps asking an unreachable or failing `/version` before giving up.
pub const DEFAULT_VERSION_DEADLINE: Duration = Duration::from_secs(30);

/// `FISO_SIDECAR_MODE`: what the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SidecarModeSetting {
    /// Follow the API server.
    #[default]
    Auto,
    /// Always a native sidecar; refused at start on a server older than 1.29.
    Native,
    /// Always a regular container.
    Container,
}

impl SidecarModeSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarModeSetting::Auto => "auto",
            SidecarModeSetting::Native => "native",
            SidecarModeSetting::Container => "container",
        }
    }
}

impl std::str::FromStr for SidecarModeSetting {
    type Err = WebhookError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(SidecarModeSetting::Auto),
            "native" => Ok(SidecarModeSetting::Native),
            "container" => Ok(SidecarModeSetting::Container),
            other => Err(WebhookError::Config(format!(
                "FISO_SIDECAR_MODE must be `auto`, `native` or `container`, not `{other}`"
            ))),
        }
    }
}

/// The Kubernetes version an API server reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    /// As reported (`v1.29.3-eks-adc7111`), for messages.
    pub git_version: String,
}

impl ServerVersion {
    /// Reads `major` / `minor`, which providers decorate (`"20+"` on GKE and EKS), falling back
    /// to `gitVersion` (`v1.29.0-eks-...`) when they are empty or not numbers.
    pub fn parse(info: &Info) -> Result<ServerVersion, WebhookError> {
        let leading_number = |s: &str| -> Option<u32> {
            let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        let from_fields = leading_number(&info.major).zip(leading_number(&info.minor));
        let from_git_version = || {
            let v = info.git_version.trim();
            let mut parts = v.strip_prefix('v').unwrap_or(v).split('.');
            let major = leading_number(parts.next()?)?;
            let minor = leading_number(parts.next()?)?;
            Some((major, minor))
        };
        let (major, minor) = from_fields.or_else(from_git_version).ok_or_else(|| {
            WebhookError::SidecarMode(format!(
                "cannot tell the Kubernetes version from the API server's /version \
                 (major {:?}, minor {:?}, gitVersion {:?}); set FISO_SIDECAR_MODE to `native` \
                 (Kubernetes >= 1.29) or `container`",
                info.major, info.minor, info.git_version
            ))
        })?;
        Ok(ServerVersion {
            major,
            minor,
            git_version: info.git_version.clone(),
        })
    }

    pub fn runs_native_sidecars(&self) -> bool {
        (self.major, self.minor) >= NATIVE_SIDECARS_SINCE
    }

    fn describe(&self) -> String {
        if self.git_version.is_empty() {
            format!("{}.{}", self.major, self.minor)
        } else {
            self.git_version.clone()
        }
    }
}

/// The mode to inject for `setting` on a server of `version` (`None`: no API access).
pub fn decide(
    setting: SidecarModeSetting,
    version: Option<&ServerVersion>,
) -> Result<SidecarMode, WebhookError> {
    match (setting, version) {
        (SidecarModeSetting::Container, _) => Ok(SidecarMode::Container),
        (SidecarModeSetting::Native, Some(v)) if !v.runs_native_sidecars() => {
            Err(WebhookError::SidecarMode(format!(
                "FISO_SIDECAR_MODE is `native`, but the API server is Kubernetes {} and native \
                 sidecars need 1.29 or later: every injected pod would be rejected. Set \
                 FISO_SIDECAR_MODE to `auto` (the chart's sidecar.mode) or `container`",
                v.describe()
            )))
        }
        // Forced without API access: nothing to check against; the user said so.
        (SidecarModeSetting::Native, _) => Ok(SidecarMode::Native),
        (SidecarModeSetting::Auto, Some(v)) if v.runs_native_sidecars() => Ok(SidecarMode::Native),
        (SidecarModeSetting::Auto, Some(_)) => Ok(SidecarMode::Container),
        (SidecarModeSetting::Auto, None) => Err(WebhookError::SidecarMode(
            "FISO_SIDECAR_MODE is `auto`, which follows the API server's version, but the \
             webhook has no Kubernetes API access; set FISO_SIDECAR_MODE to `native` \
             (Kubernetes >= 1.29) or `container`"
                .into(),
        )),
    }
}

/// Reads the API server's version when `setting` depends on it and decides (see [`decide`]).
///
/// A failing `/version` is retried with backoff for up to `deadline`, then start-up fails: a
/// guess would break every pod on one kind of server or the other.
pub async fn resolve(
    setting: SidecarModeSetting,
    client: Option<&kube::Client>,
    deadline: Duration,
) -> Result<(SidecarMode, Option<ServerVersion>), WebhookError> {
    let version = match (setting, client) {
        (SidecarModeSetting::Container, _) | (_, None) => None,
        (_, Some(client)) => Some(server_version(client, deadline).await?),
    };
    Ok((decide(setting, version.as_ref())?, version))
}

async fn server_version(
    client: &kube::Client,
    deadline: Duration,
) -> Result<ServerVersion, WebhookError> {
    let give_up = tokio::time::Instant::now() + deadline;
    let attempt_timeout = Duration::from_secs(5).min(deadline);
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = tokio::time::timeout(attempt_timeout, client.apiserver_version()).await;
        let error = match attempt {
            Ok(Ok(info)) => return ServerVersion::parse(&info),
            Ok(Err(e)) => e,
            Err(_) => kube::Error::Service("GET /version timed out".into()),
        };
        let now = tokio::time::Instant::now();
        if now + backoff > give_up {
            return Err(WebhookError::Kube {
                action: format!(
                    "reading the API server's /version (FISO_SIDECAR_MODE follows it) failed \
                     for {deadline:?}"
                ),
                source: error,
            });
        }
        tracing::warn!(
            error = %error,
            retry_in = ?backoff,
            "cannot read the API server's /version to choose the sidecar mode; retrying"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_api, status_failure};
    use http::StatusCode;
    use serde_json::json;

    fn info(major: &str, minor: &str, git_version: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            git_version: git_version.into(),
            ..Info::default()
        }
    }

    fn version(major: u32, minor: u32) -> ServerVersion {
        ServerVersion {
            major,
            minor,
            git_version: format!("v{major}.{minor}.0"),
        }
    }

    #[test]
    fn settings_parse_case_insensitively_and_default_to_auto() {
        assert_eq!(SidecarModeSetting::default(), SidecarModeSetting::Auto);
        for (text, want) in [
            ("auto", SidecarModeSetting::Auto),
            (" Native ", SidecarModeSetting::Native),
            ("CONTAINER", SidecarModeSetting::Container),
        ] {
            assert_eq!(text.parse::<SidecarModeSetting>().unwrap(), want);
            assert_eq!(want.as_str().parse::<SidecarModeSetting>().unwrap(), want);
        }
        let err = "sidecar".parse::<SidecarModeSetting>().unwrap_err();
        assert_eq!(err.code(), "WEBHOOK_CONFIG_INVALID");
        assert!(
            err.to_string().contains("`auto`, `native` or `container`"),
            "{err}"
        );
    }

    #[test]
    fn versions_parse_as_providers_report_them() {
        let parsed = |major, minor, git| ServerVersion::parse(&info(major, minor, git)).unwrap();
        let pair = |v: ServerVersion| (v.major, v.minor);
        assert_eq!(pair(parsed("1", "20", "v1.20.2")), (1, 20));
        // GKE, EKS: a `+` after the minor version.
        assert_eq!(pair(parsed("1", "20+", "v1.20.15-gke.100")), (1, 20));
        assert_eq!(pair(parsed("1", "29+", "v1.29.0-eks-5e0fdde")), (1, 29));
        // Fields empty or not numbers: gitVersion decides.
        assert_eq!(pair(parsed("", "", "v1.29.0-eks-5e0fdde")), (1, 29));
        assert_eq!(pair(parsed("1", "", "v1.33.1+k3s1")), (1, 33));
        assert_eq!(pair(parsed("x", "y", "1.28.4")), (1, 28));
        assert_eq!(pair(parsed(" 1 ", " 30 ", "")), (1, 30));
        assert_eq!(parsed("1", "31", "v1.31.0").git_version, "v1.31.0");

        for (major, minor, git) in [("", "", ""), ("", "", "unknown"), ("1", "", "v1")] {
            let err = ServerVersion::parse(&info(major, minor, git)).unwrap_err();
            assert_eq!(err.code(), "WEBHOOK_SIDECAR_MODE_UNSUPPORTED", "{err}");
            assert!(err.to_string().contains("cannot tell"), "{err}");
        }
    }

    #[test]
    fn native_sidecars_from_1_29() {
        assert!(!version(1, 20).runs_native_sidecars());
        assert!(!version(1, 28).runs_native_sidecars());
        assert!(version(1, 29).runs_native_sidecars());
        assert!(version(1, 33).runs_native_sidecars());
        assert!(version(2, 0).runs_native_sidecars());
    }

    #[test]
    fn auto_follows_the_server() {
        use SidecarModeSetting::Auto;
        assert_eq!(
            decide(Auto, Some(&version(1, 20))).unwrap(),
            SidecarMode::Container
        );
        assert_eq!(
            decide(Auto, Some(&version(1, 28))).unwrap(),
            SidecarMode::Container
        );
        assert_eq!(
            decide(Auto, Some(&version(1, 29))).unwrap(),
            SidecarMode::Native
        );
        let err = decide(Auto, None).unwrap_err();
        assert_eq!(err.code(), "WEBHOOK_SIDECAR_MODE_UNSUPPORTED");
        assert!(
            err.to_string().contains("no Kubernetes API access"),
            "{err}"
        );
    }

    #[test]
    fn forced_native_is_refused_on_old_servers_and_forced_container_always_works() {
        use SidecarModeSetting::{Container, Native};
        let err = decide(Native, Some(&version(1, 20))).unwrap_err();
        assert_eq!(err.code(), "WEBHOOK_SIDECAR_MODE_UNSUPPORTED");
        let message = err.to_string();
        for part in ["`native`", "v1.20.0", "1.29", "`auto`", "`container`"] {
            assert!(message.contains(part), "{part} in: {message}");
        }
        assert_eq!(
            decide(Native, Some(&version(1, 29))).unwrap(),
            SidecarMode::Native
        );
        assert_eq!(decide(Native, None).unwrap(), SidecarMode::Native);
        for v in [Some(version(1, 20)), Some(version(1, 33)), None] {
            assert_eq!(
                decide(Container, v.as_ref()).unwrap(),
                SidecarMode::Container
            );
        }
    }

    fn version_body(minor: &str, git: &str) -> (StatusCode, serde_json::Value) {
        (
            StatusCode::OK,
            json!({"major": "1", "minor": minor, "gitVersion": git, "gitCommit": "",
                   "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "",
                   "platform": ""}),
        )
    }

    #[tokio::test]
    async fn resolve_reads_the_version_once_and_not_for_container() {
        let (client, log) = fake_api(|_| version_body("20", "v1.20.2"));
        let (mode, version) = resolve(
            SidecarModeSetting::Auto,
            Some(&client),
            DEFAULT_VERSION_DEADLINE,
        )
        .await
        .unwrap();
        assert_eq!(mode, SidecarMode::Container);
        assert_eq!(version.unwrap().git_version, "v1.20.2");
        let err = resolve(
            SidecarModeSetting::Native,
            Some(&client),
            DEFAULT_VERSION_DEADLINE,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "WEBHOOK_SIDECAR_MODE_UNSUPPORTED");
        let uris: Vec<String> = log.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
        assert_eq!(uris, ["/version", "/version"]);

        log.lock().unwrap().clear();
        let (mode, version) = resolve(
            SidecarModeSetting::Container,
            Some(&client),
            DEFAULT_VERSION_DEADLINE,
        )
        .await
        .unwrap();
        assert_eq!((mode, version), (SidecarMode::Container, None));
        assert!(log.lock().unwrap().is_empty(), "container needs no version");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_version_is_retried_then_fails_start_up() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let (client, _) = fake_api(move |_| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                status_failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "starting",
                )
            } else {
                version_body("33", "v1.33.1")
            }
        });
        let (mode, _) = resolve(
            SidecarModeSetting::Auto,
            Some(&client),
            DEFAULT_VERSION_DEADLINE,
        )
        .await
        .unwrap();
        assert_eq!(mode, SidecarMode::Native, "answered on the third try");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (client, log) = fake_api(|_| {
            status_failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "down",
            )
        });
        let started = tokio::time::Instant::now();
        let err = resolve(
            SidecarModeSetting::Auto,
            Some(&client),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "WEBHOOK_KUBE_API_FAILED");
        assert!(err.to_string().contains("/version"), "{err}");
        assert!(started.elapsed() <= Duration::from_secs(10));
        assert!(log.lock().unwrap().len() >= 4, "retried with backoff");
    }
}
