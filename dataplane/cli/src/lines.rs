//! Splitting a byte stream into text lines with a bound: a line longer than the bound keeps its
//! head and says how much was cut, so a program writing megabytes without a newline (or a log
//! file holding such a line) costs at most the bound in memory.

/// The longest line kept whole, in bytes.
pub const MAX_LINE: usize = 16 * 1024;

/// One line, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The text (invalid UTF-8 replaced), at most `max` bytes of the original.
    pub text: String,
    /// Bytes left out after `text`.
    pub cut: u64,
}

impl Line {
    /// The text, with a note when it was cut.
    pub fn display(&self) -> String {
        if self.cut == 0 {
            self.text.clone()
        } else {
            format!("{} … [{} more bytes cut]", self.text, self.cut)
        }
    }
}

/// Feed it chunks as they arrive; it hands out complete lines.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    head: Vec<u8>,
    cut: u64,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter {
            max,
            head: Vec::new(),
            cut: 0,
        }
    }

    /// Takes `chunk`, calling `line` for every line it completes.
    pub fn push(&mut self, mut chunk: &[u8], mut line: impl FnMut(Line)) {
        while !chunk.is_empty() {
            let end = chunk.iter().position(|&b| b == b'\n');
            let part = &chunk[..end.unwrap_or(chunk.len())];
            let room = self.max - self.head.len();
            let kept = part.len().min(room);
            self.head.extend_from_slice(&part[..kept]);
            self.cut += (part.len() - kept) as u64;
            match end {
                Some(at) => {
                    line(self.take());
                    chunk = &chunk[at + 1..];
                }
                None => break,
            }
        }
    }

    /// The last line, when the stream ended without a newline.
    pub fn finish(&mut self) -> Option<Line> {
        (!self.head.is_empty() || self.cut > 0).then(|| self.take())
    }

    fn take(&mut self) -> Line {
        if self.head.last() == Some(&b'\r') && self.cut == 0 {
            self.head.pop();
        }
        let text = String::from_utf8_lossy(&self.head).into_owned();
        self.head.clear();
        Line {
            text,
            cut: std::mem::take(&mut self.cut),
        }
    }
}

/// Every line of `reader`, bounded as [`LineSplitter`] bounds them.
pub fn read_lines(
    mut reader: impl std::io::Read,
    mut line: impl FnMut(Line),
) -> std::io::Result<()> {
    let mut splitter = LineSplitter::default();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => splitter.push(&buf[..n], &mut line),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(last) = splitter.finish() {
        line(last);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        out.extend(s.finish());
        out
    }

    fn line(text: &str, cut: u64) -> Line {
        Line {
            text: text.to_owned(),
            cut,
        }
    }

    #[test]
    fn lines_across_chunks_with_crlf_and_a_last_line_without_newline() {
        assert_eq!(
            split(100, &[b"he", b"llo\r\nwor", b"ld\n\nlast"]),
            vec![
                line("hello", 0),
                line("world", 0),
                line("", 0),
                line("last", 0)
            ]
        );
        assert_eq!(split(100, &[b"a\n"]), vec![line("a", 0)]);
    }

    #[test]
    fn a_long_line_keeps_its_head_and_counts_the_rest() {
        let long = vec![b'x'; 10_000];
        let got = split(8, &[b"abc", &long, b"def\nnext\n"]);
        assert_eq!(got, vec![line("abcxxxxx", 9_998), line("next", 0)]);
        assert_eq!(got[0].display(), "abcxxxxx … [9998 more bytes cut]");
        // Only the bound is held, however long the line grows.
        let mut s = LineSplitter::new(8);
        for _ in 0..1000 {
            s.push(&long, |_| panic!("no newline yet"));
        }
        assert!(s.head.capacity() < 64);
        assert_eq!(s.finish().unwrap().cut, 10_000_000 - 8);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(split(100, &[b"a\xffb\n"]), vec![line("a\u{fffd}b", 0)]);
    }
}
