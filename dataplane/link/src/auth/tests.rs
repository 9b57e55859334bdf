use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fiso_config::link::{SecretRef, VaultRef};
use pretty_assertions::assert_eq;

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// Counts `on_refresh` calls by status.
#[derive(Default)]
struct Refreshes {
    success: AtomicUsize,
    failure: AtomicUsize,
}

impl Refreshes {
    fn callback(self: &Arc<Self>) -> OnRefresh {
        let me = self.clone();
        Arc::new(move |status| match status {
            "success" => {
                me.success.fetch_add(1, Ordering::SeqCst);
            }
            "failure" => {
                me.failure.fetch_add(1, Ordering::SeqCst);
            }
            other => panic!("unexpected status {other}"),
        })
    }
    fn failures(&self) -> usize {
        self.failure.load(Ordering::SeqCst)
    }
}

fn noop() -> OnRefresh {
    Arc::new(|_| {})
}

fn file_auth(type_: AuthType, header: Option<&str>, path: &Path) -> AuthConfig {
    AuthConfig {
        type_,
        header: header.map(str::to_owned),
        secret_ref: Some(SecretRef {
            file_path: Some(path.display().to_string()),
            ..SecretRef::default()
        }),
        vault_ref: None,
    }
}

fn env_auth(type_: AuthType, var: &str) -> AuthConfig {
    AuthConfig {
        type_,
        header: None,
        secret_ref: Some(SecretRef {
            env_var: Some(var.to_owned()),
            ..SecretRef::default()
        }),
        vault_ref: None,
    }
}

async fn start_file(type_: AuthType, header: Option<&str>, path: &Path) -> Credentials {
    Credentials::start(
        "crm",
        &file_auth(type_, header, path),
        &VaultSettings::default(),
        noop(),
    )
    .await
    .expect("start")
    .expect("credentials")
}

fn value(c: &Credentials) -> String {
    c.header().1.to_str().unwrap().to_owned()
}

/// Polls until `cond` holds or the deadline passes.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `content` beside `path` and renames it over (what kubelet and editors do).
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn bearer_from_file_trims_the_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cr3t\n").unwrap();
    let creds = start_file(AuthType::Bearer, None, &path).await;
    let (name, value) = creds.header();
    assert_eq!(name, http::header::AUTHORIZATION);
    assert_eq!(value, "Bearer s3cr3t");
    assert!(value.is_sensitive());
}

#[tokio::test]
async fn apikey_uses_the_default_or_the_configured_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "k-123\r\n").unwrap();
    let default = start_file(AuthType::Apikey, None, &path).await;
    assert_eq!(default.header().0.as_str(), "x-api-key");
    assert_eq!(value(&default), "k-123");
    let custom = start_file(AuthType::Apikey, Some("X-Custom-Key"), &path).await;
    assert_eq!(custom.header().0.as_str(), "x-custom-key");
    assert_eq!(value(&custom), "k-123");
    assert!(custom.header().1.is_sensitive());
}

#[tokio::test]
async fn basic_is_base64_of_user_colon_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("basic");
    std::fs::write(&path, "alice:open sesame\n").unwrap();
    let creds = start_file(AuthType::Basic, None, &path).await;
    assert_eq!(creds.header().0, http::header::AUTHORIZATION);
    // RFC 7617 example.
    assert_eq!(value(&creds), "Basic YWxpY2U6b3BlbiBzZXNhbWU=");
}

#[tokio::test]
async fn none_needs_no_source() {
    let auth = AuthConfig::default();
    assert_eq!(auth.type_, AuthType::None);
    let creds = Credentials::start("crm", &auth, &VaultSettings::default(), noop())
        .await
        .unwrap();
    assert!(creds.is_none());
}

#[tokio::test]
async fn secret_from_env_var() {
    let var = "FISO_LINK_AUTH_TEST_SECRET_FROM_ENV";
    std::env::set_var(var, "env-secret\n");
    let creds = Credentials::start(
        "crm",
        &env_auth(AuthType::Bearer, var),
        &VaultSettings::default(),
        noop(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(value(&creds), "Bearer env-secret");
}

#[tokio::test]
async fn unset_env_var_is_named() {
    let var = "FISO_LINK_AUTH_TEST_NEVER_SET";
    let err = Credentials::start(
        "crm",
        &env_auth(AuthType::Bearer, var),
        &VaultSettings::default(),
        noop(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(var), "{err}");
    assert_eq!(err.code(), "AUTH_SOURCE_UNAVAILABLE");
}

#[tokio::test]
async fn file_rewrite_by_rename_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "v1\n").unwrap();
    let refreshes = Arc::new(Refreshes::default());
    let creds = Credentials::start(
        "crm",
        &file_auth(AuthType::Bearer, None, &path),
        &VaultSettings::default(),
        refreshes.callback(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(value(&creds), "Bearer v1");
    replace(&path, "v2\n");
    wait_until("the rewritten token", || value(&creds) == "Bearer v2").await;
    assert!(refreshes.success.load(Ordering::SeqCst) >= 1);
    assert_eq!(refreshes.failures(), 0);
}

#[tokio::test]
async fn kubelet_symlink_swap_is_picked_up() {
    // kubelet's AtomicWriter: token -> ..data/token, ..data -> ..<timestamp>; an update writes a
    // new timestamped directory and renames a new `..data` symlink over the old one.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_01")).unwrap();
    std::fs::write(root.join("..2026_01/token"), "old").unwrap();
    std::os::unix::fs::symlink("..2026_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/token", root.join("token")).unwrap();
    let creds = start_file(AuthType::Bearer, None, &root.join("token")).await;
    assert_eq!(value(&creds), "Bearer old");

    std::fs::create_dir(root.join("..2026_02")).unwrap();
    std::fs::write(root.join("..2026_02/token"), "new").unwrap();
    std::os::unix::fs::symlink("..2026_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_01")).unwrap();
    wait_until("the swapped token", || value(&creds) == "Bearer new").await;
}

#[tokio::test]
async fn keeps_the_last_good_value_when_the_file_is_deleted_or_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "good").unwrap();
    let refreshes = Arc::new(Refreshes::default());
    let creds = Credentials::start(
        "crm",
        &file_auth(AuthType::Bearer, None, &path),
        &VaultSettings::default(),
        refreshes.callback(),
    )
    .await
    .unwrap()
    .unwrap();

    std::fs::remove_file(&path).unwrap();
    wait_until("a failed refresh after delete", || {
        refreshes.failures() >= 1
    })
    .await;
    assert_eq!(value(&creds), "Bearer good");

    let before = refreshes.failures();
    std::fs::write(&path, "").unwrap();
    wait_until("a failed refresh after emptying", || {
        refreshes.failures() > before
    })
    .await;
    assert_eq!(value(&creds), "Bearer good");

    replace(&path, "better\n");
    wait_until("recovery", || value(&creds) == "Bearer better").await;
}

