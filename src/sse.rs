//! A server-sent event stream (HTML Living Standard, "Server-sent events", §9.2.6 "Interpreting
//! an event stream"), read incrementally: bytes go in as the upstream sends them, complete
//! events come out as the exact bytes that made them, so every event but the one the filter
//! rewrites is passed on byte for byte, as soon as its blank line has arrived.
//!
//! Lines end in CRLF, LF or CR; an event ends at an empty line. A CR at the end of a chunk may
//! be the first half of a CRLF: the event it ends is complete at once, and the LF that may follow
//! in the next chunk is passed on as bytes of their own (a blank line with no fields, which no
//! client dispatches).

/// The bytes of an event stream not yet passed on: an event still arriving.
#[derive(Debug, Default)]
pub struct EventStream {
    buf: Vec<u8>,
    /// How far `buf` has been scanned for the end of its first event.
    scanned: usize,
    /// Whether the current line has any byte yet (scanning state at `scanned`).
    line_has_bytes: bool,
    /// The last byte scanned was a CR: an LF now completes that line end.
    after_cr: bool,
    /// The last event handed out ended with that CR: its LF, should it come, is bytes of its
    /// own.
    event_ended_in_cr: bool,
}

impl EventStream {
    pub fn new() -> EventStream {
        EventStream::default()
    }

    /// Appends bytes as they came from the upstream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The bytes of the next complete event (its blank line included), if one has arrived.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        while self.scanned < self.buf.len() {
            // Skip the rest of the line at once: only line ends matter.
            let rest = &self.buf[self.scanned..];
            let text = rest
                .iter()
                .position(|b| *b == b'\n' || *b == b'\r')
                .unwrap_or(rest.len());
            if text > 0 {
                self.scanned += text;
                self.after_cr = false;
                self.line_has_bytes = true;
                continue;
            }
            let byte = self.buf[self.scanned];
            self.scanned += 1;
            let line_ended = match byte {
                b'\n' if self.after_cr => {
                    // The second half of a CRLF whose CR already ended the line.
                    self.after_cr = false;
                    if self.scanned == 1 && self.event_ended_in_cr {
                        // That CR ended the previous event: this LF is bytes of its own.
                        return Some(self.take(1));
                    }
                    continue;
                }
                b'\n' => true,
                b'\r' => {
                    self.after_cr = true;
                    true
                }
                _ => false, // skipped above
            };
            if !line_ended {
                continue;
            }
            if !self.line_has_bytes {
                // An empty line: the event ends here; the LF of a CRLF at this point, if it
                // is already here, belongs to it.
                let mut end = self.scanned;
                if byte == b'\r' && self.buf.get(end) == Some(&b'\n') {
                    end += 1;
                    self.after_cr = false;
                }
                return Some(self.take(end));
            }
            self.line_has_bytes = false;
        }
        None
    }

    fn take(&mut self, end: usize) -> Vec<u8> {
        let rest = self.buf.split_off(end);
        self.event_ended_in_cr = self.after_cr && end > 0 && self.buf.get(end - 1) == Some(&b'\r');
        self.scanned = 0;
        self.line_has_bytes = false;
        std::mem::replace(&mut self.buf, rest)
    }

    /// What has arrived of an event still incomplete.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Those bytes.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Drops what has arrived of the event still arriving, still looking for its end: the
    /// next event out is the rest of it.
    pub fn discard_pending(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.event_ended_in_cr = false;
    }

    /// Whatever is left when the stream ends (an event without its blank line, which clients
    /// discard; the filter still reads it).
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.take(self.buf.len())
    }
}

/// One field line of an event, as the bytes it was sent as (line end excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A `data` field's value (one leading space removed).
    Data(&'a [u8]),
    /// Any other field, or a comment: kept as sent.
    Other(&'a [u8]),
}

/// The lines of an event's bytes, empty lines skipped, a leading byte order mark ignored.
pub fn lines(event: &[u8]) -> Vec<Line<'_>> {
    let event = event.strip_prefix("\u{feff}".as_bytes()).unwrap_or(event);
    let mut out = Vec::new();
    let mut rest = event;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let mut next = end;
        if rest.get(next) == Some(&b'\r') && rest.get(next + 1) == Some(&b'\n') {
            next += 1;
        }
        rest = rest.get(next + 1..).unwrap_or_default();
        if line.is_empty() {
            continue;
        }
        out.push(match line.strip_prefix(b"data") {
            Some([]) => Line::Data(b""),
            Some([b':', value @ ..]) => Line::Data(value.strip_prefix(b" ").unwrap_or(value)),
            _ => Line::Other(line),
        });
    }
    out
}

/// The data of an event (its `data` values joined by LF), `None` when it has none: a client
/// dispatches nothing then.
pub fn data(lines: &[Line<'_>]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in lines {
        if let Line::Data(value) = line {
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            }
        }
    }
    data
}

