//! `text/event-stream` at the byte level.
//!
//! The relay forwards SSE bytes untouched. Only when a response stage asked to see a message of
//! this stream does it split the stream into events, and then it keeps each event's raw bytes:
//! `id:`, `event:`, `retry:` lines, empty priming events and `:` keep-alive comments pass byte for
//! byte, and only the event a stage rewrote is re-serialised. Parsing crates hand out decoded
//! fields and drop that framing, which is why this small splitter exists.

use bytes::{Bytes, BytesMut};

/// Splits a byte stream into complete raw events (each including its terminating blank line).
#[derive(Debug, Default)]
pub struct EventSplitter {
    buf: BytesMut,
    /// Where scanning resumes, and where the current line started.
    scan: usize,
    line_start: usize,
}

impl EventSplitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that do not yet form a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if the buffered bytes hold one.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let buf = &self.buf[..];
        let mut i = self.scan;
        while i < buf.len() {
            let terminator = match buf[i] {
                b'\n' => 1,
                b'\r' if i + 1 < buf.len() => {
                    if buf[i + 1] == b'\n' {
                        2
                    } else {
                        1
                    }
                }
                // A CR at the end of what we have may be half of a CRLF: wait for the next byte.
                b'\r' => break,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let empty_line = i == self.line_start;
            i += terminator;
            self.line_start = i;
            if empty_line {
                self.scan = 0;
                self.line_start = 0;
                return Some(self.buf.split_to(i).freeze());
            }
        }
        self.scan = i;
        None
    }

    /// The message of the next complete event that carries one (its non-empty `data`), skipping
    /// priming events and keep-alive comments.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        while let Some(event) = self.next_event() {
            if let Some(data) = event_data(&event).filter(|d| !d.is_empty()) {
                return Some(data);
            }
        }
        None
    }

    /// Whatever is left when the stream ends (an unterminated last event), to be passed on as is.
    pub fn take_rest(&mut self) -> Bytes {
        self.scan = 0;
        self.line_start = 0;
        self.buf.split().freeze()
    }
}

fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let mut skip = end;
        if skip < rest.len() {
            skip += if rest[skip] == b'\r' && rest.get(skip + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
        }
        rest = &rest[skip..];
        Some(line)
    })
}

fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if line.first() == Some(&b':') || line.is_empty() {
        return None;
    }
    match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let mut value = &line[colon + 1..];
            if value.first() == Some(&b' ') {
                value = &value[1..];
            }
            Some((&line[..colon], value))
        }
        None => Some((line, &[][..])),
    }
}

/// Whether `headers` say the body is an SSE stream (`text/event-stream`, in any case, with or
/// without parameters).
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The event's data: its `data:` lines joined with `\n`, or `None` if it has none.
pub fn event_data(raw: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for (name, value) in lines(raw).filter_map(field) {
        if name == b"data" {
            match &mut data {
                None => data = Some(value.to_vec()),
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
            }
        }
    }
    data
}

/// The event's `id:` (the last one, as the SSE rules say), if it has one that a `Last-Event-ID`
/// header can carry: an id with a NUL is ignored, as browsers do.
pub fn event_id(raw: &[u8]) -> Option<&[u8]> {
    lines(raw)
        .filter_map(field)
        .filter(|(name, value)| *name == b"id" && !value.contains(&0))
        .map(|(_, value)| value)
        .last()
}

/// The event with its data replaced by `data` (one `data:` line, which JSON always fits in), keeping
/// every other line (`id:`, `event:`, `retry:`, comments) where it was.
pub fn replace_data(raw: &[u8], data: &[u8]) -> Bytes {
    debug_assert!(!data.contains(&b'\n'), "compact JSON has no newline");
    let mut out = BytesMut::with_capacity(raw.len() + data.len());
    let mut wrote = false;
    for line in lines(raw) {
        if line.is_empty() {
            continue;
        }
        if field(line).is_some_and(|(name, _)| name == b"data") {
            if !wrote {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data);
                out.extend_from_slice(b"\n");
                wrote = true;
            }
        } else {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
        }
    }
    if !wrote {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_are_known_by_their_content_type() {
        let with = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            is_event_stream(&h)
        };
        assert!(with("text/event-stream"));
        assert!(with(" Text/Event-Stream; charset=utf-8"));
        assert!(!with("application/json"));
        assert!(!with("text/event"));
        assert!(!is_event_stream(&http::HeaderMap::new()));
    }

    #[test]
    fn messages_skip_events_without_data() {
        let mut s = EventSplitter::default();
        s.push(b": keep-alive\n\nid: 1\ndata:\n\ndata: {\"a\":1}\n\nretry: 5\n\ndata: x");
        assert_eq!(s.next_message().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(s.next_message(), None);
        s.push(b"\n\n");
        assert_eq!(s.next_message().as_deref(), Some(&b"x"[..]));
    }

    fn split_all(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut s = EventSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c);
            while let Some(e) = s.next_event() {
                out.push(e.to_vec());
            }
        }
        (out, s.take_rest().to_vec())
    }

    #[test]
    fn events_keep_their_bytes_across_any_chunking() {
        let stream: &[u8] = b"id: 1\ndata: \n\n: keep-alive\n\nretry: 500\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\nid: 9\rdata: x\r\rdata: tail";
        let want: Vec<&[u8]> = vec![
            b"id: 1\ndata: \n\n",
            b": keep-alive\n\n",
            b"retry: 500\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\n",
            b"id: 9\rdata: x\r\r",
        ];
        // Every split point, including inside CRLF pairs.
        for cut in 0..stream.len() {
            let (events, rest) = split_all(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(events, want, "cut at {cut}");
            assert_eq!(rest, b"data: tail", "cut at {cut}");
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (events, _) = split_all(&bytes);
        assert_eq!(events, want);
    }

    #[test]
    fn data_fields() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"data: {\"x\":1}\n\n", Some(b"{\"x\":1}")),
            (b"data:nospace\n\n", Some(b"nospace")),
            (b"data: a\ndata: b\n\n", Some(b"a\nb")),
            (b"data\n\n", Some(b"")),
            (b"id: 4\ndata: \n\n", Some(b"")),
            (b": comment\n\n", None),
            (b"event: ping\n\n", None),
            (b"data:  two spaces\r\n\r\n", Some(b" two spaces")),
        ];
        for (raw, want) in cases {
            assert_eq!(
                event_data(raw).as_deref(),
                *want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn event_ids() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"id: 4\ndata: {}\n\n", Some(b"4")),
            (b"id:a\nid: b\ndata: x\n\n", Some(b"b")),
            (b"data: x\n\n", None),
            (b"id\ndata: x\n\n", Some(b"")),
            (b"id: a\0b\ndata: x\n\n", None),
            (b": id: 7\n\n", None),
        ];
        for (raw, want) in cases {
            assert_eq!(event_id(raw), *want, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn replacing_data_keeps_other_lines() {
        let raw = b"event: message\r\nid: 7\r\ndata: {\"old\":\r\ndata: 1}\r\n\r\n";
        let new = replace_data(raw, b"{\"new\":2}");
        assert_eq!(&new[..], b"event: message\nid: 7\ndata: {\"new\":2}\n\n");
        assert_eq!(event_data(&new).as_deref(), Some(&b"{\"new\":2}"[..]));
    }
}
