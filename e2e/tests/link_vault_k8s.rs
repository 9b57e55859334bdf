//! Fiso-Link's Vault Kubernetes auth end to end: a ServiceAccount token issued by the test
//! cluster's kube-apiserver (1.20, legacy token Secrets from kube-controller-manager) logs in to
//! OpenBao's `kubernetes` auth method, which checks it with a TokenReview against that same
//! API server; the Vault token it gets reads the KV secret `fiso link` injects upstream, and
//! short-lived tokens are replaced by fresh logins before they end. A role bound to another
//! ServiceAccount makes its target unavailable, with an error that names the login and never
//! contains the JWT.

use std::collections::BTreeMap;

use fiso_e2e::cluster::{self, delete_quietly, wait_for, TestNamespace};
use fiso_e2e::{client, send, FisoProcess, SinkServer};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Deletes a cluster-scoped object when dropped (also when the test panics).
struct ClusterScoped {
    kind: &'static str,
    name: String,
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        delete_quietly(&[self.kind, &self.name]);
    }
}

/// The OpenBao HTTP API with the root token.
struct Bao {
    addr: String,
    root: String,
}

impl Bao {
    fn from_infra() -> Bao {
        Bao {
            addr: fiso_e2e::infra::var("FISO_E2E_VAULT_ADDR"),
            root: fiso_e2e::infra::var("FISO_E2E_VAULT_TOKEN"),
        }
    }

