//! The flow's WASM interceptors on one CloudEvent: the event and the source's headers go in as
//! JSON; what comes out is the event to deliver (with the headers to send along), a rejection,
//! or a failure.

use crate::CloudEvent;

use super::delivery::DeliveryContext;
use crate::event::json_format;
use crate::interceptor::{ChainOutcome, InterceptorChain};
use crate::metrics::FlowMetrics;
use crate::FlowError;

/// What the interceptors made of an event.
pub(super) enum Intercepted {
    /// The event to deliver and the headers the interceptors want sent with it.
    Continue {
        event: Box<CloudEvent>,
        sink_headers: Vec<(String, String)>,
    },
    Rejected {
        status: u16,
        reason: String,
        module: String,
    },
    Failed(FlowError),
}

/// Runs the flow's interceptors on `event`; headers they return go with the delivery. The
/// pipeline calls it only for a flow that has interceptors.
pub(super) async fn intercept(
    chain: &InterceptorChain,
    metrics: &FlowMetrics,
    flow: &str,
    event: CloudEvent,
    ctx: &DeliveryContext,
) -> Intercepted {
    let failed = |message: String| Intercepted::Failed(FlowError::Interceptor(message));
    let mut input = match serde_json::to_value(&event) {
        Ok(v) => v,
        Err(e) => return failed(format!("the event cannot be given to an interceptor: {e}")),
    };
    let headers: serde_json::Map<String, serde_json::Value> = ctx
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    input["headers"] = serde_json::Value::Object(headers);
    match chain.apply(input).await {
        Ok(ChainOutcome::Rejected {
            status,
            reason,
            module,
            failed_open,
        }) => {
            metrics.interceptor_failed_open(flow, failed_open);
            Intercepted::Rejected {
                status,
                reason,
                module,
            }
        }
        Ok(ChainOutcome::Continue {
            mut event,
            failed_open,
        }) => {
            metrics.interceptor_failed_open(flow, failed_open);
            let headers = event
                .as_object_mut()
                .and_then(|o| o.remove("headers"))
                .and_then(|h| match h {
                    serde_json::Value::Object(h) => Some(h),
                    _ => None,
                })
                .unwrap_or_default();
            let sink_headers = headers
                .into_iter()
                .filter(|(k, v)| {
                    Some(v.as_str().unwrap_or_default())
                        != ctx
                            .headers
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.as_str())
                })
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                .collect();
            match json_format::from_json(event) {
                Ok(e) => Intercepted::Continue {
                    event: Box::new(e),
                    sink_headers,
                },
                Err(e) => failed(format!(
                    "an interceptor returned an invalid CloudEvent: {e}"
                )),
            }
        }
        Err(e) => failed(e.to_string()),
    }
}
