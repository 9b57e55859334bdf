//! Vault credentials against a real OpenBao (`cargo xtask infra up openbao` exports
//! `FISO_E2E_VAULT_ADDR` and `FISO_E2E_VAULT_TOKEN`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fiso_config::link::{AuthConfig, AuthType, VaultRef};
use fiso_link::auth::{AuthError, Credentials, VaultSettings};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(10);

struct Bao {
    addr: String,
    root: String,
    http: reqwest::Client,
}

/// The OpenBao from the infra (`cargo xtask infra up` starts it; the tests need it).
fn bao() -> Option<Bao> {
    let addr = std::env::var("FISO_E2E_VAULT_ADDR")
        .ok()
        .filter(|a| !a.is_empty())
        .expect(
            "FISO_E2E_VAULT_ADDR is unset: run `cargo xtask infra up openbao` and \
             `eval \"$(cargo xtask infra env)\"` (or the whole suite with `cargo xtask ci`)",
        );
    Some(Bao {
        addr,
        root: std::env::var("FISO_E2E_VAULT_TOKEN").unwrap_or_else(|_| "root".to_owned()),
        http: reqwest::Client::new(),
    })
}

impl Bao {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("OpenBao reachable");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn put_secret(&self, path: &str, token: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("secret/data/{path}"),
            Some(json!({ "data": { "token": token } })),
        )
        .await;
    }

    fn settings(&self, token: &str) -> VaultSettings {
        VaultSettings {
            addr: Some(self.addr.clone()),
            token: Some(token.to_owned()),
            ..VaultSettings::default()
        }
    }
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("fiso-test/{name}-{}-{nanos}", std::process::id())
}

fn vault_auth(path: &str, field: &str, refresh: Duration) -> AuthConfig {
    AuthConfig {
        type_: AuthType::Bearer,
        header: None,
        secret_ref: None,
        vault_ref: Some(VaultRef {
            path: path.to_owned(),
            field: field.to_owned(),
            mount: None,
            role: None,
            refresh_interval: Some(refresh),
        }),
    }
}

#[derive(Default)]
struct Refreshes {
    success: AtomicUsize,
    failure: AtomicUsize,
}

fn counter() -> (Arc<Refreshes>, Arc<dyn Fn(&'static str) + Send + Sync>) {
    let counts = Arc::new(Refreshes::default());
    let c = counts.clone();
    let callback = Arc::new(move |status: &'static str| {
        match status {
            "success" => &c.success,
            _ => &c.failure,
        }
        .fetch_add(1, Ordering::SeqCst);
    });
    (counts, callback)
}

fn value(c: &Credentials) -> String {
    c.header().1.to_str().unwrap().to_owned()
}