    /// `method /v1/<path>` with `body`; panics unless it succeeds.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let mut req = client()
            .request(method.clone(), format!("{}/v1/{path}", self.addr))
            .header("x-vault-token", &self.root);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = send(req).await;
        assert!(
            answer.status.is_success(),
            "{method} /v1/{path}: HTTP {}: {}",
            answer.status,
            answer.text()
        );
        if answer.body.is_empty() {
            Value::Null
        } else {
            answer.json()
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: &Value) -> Value {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Best-effort cleanup (errors ignored).
    async fn delete_quietly(&self, path: &str) {
        let _ = client()
            .delete(format!("{}/v1/{path}", self.addr))
            .header("x-vault-token", &self.root)
            .send()
            .await;
    }
}

/// Creates ServiceAccount `name` in `namespace` and waits for the token Secret
/// kube-controller-manager makes for it; returns `(token, ca.crt)`.
async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> (String, String) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("creating ServiceAccount {namespace}/{name}: {e}"));
    let sa = wait_for(
        &accounts,
        name,
        "its token Secret is referenced",
        |sa: Option<&ServiceAccount>| {
            sa.and_then(|sa| sa.secrets.as_ref())
                .is_some_and(|s| s.iter().any(|r| r.name.is_some()))
        },
    )
    .await
    .expect("the ServiceAccount exists");
    let secret_name = sa
        .secrets
        .unwrap_or_default()
        .into_iter()
        .find_map(|r| r.name)
        .expect("a referenced Secret");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = wait_for(
        &secrets,
        &secret_name,
        "it holds token and ca.crt",
        |s: Option<&Secret>| {
            s.and_then(|s| s.data.as_ref())
                .is_some_and(|d| d.contains_key("token") && d.contains_key("ca.crt"))
        },
    )
    .await
    .expect("the token Secret exists");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );
    let data = secret.data.expect("checked above");
    let text = |key: &str| String::from_utf8(data[key].0.clone()).expect("UTF-8");
    (text("token"), text("ca.crt"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_kubernetes_auth_logs_in_with_the_service_account_token() {
    // --- the cluster: the link's ServiceAccount and a reviewer allowed to do TokenReviews.
    let kube = cluster::client().await;
    let ns = TestNamespace::create(&kube, "vault-k8s").await;
    let (jwt, ca_pem) = service_account_token(&kube, &ns.name, "fiso-link").await;
    let (reviewer_jwt, _) = service_account_token(&kube, &ns.name, "reviewer").await;
    let binding = ClusterScoped {
        kind: "clusterrolebinding",
        name: format!("{}-reviewer", ns.name),
    };
    Api::<ClusterRoleBinding>::all(kube.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(binding.name.clone()),
                    labels: Some(BTreeMap::from([(
                        cluster::TEST_LABEL.to_owned(),
                        ns.name.clone(),
                    )])),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "system:auth-delegator".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "reviewer".into(),
                    namespace: Some(ns.name.clone()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("creating ClusterRoleBinding {}: {e}", binding.name));
    let kubernetes_host = {
        let path = fiso_e2e::infra::kubeconfig_path();
        let config = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
        let options = kube::config::KubeConfigOptions::default();
        kube::Config::from_custom_kubeconfig(config, &options)
            .await
            .expect("kubeconfig")
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned()
    };

    // --- OpenBao: a Kubernetes auth mount checking tokens against that API server, a policy
    // reading one KV path, roles for the link's ServiceAccount (1h and 3s tokens) and one for
    // another account.
    let bao = Bao::from_infra();
    let mount = ns.name.clone();
    let path = format!("{}/upstream", ns.name);
    let policy = format!("{}-read", ns.name);
    bao.post(&format!("sys/auth/{mount}"), &json!({"type": "kubernetes"}))
        .await;
    bao.post(
        &format!("auth/{mount}/config"),
        &json!({
            "kubernetes_host": kubernetes_host,
            "kubernetes_ca_cert": ca_pem,
            "token_reviewer_jwt": reviewer_jwt,
            "disable_local_ca_jwt": true,
        }),
    )
    .await;
    bao.put(
        &format!("sys/policies/acl/{policy}"),
        &json!({"policy": format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}")}),
    )
    .await;
    let role = |accounts: &[&str], ttl: &str| {
        json!({
            "bound_service_account_names": accounts,
            "bound_service_account_namespaces": [ns.name],
            "token_policies": [policy],
            "token_ttl": ttl,
        })
    };
    bao.post(
        &format!("auth/{mount}/role/link"),
        &role(&["fiso-link"], "1h"),
    )
    .await;
    bao.post(
        &format!("auth/{mount}/role/other"),
        &role(&["someone-else"], "1h"),
    )
    .await;
    // Tokens that live 3s: the link must log in again before each one ends.
    bao.post(
        &format!("auth/{mount}/role/short"),
        &role(&["fiso-link"], "3s"),
    )
    .await;
    bao.post(
        &format!("secret/data/{path}"),
        &json!({"data": {"token": "k8s-v1"}}),
    )
    .await;

    // --- fiso link: the JWT from a file, no Vault token at all.
    let upstream = SinkServer::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("token");
    std::fs::write(&jwt_file, &jwt).unwrap();
    let target = |name: &str, role: &str| {
        format!(
            "  - name: {name}\n    protocol: http\n    host: localhost\n    port: {}\n    auth:\n      \
             type: bearer\n      vaultRef:\n        path: {path}\n        field: token\n        \
             role: {role}\n",
            upstream.addr().port()
        )
    };
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listenAddr: 127.0.0.1:0\ntargets:\n{}{}{}",
            target("k8s", "link"),
            target("denied", "other"),
            target("short", "short")
        ),
    )
    .unwrap();
    let fiso = FisoProcess::start_link_with_env(
        &config,
        [
            ("VAULT_ADDR", bao.addr.clone()),
            ("VAULT_K8S_AUTH_MOUNT", mount.clone()),
            ("VAULT_K8S_TOKEN_PATH", jwt_file.display().to_string()),
            // Empty counts as unset: whatever the test runner's environment holds, only the
            // Kubernetes login can give the link a Vault token.
            ("VAULT_TOKEN", String::new()),
            ("VAULT_TOKEN_FILE", String::new()),
        ],
    )
    .await;
    let link = fiso.link_addr().await;

    // The role bound to the link's ServiceAccount: the secret is injected.
    let answer = send(client().get(format!("http://{link}/link/k8s/x"))).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}\n{}",
        answer.text(),
        fiso.logs().tail(20)
    );
    assert_eq!(
        upstream.wait_for_requests(1).await[0].header("authorization"),
        Some("Bearer k8s-v1")
    );

    // The role bound to another account: the login is refused, the target unavailable.
    let answer = send(client().get(format!("http://{link}/link/denied/x"))).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert_eq!(
        answer.json()["error"]["code"],
        "TARGET_UNAVAILABLE",
        "{}",
        answer.text()
    );
    let logged = fiso
        .wait_for_log(|l| {
            l.is("link target not loaded") && l.str_field("target_name") == Some("denied")
        })
        .await;
    let error = logged.str_field("error").unwrap_or_default().to_owned();
    assert!(
        error.contains(&format!(
            "Kubernetes auth login at {}/v1/auth/{mount}/login",
            bao.addr
        )) && error.contains("role other")
            && error.contains("HTTP 403"),
        "{error}"
    );
    for (what, text) in [("the log", &logged.raw), ("the answer", &answer.text())] {
        assert!(
            !text.contains(jwt.trim()),
            "{what} contains the JWT: {text}"
        );
    }
    assert!(
        !fiso
            .logs()
            .lines()
            .iter()
            .any(|l| l.raw.contains(jwt.trim())),
        "the JWT appears in fiso's logs"
    );
    assert_eq!(
        upstream.count(),
        1,
        "nothing reached the upstream for `denied`"
    );

    // 3s leases: logged in again (at ~2/3 of each lease) before they end. The secret is only
    // re-read every 5 minutes, so these refreshes are the logins themselves.
    let short = [("target", "short"), ("status", "success")];
    let relogged = fiso_e2e::eventually(fiso_e2e::DEADLINE, || async {
        let m = fiso.metrics().await;
        (m.value("fiso_link_auth_refresh_total", &short) >= 2.0).then_some(m)
    })
    .await;
    let m = relogged.unwrap_or_else(|| panic!("no two re-logins\n{}", fiso.logs().tail(20)));
    assert_eq!(
        m.value(
            "fiso_link_auth_refresh_total",
            &[("target", "short"), ("status", "failure")]
        ),
        0.0,
        "{m}"
    );
    let answer = send(client().get(format!("http://{link}/link/short/x"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        upstream.wait_for_requests(2).await[1].header("authorization"),
        Some("Bearer k8s-v1")
    );

    drop(fiso);
    bao.delete_quietly(&format!("sys/auth/{mount}")).await;
    bao.delete_quietly(&format!("sys/policies/acl/{policy}"))
        .await;
    bao.delete_quietly(&format!("secret/metadata/{path}")).await;
    drop(binding);
}