#[tokio::test]
async fn missing_file_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    for path in [
        dir.path().join("absent"),
        dir.path().join("no/such/dir/token"),
    ] {
        let err = Credentials::start(
            "crm",
            &file_auth(AuthType::Bearer, None, &path),
            &VaultSettings::default(),
            noop(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, AuthError::File { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}

#[tokio::test]
async fn errors_never_contain_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2-very-secret";
    let cases = [
        // A control character inside the secret: not a header value.
        (AuthType::Bearer, format!("{secret}\u{1}x")),
        (AuthType::Apikey, format!("{secret}\nsecond line")),
        // Basic needs `user:password`.
        (AuthType::Basic, secret.to_owned()),
    ];
    for (i, (kind, content)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("secret{i}"));
        std::fs::write(&path, &content).unwrap();
        let err = Credentials::start(
            "crm",
            &file_auth(kind, None, &path),
            &VaultSettings::default(),
            noop(),
        )
        .await
        .unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
        assert_eq!(err.code(), "AUTH_SECRET_INVALID");
    }
    // Empty.
    let path = dir.path().join("empty");
    std::fs::write(&path, "\n").unwrap();
    let err = start_err(&file_auth(AuthType::Bearer, None, &path)).await;
    assert!(matches!(err, AuthError::Empty { .. }), "{err:?}");

    // Nor do Debug renderings of the credentials or the Vault settings.
    let path = dir.path().join("ok");
    std::fs::write(&path, secret).unwrap();
    let creds = start_file(AuthType::Bearer, None, &path).await;
    assert!(!format!("{creds:?}").contains(secret));
    assert!(!format!("{:?}", creds.header().1).contains(secret));
    let settings = VaultSettings {
        token: Some(secret.to_owned()),
        ..VaultSettings::default()
    };
    assert!(!format!("{settings:?}").contains(secret));
}

async fn start_err(auth: &AuthConfig) -> AuthError {
    Credentials::start("crm", auth, &VaultSettings::default(), noop())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn config_errors() {
    let no_source = AuthConfig {
        type_: AuthType::Bearer,
        ..AuthConfig::default()
    };
    let err = start_err(&no_source).await;
    assert_eq!(err.code(), "AUTH_CONFIG_INVALID");
    assert!(err.to_string().contains("crm"), "{err}");

    let bad_header = AuthConfig {
        header: Some("bad header".to_owned()),
        ..env_auth(AuthType::Apikey, "FISO_LINK_AUTH_TEST_UNUSED")
    };
    assert_eq!(start_err(&bad_header).await.code(), "AUTH_CONFIG_INVALID");

    let k8s_secret = AuthConfig {
        type_: AuthType::Bearer,
        secret_ref: Some(SecretRef {
            name: Some("crm".to_owned()),
            key: Some("token".to_owned()),
            ..SecretRef::default()
        }),
        ..AuthConfig::default()
    };
    assert!(start_err(&k8s_secret)
        .await
        .to_string()
        .contains("crm/token"));

    let no_vault_addr = AuthConfig {
        type_: AuthType::Bearer,
        vault_ref: Some(VaultRef {
            path: "crm/api".to_owned(),
            field: "token".to_owned(),
            ..VaultRef::default()
        }),
        ..AuthConfig::default()
    };
    let err = start_err(&no_vault_addr).await;
    assert!(err.to_string().contains("VAULT_ADDR"), "{err}");
    assert!(err.to_string().contains("secret/crm/api"), "{err}");
}

#[tokio::test]
async fn dropping_every_clone_stops_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "v1").unwrap();
    let creds = start_file(AuthType::Bearer, None, &path).await;
    let clone = creds.clone();
    let shared = Arc::downgrade(&creds.inner.shared);
    drop(creds);
    tokio::task::yield_now().await;
    assert!(shared.upgrade().is_some(), "a clone is still alive");
    drop(clone);
    // The task ends (and drops its reference) once it sees the cancellation.
    wait_until("the background task to end", || shared.upgrade().is_none()).await;
}
