//! Echoing values in messages safely: a value taken from a file is quoted with its control and
//! bidirectional characters escaped, and cut after a few dozen characters. Every error that quotes
//! input uses these, wherever it is raised (spec, network, state), so this module depends on nothing.

/// How many characters of a value an error message quotes; the rest is summarised by its length.
pub const MAX_ECHO_CHARS: usize = 80;

/// `value` as an error message quotes it: in double quotes, with control and bidirectional
/// characters escaped (a value must not be able to clear a terminal or reorder the text around it),
/// and cut after [`MAX_ECHO_CHARS`] characters.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => {
            let shown = format!("{:?}", &value[..cut]);
            format!("{}…\" ({} characters)", &shown[..shown.len() - 1], value.chars().count())
        }
    }
}

/// Free text from a parser (which may quote the input) made safe to print: escaped like
/// [`terminal_safe`], and cut after a few lines' worth of characters.
pub(crate) fn escaped(text: &str) -> String {
    const MAX: usize = 4 * MAX_ECHO_CHARS;
    match text.char_indices().nth(MAX) {
        None => terminal_safe(text),
        Some((cut, _)) => terminal_safe(&text[..cut]) + "…",
    }
}

/// `text` with every control and bidirectional-formatting character escaped as Rust writes it
/// (`\u{1b}`, `\u{202e}`), line breaks and tabs kept: a message may quote a file's content, and a
/// terminal must show that content, not obey it.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' | '"' | '\'' | '\\' => out.push(c),
            _ => out.extend(c.escape_debug()),
        }
    }
    out
}