async fn wait_for(creds: &Credentials, want: &str) {
    let deadline = Instant::now() + DEADLINE;
    while value(creds) != want {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want:?}, still {:?}",
            value(creds)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn vault_secret_is_read_and_refreshed() {
    let Some(bao) = bao() else { return };
    let path = unique("refresh");
    bao.put_secret(&path, "v1").await;
    let (counts, on_refresh) = counter();
    let creds = Credentials::start(
        "crm",
        &vault_auth(&path, "token", Duration::from_millis(200)),
        &bao.settings(&bao.root),
        on_refresh,
    )
    .await
    .expect("start")
    .expect("credentials");
    let (name, header) = creds.header();
    assert_eq!(name, http::header::AUTHORIZATION);
    assert_eq!(header, "Bearer v1");
    assert!(header.is_sensitive());

    bao.put_secret(&path, "v2").await;
    wait_for(&creds, "Bearer v2").await;
    assert!(counts.success.load(Ordering::SeqCst) >= 1);
    assert_eq!(counts.failure.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn vault_failed_refresh_keeps_the_last_value() {
    let Some(bao) = bao() else { return };
    let path = unique("keep");
    bao.put_secret(&path, "kept").await;
    let (counts, on_refresh) = counter();
    let creds = Credentials::start(
        "crm",
        &vault_auth(&path, "token", Duration::from_millis(200)),
        &bao.settings(&bao.root),
        on_refresh,
    )
    .await
    .unwrap()
    .unwrap();
    // Delete all versions: reads now fail with 404.
    bao.call(
        reqwest::Method::DELETE,
        &format!("secret/metadata/{path}"),
        None,
    )
    .await;
    let deadline = Instant::now() + DEADLINE;
    while counts.failure.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no failed refresh reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(value(&creds), "Bearer kept");
}

#[tokio::test]
async fn vault_wrong_path_or_field_names_it() {
    let Some(bao) = bao() else { return };
    let path = unique("wrong");
    bao.put_secret(&path, "do-not-leak").await;
    let start = |auth: AuthConfig| {
        let settings = bao.settings(&bao.root);
        async move {
            Credentials::start("crm", &auth, &settings, Arc::new(|_| {}))
                .await
                .unwrap_err()
        }
    };
    let check = |err: &AuthError, needle: &str| {
        let text = err.to_string();
        eprintln!("{text}");
        assert!(text.contains(needle), "{text}");
        assert!(text.contains(&bao.addr), "{text}");
        assert!(!text.contains("do-not-leak"), "{text}");
        assert!(!text.contains(&bao.root) || bao.root.len() < 6, "{text}");
    };

    let err = start(vault_auth(&path, "nope", Duration::from_secs(60))).await;
    check(&err, &format!("secret/{path}"));
    assert!(err.to_string().contains("field nope"), "{err}");

    let missing = format!("{path}-missing");
    let err = start(vault_auth(&missing, "token", Duration::from_secs(60))).await;
    check(&err, &format!("secret/{missing}"));
    assert!(err.to_string().contains("404"), "{err}");

    let mut wrong_mount = vault_auth(&path, "token", Duration::from_secs(60));
    wrong_mount.vault_ref.as_mut().unwrap().mount = Some("no-such-mount".to_owned());
    let err = start(wrong_mount).await;
    check(&err, &format!("no-such-mount/{path}"));

    // A token without access: 403, named as such.
    let err = Credentials::start(
        "crm",
        &vault_auth(&path, "token", Duration::from_secs(60)),
        &bao.settings("not-a-real-token"),
        Arc::new(|_| {}),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.contains("403") && text.contains(&path), "{text}");
    assert!(!text.contains("not-a-real-token"), "{text}");
}

#[tokio::test]
async fn vault_token_is_renewed_past_its_ttl() {
    let Some(bao) = bao() else { return };
    let path = unique("renew");
    bao.put_secret(&path, "r1").await;
    let created = bao
        .call(
            reqwest::Method::POST,
            "auth/token/create",
            Some(json!({ "ttl": "4s", "renewable": true, "policies": ["root"] })),
        )
        .await;
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let expires = Instant::now() + Duration::from_secs(4);
    let (counts, on_refresh) = counter();
    let creds = Credentials::start(
        "crm",
        &vault_auth(&path, "token", Duration::from_millis(200)),
        &bao.settings(&token),
        on_refresh,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(value(&creds), "Bearer r1");

    // Past the token's original TTL (plus margin), a new value is still read.
    tokio::time::sleep_until((expires + Duration::from_secs(2)).into()).await;
    bao.put_secret(&path, "r2").await;
    wait_for(&creds, "Bearer r2").await;
    assert_eq!(counts.failure.load(Ordering::SeqCst), 0);
    // And the token itself is still valid.
    let lookup = bao
        .call(
            reqwest::Method::POST,
            "auth/token/lookup",
            Some(json!({ "token": token })),
        )
        .await;
    assert!(lookup["data"]["ttl"].as_u64().unwrap() > 0, "{lookup}");
}

#[tokio::test]
async fn vault_kubernetes_login_failure_is_clear() {
    let Some(bao) = bao() else { return };
    let mount = unique("k8s").replace('/', "-");
    bao.call(
        reqwest::Method::POST,
        &format!("sys/auth/{mount}"),
        Some(json!({ "type": "kubernetes" })),
    )
    .await;
    // An API server nobody listens on: the TokenReview cannot succeed. Outside a pod a CA must
    // be given; any certificate will do (the system bundle's first).
    let bundle = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt")
        .expect("the system CA bundle (Debian ca-certificates)");
    let end = "-----END CERTIFICATE-----";
    let first = &bundle[bundle.find("-----BEGIN CERTIFICATE-----").unwrap()
        ..bundle.find(end).unwrap() + end.len()];
    bao.call(
        reqwest::Method::POST,
        &format!("auth/{mount}/config"),
        Some(json!({
            "kubernetes_host": "https://127.0.0.1:1",
            "kubernetes_ca_cert": first,
            "disable_local_ca_jwt": true,
        })),
    )
    .await;
    bao.call(
        reqwest::Method::POST,
        &format!("auth/{mount}/role/crm"),
        Some(json!({
            "bound_service_account_names": ["*"],
            "bound_service_account_namespaces": ["*"],
            "policies": ["default"],
        })),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let jwt_path = dir.path().join("token");
    // A well-formed but unsigned JWT.
    let jwt =
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpjcm0ifQ.c2ln";
    std::fs::write(&jwt_path, jwt).unwrap();
    let mut auth = vault_auth("crm/api", "token", Duration::from_secs(60));
    auth.vault_ref.as_mut().unwrap().role = Some("crm".to_owned());
    let settings = VaultSettings {
        addr: Some(bao.addr.clone()),
        kubernetes_mount: Some(mount.clone()),
        service_account_token_path: Some(jwt_path),
        ..VaultSettings::default()
    };
    let err = Credentials::start("crm", &auth, &settings, Arc::new(|_| {}))
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.contains("Kubernetes auth login"), "{text}");
    assert!(text.contains(&format!("auth/{mount}/login")), "{text}");
    assert!(text.contains("role crm"), "{text}");
    assert!(!text.contains(jwt), "{text}");
    let _ = bao
        .http
        .delete(format!("{}/v1/sys/auth/{mount}", bao.addr))
        .header("X-Vault-Token", &bao.root)
        .send()
        .await;
}
