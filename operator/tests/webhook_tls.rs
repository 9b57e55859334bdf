//! The webhook over a real TLS socket: a rustls client that trusts only the test CA posts
//! AdmissionReviews, the way kube-apiserver does; certificate files are rotated underneath.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use fiso_operator::webhook::certs::{self, Issued};
use fiso_operator::webhook::{
    self, BoundWebhook, Outcome, SidecarModeSetting, WebhookConfig, WebhookMetrics,
};
use fiso_runtime::metrics::ReloadResult;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

fn write_pair(dir: &Path, issued: &Issued) {
    // Write both through a temporary file and rename, as kubelet's atomic swap would.
    for (name, text) in [("tls.crt", &issued.cert_pem), ("tls.key", &issued.key_pem)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for ca in webhook::tls::parse_certs(ca_pem.as_bytes()).unwrap() {
        roots.add(ca).unwrap();
    }
    let config = ClientConfig::builder_with_provider(webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// POSTs `body` to `path` over TLS, trusting `ca_pem`, verifying the name `server_name`.
async fn post(
    bound: &BoundWebhook,
    ca_pem: &str,
    server_name: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let tcp = TcpStream::connect(bound.local_addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let tls = connector(ca_pem)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::post(path)
        .header("host", server_name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

fn pod_review(annotations: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "orders-", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "shop/orders:1"}]}
            }
        }
    })
}

async fn start(dir: &Path, metrics: WebhookMetrics, shutdown: CancellationToken) -> BoundWebhook {
    let config = WebhookConfig {
        cert_reload_interval: Duration::from_millis(50),
        image: "registry.local/fiso:test".into(),
        // No API server to follow: forced.
        sidecar_mode: SidecarModeSetting::Native,
        metrics,
        ..WebhookConfig::for_cert_dir(dir)
    };
    webhook::run(config, None, shutdown).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_admission_reviews_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let issued = certs::issue(&names(), SystemTime::now(), None).unwrap();
    write_pair(dir.path(), &issued);
    let metrics = WebhookMetrics::default();
    let shutdown = CancellationToken::new();
    let bound = start(dir.path(), metrics.clone(), shutdown.clone()).await;
    assert_ne!(bound.local_addr.port(), 0);
    assert_eq!(
        bound.url(),
        format!("https://127.0.0.1:{}/mutate", bound.local_addr.port())
    );

    // An annotated pod: allowed, with a base64 JSON Patch that injects the sidecar.
    let review = pod_review(json!({"fiso.io/inject": "true", "fiso.io/flows": "orders"}));
    let body = serde_json::to_vec(&review).unwrap();
    let (status, bytes) = post(&bound, &issued.ca_pem, "127.0.0.1", "/mutate", body)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], "e911857d-c318-11e8-bbad-025000000001");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch.0).unwrap();
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "fiso");
    assert_eq!(
        pod["spec"]["initContainers"][0]["image"],
        "registry.local/fiso:test"
    );
    assert_eq!(pod["metadata"]["annotations"]["fiso.io/status"], "injected");

    // The same pod again: allowed, nothing to change.
    let again = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "2", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop", "operation": "CREATE", "userInfo": {}, "object": pod
    }});
    let (status, bytes) = post(
        &bound,
        &issued.ca_pem,
        "localhost",
        "/mutate",
        serde_json::to_vec(&again).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none(), "{answer}");

    // Not JSON: a clear 400.
    let (status, bytes) = post(
        &bound,
        &issued.ca_pem,
        "localhost",
        "/mutate",
        b"{oops".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&bytes).contains("not an AdmissionReview"));
    // Wrong path.
    let (status, _) = post(
        &bound,
        &issued.ca_pem,
        "localhost",
        "/validate",
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);

    assert_eq!(metrics.admissions(Outcome::Injected), 1);
    assert_eq!(metrics.admissions(Outcome::Skipped), 1);
    assert_eq!(metrics.admissions(Outcome::Invalid), 1);

    // A client that trusts another CA refuses the server.
    let stranger = certs::issue(&names(), SystemTime::now(), None).unwrap();
    let refused = post(
        &bound,
        &stranger.ca_pem,
        "localhost",
        "/mutate",
        b"{}".to_vec(),
    )
    .await;
    assert!(
        refused.unwrap_err().starts_with("TLS"),
        "an untrusted server must fail the handshake"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), bound.handle)
        .await
        .expect("the webhook stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = certs::issue(&names(), SystemTime::now(), None).unwrap();
    write_pair(dir.path(), &first);
    let metrics = WebhookMetrics::default();
    let shutdown = CancellationToken::new();
    let bound = start(dir.path(), metrics.clone(), shutdown.clone()).await;
    let review = serde_json::to_vec(&pod_review(json!({}))).unwrap();
    let (status, _) = post(
        &bound,
        &first.ca_pem,
        "localhost",
        "/mutate",
        review.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    // A broken pair keeps the old certificate serving.
    std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.cert_reloads(ReloadResult::Failure) == 0 {
        assert!(
            Instant::now() < deadline,
            "the broken key was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = post(
        &bound,
        &first.ca_pem,
        "localhost",
        "/mutate",
        review.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "the previous certificate still serves");

    // cert-manager issues a new certificate from a new CA.
    let second = certs::issue(&names(), SystemTime::now(), None).unwrap();
    write_pair(dir.path(), &second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match post(
            &bound,
            &second.ca_pem,
            "localhost",
            "/mutate",
            review.clone(),
        )
        .await
        {
            Ok((200, _)) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the new certificate was not picked up: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        post(&bound, &first.ca_pem, "localhost", "/mutate", review)
            .await
            .is_err(),
        "the old CA no longer verifies the server"
    );
    assert_eq!(
        metrics.cert_reloads(ReloadResult::Success),
        2,
        "initial load + rotation"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), bound.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn missing_certificate_files_fail_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = WebhookConfig {
        sidecar_mode: SidecarModeSetting::Container,
        ..WebhookConfig::for_cert_dir(dir.path())
    };
    let err = webhook::run(config, None, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "WEBHOOK_TLS_INVALID");
    assert!(err.to_string().contains("tls.crt"), "{err}");

    let self_signed = WebhookConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        self_signed: Some(webhook::SelfSigned {
            secret_namespace: "fiso-system".into(),
            secret_name: "fiso-webhook-tls".into(),
            service_dns_names: names(),
            webhook_configuration_name: "fiso-operator".into(),
            check_interval: Duration::from_secs(60),
        }),
        sidecar_mode: SidecarModeSetting::Container,
        ..Default::default()
    };
    let err = webhook::run(self_signed, None, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "WEBHOOK_CONFIG_INVALID", "{err}");
}

/// `auto` follows the API server's version; without API access there is nothing to follow,
/// and start-up says so instead of guessing.
#[tokio::test]
async fn auto_sidecar_mode_without_api_access_fails_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let issued = certs::issue(&names(), SystemTime::now(), None).unwrap();
    write_pair(dir.path(), &issued);
    let config = WebhookConfig::for_cert_dir(dir.path());
    assert_eq!(config.sidecar_mode, SidecarModeSetting::Auto);
    let err = webhook::run(config, None, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "WEBHOOK_SIDECAR_MODE_UNSUPPORTED", "{err}");
    assert!(
        err.to_string().contains("no Kubernetes API access"),
        "{err}"
    );
}
