//! Fixtures for unit tests: custom resources as `kubectl apply` would send them, and a fake
//! API server ([`fake_api`]) that answers a `kube::Client` in process, so reconcilers are
//! tested for the requests they make without a cluster (controller-rs's `fixtures.rs`
//! pattern, with a responder function in place of a scripted `tower_test` handle).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use fiso_config::crd::{FlowDefinition, LinkTarget, WasmApp};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};

use crate::configmap::{self, Rendered};
use crate::error::Error;
use crate::selection::Selection;
use crate::undecoded::{Kind, Undecoded};

/// Parses a FlowDefinition / LinkTarget manifest and fills in what the API server adds.
pub fn resource<K: serde::de::DeserializeOwned + kube::Resource>(yaml: &str) -> K {
    let mut k: K = serde_yaml_ng::from_str(yaml).expect("fixture parses");
    let meta = k.meta_mut();
    let name = meta.name.clone().unwrap_or_default();
    meta.namespace.get_or_insert_with(|| "apps".to_owned());
    meta.uid.get_or_insert_with(|| format!("uid-{name}"));
    meta.generation.get_or_insert(1);
    k
}

/// `k` as the controllers and the renderer receive it: its spec undecoded.
pub fn undecoded<K: Kind + serde::Serialize>(k: &K) -> Undecoded<K> {
    serde_json::from_value(serde_json::to_value(k).expect("resource serialises"))
        .expect("resource reads back")
}

/// [`configmap::render`] of typed resources, each handed over [`undecoded`].
pub fn render<'a>(
    selection: &Selection,
    flows: impl IntoIterator<Item = &'a FlowDefinition>,
    links: impl IntoIterator<Item = &'a LinkTarget>,
    apps: impl IntoIterator<Item = &'a WasmApp>,
) -> Result<Rendered, Error> {
    let flows: Vec<_> = flows.into_iter().map(undecoded).collect();
    let links: Vec<_> = links.into_iter().map(undecoded).collect();
    let apps: Vec<_> = apps.into_iter().map(undecoded).collect();
    configmap::render(selection, &flows, &links, &apps)
}

/// An HTTP → HTTP FlowDefinition in namespace `apps`.
pub fn flow(name: &str, sink_url: &str) -> FlowDefinition {
    resource(&format!(
        r#"
apiVersion: fiso.io/v1alpha1
kind: FlowDefinition
metadata:
  name: {name}
spec:
  source:
    type: http
    config:
      listenAddr: ":8081"
      path: /{name}
  sink:
    type: http
    config:
      url: "{sink_url}"
"#
    ))
}

/// A long-running WasmApp in namespace `apps` whose module is key `app.wasm` of ConfigMap
/// `module_config_map`.
pub fn app(name: &str, module_config_map: &str) -> WasmApp {
    resource(&format!(
        r#"
apiVersion: fiso.io/v1alpha1
kind: WasmApp
metadata:
  name: {name}
spec:
  moduleConfigMap: {{name: "{module_config_map}", key: app.wasm}}
  healthCheck: /health
"#
    ))
}

/// An https LinkTarget in namespace `apps`.
pub fn link(name: &str, host: &str) -> LinkTarget {
    resource(&format!(
        r#"
apiVersion: fiso.io/v1alpha1
kind: LinkTarget
metadata:
  name: {name}
spec:
  protocol: https
  host: "{host}"
"#
    ))
}

/// One request the fake API server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/apps/configmaps/x?&force=true&fieldManager=...`.
    pub uri: String,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

/// Every request the fake API server received, in order.
pub type Log = Arc<Mutex<Vec<Seen>>>;

/// A client whose API server is `respond`: it gets each request and returns the status and
/// JSON body to answer with; every request is recorded in the returned log.
pub fn fake_api(
    respond: impl Fn(&Seen) -> (StatusCode, Value) + Send + Sync + 'static,
) -> (kube::Client, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let respond = Arc::new(respond);
    let service = tower::service_fn(move |req: Request<Body>| {
        let (seen, respond) = (seen.clone(), respond.clone());
        async move {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let s = Seen { method, uri, body };
            let (code, reply) = respond(&s);
            seen.lock().unwrap().push(s);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    (kube::Client::new(service, "default"), log)
}

/// A `Status` failure body as the API server sends it.
pub fn status_failure(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code.as_u16(),
            "reason": reason,
            "message": message,
        }),
    )
}

/// 404 `NotFound`.
pub fn not_found() -> (StatusCode, Value) {
    status_failure(StatusCode::NOT_FOUND, "NotFound", "not found")
}
