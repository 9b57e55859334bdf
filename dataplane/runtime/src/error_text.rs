//! An error and its causes as one line for a person to read.

use std::error::Error;

/// `err` followed by each of its causes, joined with `: `, skipping a cause whose text is
/// already part of the line (many errors put their source in their own message as well, and a
/// user should not read `No such file or directory` twice).
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Repeats {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the link config")]
    struct Quiet(#[source] Repeats);

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = Repeats {
            path: "/etc/fiso/link.yaml",
            source: io(),
        };
        assert_eq!(
            chain(&err),
            format!("reading /etc/fiso/link.yaml: {}", io())
        );
        let err = Quiet(err);
        assert_eq!(
            chain(&err),
            format!("the link config: reading /etc/fiso/link.yaml: {}", io())
        );
    }
}
