//! Terminal styling: colour only when the stream is a TTY (and `NO_COLOR` is unset).

use console::Style;

pub fn error(s: &str) -> String {
    Style::new()
        .red()
        .bold()
        .for_stderr()
        .apply_to(s)
        .to_string()
}

pub fn warning(s: &str) -> String {
    Style::new().yellow().bold().apply_to(s).to_string()
}

pub fn ok(s: &str) -> String {
    Style::new().green().bold().apply_to(s).to_string()
}

pub fn dim(s: &str) -> String {
    Style::new().dim().apply_to(s).to_string()
}
