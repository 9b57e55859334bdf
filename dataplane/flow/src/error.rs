//! Errors of the transform / envelope engine, each with the stable code that DLQ headers
//! (`fiso-error-code`), metric labels and logs carry.

/// A flow failed to compile or an event failed to go through it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// A CEL expression of the config does not compile; `path` is the config field path
    /// (`transform.fields.total`, `cloudevents.type`), so `fiso validate` can point at it.
    #[error("{path}: {message}")]
    Compile { path: String, message: String },

    /// The incoming event cannot be read, e.g. a structured CloudEvent without `id`.
    #[error("invalid input event: {message}")]
    InvalidInput { message: String },

    /// Evaluating a `transform.fields` expression failed for this event.
    #[error("transform field `{field}`: {message}")]
    Transform { field: String, message: String },

    /// The CloudEvent envelope could not be built: an override evaluated to the wrong type,
    /// `type` is empty, `dataschema` is not a URI, ...
    #[error("cloudevents.{attribute}: {message}")]
    CloudEventWrap {
        attribute: &'static str,
        message: String,
    },

    /// A WASM interceptor failed on this event (trap, timeout, memory, invalid output).
    #[error("{0}")]
    Interceptor(String),
}

impl FlowError {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            FlowError::Compile { .. } => "CONFIG_INVALID",
            FlowError::InvalidInput { .. } => "INPUT_INVALID",
            FlowError::Transform { .. } => "TRANSFORM_FAILED",
            FlowError::CloudEventWrap { .. } => "CLOUDEVENT_WRAP_FAILED",
            FlowError::Interceptor(_) => "INTERCEPTOR_FAILED",
        }
    }

    pub(crate) fn compile(path: impl Into<String>, message: impl Into<String>) -> Self {
        FlowError::Compile {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        FlowError::InvalidInput {
            message: message.into(),
        }
    }

    pub(crate) fn wrap(attribute: &'static str, message: impl Into<String>) -> Self {
        FlowError::CloudEventWrap {
            attribute,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_stable_code() {
        let cases = [
            (
                FlowError::compile("transform.fields.total", "x"),
                "CONFIG_INVALID",
            ),
            (FlowError::invalid_input("x"), "INPUT_INVALID"),
            (
                FlowError::Transform {
                    field: "total".into(),
                    message: "no such key: price".into(),
                },
                "TRANSFORM_FAILED",
            ),
            (
                FlowError::wrap("type", "must not be empty"),
                "CLOUDEVENT_WRAP_FAILED",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn messages_name_the_field() {
        let error = FlowError::Transform {
            field: "total".into(),
            message: "no such key: price".into(),
        };
        assert_eq!(
            error.to_string(),
            "transform field `total`: no such key: price"
        );
        assert_eq!(
            FlowError::wrap("type", "must not be empty").to_string(),
            "cloudevents.type: must not be empty"
        );
        assert_eq!(
            FlowError::compile("cloudevents.subject", "bad").to_string(),
            "cloudevents.subject: bad"
        );
    }
}
