//! The binary content mode of the HTTP and Kafka protocol bindings: every attribute but
//! `datacontenttype` in its own header (`ce-<name>` / `ce_<name>`), `datacontenttype` as the
//! message's content type, the data as the body.
//!
//! Header values are the attributes' canonical strings (spec.md "Type System"), so extension
//! types do not survive a header binding: an Integer or Boolean extension read from headers is a
//! String. HTTP values are percent-encoded (http-protocol-binding §3.1.3.2: space, `"`, `%` and
//! everything outside U+0021–U+007E, upper-case hex) and decoded after unescaping RFC 7230
//! whole-value quoted strings, refusing byte sequences that are not UTF-8 (overlong forms included). Kafka
//! header values are UTF-8 as they are (kafka-protocol-binding §3.2.3).

use std::borrow::Cow;

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::cloudevent::{AttributeValue, CloudEvent, Data, EventError};
use super::media_type::MediaType;

/// Which binding's header rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Http,
    Kafka,
}

impl Binding {
    fn prefix(self) -> &'static str {
        match self {
            Binding::Http => "ce-",
            Binding::Kafka => "ce_",
        }
    }

    /// The attribute a header carries, if it is an attribute header.
    pub fn attribute_of(self, header: &str) -> Option<&str> {
        let prefix = self.prefix();
        let head = header.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix)
            .then(|| &header[prefix.len()..])
    }

    /// Whether `headers` hold a binary-mode CloudEvent (a `specversion` header).
    pub fn is_event<'h>(self, mut headers: impl Iterator<Item = &'h str>) -> bool {
        headers.any(|name| {
            self.attribute_of(name)
                .is_some_and(|a| a.eq_ignore_ascii_case("specversion"))
        })
    }

    /// The event of a binary-mode message: attribute headers among `headers` (name, raw
    /// value), the content type and the body; validated.
    pub fn read<'h>(
        self,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<CloudEvent, EventError> {
        let mut event = CloudEvent::new("", "", "");
        let mut seen: Vec<String> = Vec::new();
        for (header, raw) in headers {
            let Some(name) = self.attribute_of(header) else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(EventError::new(
                    &name,
                    format!("the header `{header}` appears more than once"),
                ));
            }
            if name == "datacontenttype" {
                return Err(EventError::new(
                    "datacontenttype",
                    format!(
                        "travels as the content type in binary mode; a `{header}` header must not be present"
                    ),
                ));
            }
            let value = self.decode(header, raw)?;
            event.set_attribute(&name, AttributeValue::String(value))?;
            seen.push(name);
        }
        for required in ["specversion", "id", "source", "type"] {
            if !seen.iter().any(|s| s == required) {
                return Err(EventError::new(
                    required,
                    format!(
                        "is required: a binary-mode CloudEvent needs a `{}{required}` header",
                        self.prefix()
                    ),
                ));
            }
        }
        let media_type = match content_type {
            Some(ct) => {
                event.set_datacontenttype(Some(ct.to_owned()));
                Some(
                    MediaType::parse(ct)
                        .map_err(|e| EventError::new("datacontenttype", e.to_string()))?,
                )
            }
            None => None,
        };
        event.validate()?;
        event.set_data(Data::from_body(body, media_type.as_ref())?);
        Ok(event)
    }

    fn decode(self, header: &str, raw: &[u8]) -> Result<String, EventError> {
        let not_utf8 = || {
            EventError::new(
                header,
                "the header value is not UTF-8 (percent-encode what is not printable ASCII)",
            )
        };
        let text = std::str::from_utf8(raw).map_err(|_| not_utf8())?;
        match self {
            Binding::Kafka => Ok(text.to_owned()),
            Binding::Http => percent_decode_str(&unquote(text))
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|_| {
                    EventError::new(
                        header,
                        format!("{text:?} percent-encodes a byte sequence that is not UTF-8"),
                    )
                }),
        }
    }

    /// The attribute headers of `event` (all but `datacontenttype`), names prefixed, values
    /// encoded for the binding.
    pub fn write(self, event: &CloudEvent) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(6 + event.extensions().len());
        let mut put = |name: &str, value: &str| {
            let value = match self {
                Binding::Http => utf8_percent_encode(value, HTTP_ESCAPED).to_string(),
                Binding::Kafka => value.to_owned(),
            };
            out.push((format!("{}{name}", self.prefix()), value));
        };
        put("specversion", event.specversion());
        put("id", event.id());
        put("source", event.source());
        put("type", event.ty());
        if let Some(subject) = event.subject() {
            put("subject", subject);
        }
        if let Some(time) = event.time() {
            put("time", time.as_str());
        }
        if let Some(schema) = event.dataschema() {
            put("dataschema", schema);
        }
        for (name, value) in event.extensions() {
            put(name, &value.canonical());
        }
        out
    }
}

/// The content type a binary-mode message carries: `datacontenttype`, or `application/json`
/// for JSON data without one (json-format §3.1.2: the implied type is made explicit when the
/// event changes format), `application/protobuf` for a Protobuf message (protobuf-format §3),
/// none without data.
pub fn content_type(event: &CloudEvent) -> Option<&str> {
    match (event.datacontenttype(), event.data()) {
        (Some(ct), _) => Some(ct),
        (None, Some(data)) if data.is_json() => Some("application/json"),
        (None, Some(Data::Proto { .. })) => Some("application/protobuf"),
        (None, _) => None,
    }
}

/// What HTTP header values percent-encode besides everything outside ASCII: controls, space,
/// `"` and `%`.
const HTTP_ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// RFC 7230 §3.2.6, as older senders quoted whole values: a value that is one quoted-string
/// loses its quotes, and `\x` inside it is `x`. A `"` anywhere else is part of the value (the
/// conformance material sends `{"othervalue": 5}` as it is).
fn unquote(text: &str) -> Cow<'_, str> {
    let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => return Cow::Borrowed(text),
            },
            '"' => return Cow::Borrowed(text),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