/// An event with the same fields in the same order as `lines`, its data replaced by `data`
/// (one `data` line per line of it, which a client joins back with LF), at the place of the
/// first data line.
pub fn with_data(lines: &[Line<'_>], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut written = false;
    let write_data = |out: &mut Vec<u8>| {
        for part in data.split(|b| *b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(part);
            out.push(b'\n');
        }
    };
    for line in lines {
        match line {
            Line::Data(_) if written => {}
            Line::Data(_) => {
                write_data(&mut out);
                written = true;
            }
            Line::Other(bytes) => {
                out.extend_from_slice(bytes);
                out.push(b'\n');
            }
        }
    }
    if !written {
        write_data(&mut out);
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event out of a stream fed in `chunks`.
    fn events(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut stream = EventStream::new();
        let mut out = Vec::new();
        for chunk in chunks {
            stream.push(chunk);
            while let Some(event) = stream.next_event() {
                out.push(event);
            }
        }
        out
    }

    fn text(events: Vec<Vec<u8>>) -> Vec<String> {
        events
            .into_iter()
            .map(|e| String::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn splits_events_at_blank_lines_with_every_line_end() {
        for (stream, want) in [
            ("data: a\n\ndata: b\n\n", vec!["data: a\n\n", "data: b\n\n"]),
            (
                "data: a\r\n\r\ndata: b\r\n\r\n",
                vec!["data: a\r\n\r\n", "data: b\r\n\r\n"],
            ),
            ("data: a\r\rdata: b\r\r", vec!["data: a\r\r", "data: b\r\r"]),
            (
                "data: a\n\r\ndata: b\r\n\n",
                vec!["data: a\n\r\n", "data: b\r\n\n"],
            ),
            (
                "id: 1\nevent: message\ndata: a\n\n",
                vec!["id: 1\nevent: message\ndata: a\n\n"],
            ),
            (": keep-alive\n\n", vec![": keep-alive\n\n"]),
        ] {
            assert_eq!(text(events(&[stream.as_bytes()])), want, "{stream:?}");
        }
    }

    #[test]
    fn keeps_an_incomplete_event_until_its_blank_line() {
        let mut stream = EventStream::new();
        stream.push(b"data: a\n\ndata: b");
        assert_eq!(stream.next_event().unwrap(), b"data: a\n\n");
        assert_eq!(stream.next_event(), None);
        assert_eq!(stream.pending_len(), 7);
        stream.push(b"\n");
        assert_eq!(stream.next_event(), None);
        stream.push(b"\n");
        assert_eq!(stream.next_event().unwrap(), b"data: b\n\n");
        assert_eq!(stream.pending_len(), 0);
    }

    #[test]
    fn reads_the_same_events_however_the_stream_is_cut() {
        let stream: &[u8] =
            b"id: 7\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: c\n\ndata: x\r\rdata: y\n\n";
        let whole = events(&[stream]);
        assert_eq!(whole.len(), 4);
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            let mut got = events(&[a, b]);
            // A CR that ended an event at the end of a chunk leaves its LF as bytes of its own.
            let joined: Vec<u8> = got.concat();
            assert_eq!(joined, stream, "cut at {cut}");
            got.retain(|e| e.as_slice() != b"\n");
            let datas: Vec<_> = got.iter().map(|e| data(&lines(e))).collect();
            let want: Vec<_> = whole.iter().map(|e| data(&lines(e))).collect();
            assert_eq!(datas, want, "cut at {cut}");
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes).concat(), stream);
    }

    #[test]
    fn a_cr_at_a_chunk_end_completes_the_event_and_its_lf_passes_alone() {
        let got = text(events(&[b"data: a\r\n\r", b"\ndata: b\r\n\r\n"]));
        assert_eq!(got, vec!["data: a\r\n\r", "\n", "data: b\r\n\r\n"]);
        assert_eq!(data(&lines(b"\n")), None);
    }

    #[test]
    fn joins_multi_line_data_and_skips_comments_and_other_fields() {
        let event =
            b"\xEF\xBB\xBFid: 3\n: a comment\ndata: {\"x\":\ndata:1}\nevent: message\ndata\n\n";
        let lines = lines(event);
        assert_eq!(
            lines,
            vec![
                Line::Other(b"id: 3"),
                Line::Other(b": a comment"),
                Line::Data(b"{\"x\":"),
                Line::Data(b"1}"),
                Line::Other(b"event: message"),
                Line::Data(b""),
            ]
        );
        assert_eq!(data(&lines).unwrap(), b"{\"x\":\n1}\n");
        assert_eq!(data(&super::lines(b"id: 1\nretry: 5\n\n")), None);
        // `database: x` is not a data field; `data:x` is (no space to remove).
        assert_eq!(
            super::lines(b"database: x\n")[0],
            Line::Other(b"database: x")
        );
        assert_eq!(super::lines(b"data:x\n")[0], Line::Data(b"x"));
        assert_eq!(super::lines(b"data:  x\n")[0], Line::Data(b" x"));
    }

    #[test]
    fn rewrites_the_data_in_place_keeping_the_other_fields() {
        let event = b"id: 3\r\nevent: message\r\ndata: {\"old\":\r\ndata: 1}\r\nretry: 10\r\n\r\n";
        let out = with_data(&lines(event), b"{\"new\":\n2}");
        assert_eq!(
            out,
            b"id: 3\nevent: message\ndata: {\"new\":\ndata: 2}\nretry: 10\n\n"
        );
        assert_eq!(data(&lines(&out)).unwrap(), b"{\"new\":\n2}");
        assert_eq!(
            with_data(&lines(b"id: 1\n\n"), b"{}"),
            b"id: 1\ndata: {}\n\n"
        );
    }

    #[test]
    fn hands_over_the_rest_at_the_end_of_the_stream() {
        let mut stream = EventStream::new();
        stream.push(b"data: a\n\ndata: {\"id\":1}");
        assert!(stream.next_event().is_some());
        assert_eq!(stream.take_rest(), b"data: {\"id\":1}");
        assert_eq!(stream.pending_len(), 0);
        assert_eq!(stream.next_event(), None);
    }
}
