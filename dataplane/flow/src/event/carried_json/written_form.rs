//! Whether a JSON text is exactly what serde_json would write for the value it parses to.
//!
//! One pass over the bytes, without building anything: this runs for every event a flow
//! carries, where serde_json's own walk (a visitor per value, a map per number with
//! `arbitrary_precision`) cost as much as the rest of reading the record. The grammar is
//! RFC 8259's, with nothing serde_json refuses accepted: a text this accepts parses, and a
//! parse writes it back unchanged. Whatever it refuses is parsed, which decides.

use smallvec::SmallVec;

use crate::event::json::plain_decimal;

/// serde_json's nesting limit: a 128th level is refused by a parse.
pub(super) const MAX_DEPTH: usize = 127;

/// `text` is valid JSON, compact, without escapes, its numbers in their written form, no object
/// with a repeated key, and, when it is an object, without `specversion` (a structured
/// CloudEvent).
pub(super) fn is_written_form(text: &[u8]) -> bool {
    Walk {
        text,
        at: 0,
        open: SmallVec::new(),
        keys: SmallVec::new(),
    }
    .document()
    .is_some()
}

/// A container being read.
enum Open {
    Array,
    /// An object, whose keys are `Walk::keys[from..]`.
    Object {
        from: usize,
    },
}

struct Walk<'t> {
    text: &'t [u8],
    at: usize,
    open: SmallVec<[Open; 16]>,
    /// The keys of the open objects, innermost last.
    keys: SmallVec<[&'t [u8]; 32]>,
}

impl<'t> Walk<'t> {
    /// `None` at the first byte that is not in the written form.
    fn document(&mut self) -> Option<()> {
        loop {
            self.value()?;
            // After a value: the next one of its container, or the containers it closes.
            loop {
                match self.open.last() {
                    None => return (self.at == self.text.len()).then_some(()),
                    Some(Open::Array) => match self.next()? {
                        b',' => break,
                        b']' => {
                            self.open.pop();
                        }
                        _ => return None,
                    },
                    Some(&Open::Object { from }) => match self.next()? {
                        b',' => {
                            self.key()?;
                            break;
                        }
                        b'}' => self.close_object(from)?,
                        _ => return None,
                    },
                }
            }
        }
    }

    /// One value; an array or object is opened, and its first member read up to its value.
    /// An empty one is read whole.
    fn value(&mut self) -> Option<()> {
        match self.next()? {
            b'"' => self.string().map(drop),
            b'[' => {
                self.enter(Open::Array)?;
                if self.text.get(self.at) == Some(&b']') {
                    self.at += 1;
                    self.open.pop();
                    return Some(());
                }
                self.value()
            }
            b'{' => {
                let from = self.keys.len();
                self.enter(Open::Object { from })?;
                if self.text.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    self.open.pop();
                    return Some(());
                }
                self.key()?;
                self.value()
            }
            b't' => self.literal(b"rue"),
            b'f' => self.literal(b"alse"),
            b'n' => self.literal(b"ull"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<u8> {
        let b = *self.text.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn enter(&mut self, open: Open) -> Option<()> {
        if self.open.len() == MAX_DEPTH {
            return None;
        }
        self.open.push(open);
        Some(())
    }

    /// A member's key and its `:`.
    fn key(&mut self) -> Option<()> {
        if self.next()? != b'"' {
            return None;
        }
        let key = self.string()?;
        if self.open.len() == 1 && key == b"specversion" {
            return None;
        }
        self.keys.push(key);
        (self.next()? == b':').then_some(())
    }

    /// A parse keeps the last value of a repeated key in the first one's place.
    fn close_object(&mut self, from: usize) -> Option<()> {
        let keys = &mut self.keys[from..];
        keys.sort_unstable();
        if keys.windows(2).any(|pair| pair[0] == pair[1]) {
            return None;
        }
        self.keys.truncate(from);
        self.open.pop();
        Some(())
    }

    /// The rest of a string after its opening quote: UTF-8 without control characters or
    /// escapes. serde_json writes some escapes differently from how they may have come (`\/`,
    /// `\u00e9`); without them, the next `"` closes the string (and an escaped `"` taken for
    /// the close leaves its backslash in the content).
    fn string(&mut self) -> Option<&'t [u8]> {
        let rest = &self.text[self.at..];
        let close = memchr::memchr(b'"', rest)?;
        let content = &rest[..close];
        // Without an early exit, so that it runs a vector at a time: strings are most of a
        // payload's bytes.
        if content
            .iter()
            .fold(false, |refused, &b| refused | (b < 0x20) | (b == b'\\'))
        {
            return None;
        }
        std::str::from_utf8(content).ok()?;
        self.at += close + 1;
        Some(content)
    }

    fn literal(&mut self, rest: &[u8]) -> Option<()> {
        let end = self.at + rest.len();
        (self.text.get(self.at..end)? == rest).then(|| self.at = end)
    }

    /// The rest of a number after its first byte. An exponent is rewritten by a parse (not
    /// worth following), and a fraction is unless the plain-decimal writer leaves it unchanged.
    fn number(&mut self) -> Option<()> {
        let start = self.at - 1;
        let first = match self.text[start] {
            b'-' => self.next()?,
            digit => digit,
        };
        let digits = |walk: &mut Self| {
            let from = walk.at;
            while walk.text.get(walk.at).is_some_and(u8::is_ascii_digit) {
                walk.at += 1;
            }
            walk.at - from
        };
        match first {
            b'0' => {}
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        let fraction = self.text.get(self.at) == Some(&b'.');
        if fraction {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        if matches!(self.text.get(self.at), Some(b'e' | b'E')) {
            return None;
        }
        // Without a trailing zero, a fraction is the plain decimal of its digits: the writer
        // either prints these very digits (when a double holds them) or keeps the text. Only a
        // trailing zero may be dropped, and whether it is depends on the double.
        if !fraction || self.text[self.at - 1] != b'0' {
            return Some(());
        }
        // ASCII digits, a sign and a point.
        let text = std::str::from_utf8(&self.text[start..self.at]).ok()?;
        plain_decimal(text)
            .is_none_or(|plain| plain == text)
            .then_some(())
    }
}
