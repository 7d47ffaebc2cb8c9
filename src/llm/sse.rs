//! A bounded Server-Sent Events parser (the WHATWG event-stream format) over raw bytes.
//!
//! Hand-written rather than taken from a crate because the client must cap memory per line
//! and per event: an upstream that never sends a newline must not grow a buffer forever.

/// One dispatched event. OpenAI only uses `data`; `event` is kept so an `event: error`
/// frame can be recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SseError {
    #[error("an event-stream line is longer than {0} bytes")]
    LineTooLong(usize),
    #[error("an event is larger than {0} bytes")]
    EventTooLarge(usize),
    #[error("the event stream is not valid UTF-8")]
    InvalidUtf8,
}

/// Incremental parser: feed network chunks as they come, collect complete events.
#[derive(Debug)]
pub(crate) struct SseParser {
    max_line: usize,
    max_event: usize,
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
    at_start: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

impl SseParser {
    pub fn new(max_line: usize, max_event: usize) -> Self {
        SseParser {
            max_line,
            max_event,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            has_data: false,
            event: None,
        }
    }

    /// Consumes `bytes`, appending every event completed by them to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.push_partial(bytes)?;
                    break;
                }
                Some(i) => {
                    self.push_partial(&bytes[..i])?;
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, out)?;
                    // Reuse the allocation for the next line.
                    self.line = line;
                    self.line.clear();
                    if bytes[i] == b'\r' {
                        match bytes.get(i + 1) {
                            Some(b'\n') => bytes = &bytes[i + 2..],
                            Some(_) => bytes = &bytes[i + 1..],
                            None => {
                                self.after_cr = true;
                                bytes = &[];
                            }
                        }
                    } else {
                        bytes = &bytes[i + 1..];
                    }
                }
            }
        }
        Ok(())
    }

    /// End of input. The spec drops an unterminated event, but servers that end with
    /// `data: [DONE]` and no blank line exist, so a pending line and event are dispatched.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn push_partial(&mut self, part: &[u8]) -> Result<(), SseError> {
        if self.line.len() + part.len() > self.max_line {
            return Err(SseError::LineTooLong(self.max_line));
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        if self.at_start {
            self.at_start = false;
            line = line.strip_prefix('\u{FEFF}').unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.starts_with(':') {
            // A comment: keep-alives from proxies and servers.
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    return Err(SseError::EventTooLarge(self.max_event));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            // id and retry only matter to a reconnecting EventSource; a chat completion
            // cannot be resumed, so they are ignored.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut p = SseParser::new(1024, 4096);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out)?;
        }
        p.finish(&mut out)?;
        Ok(out)
    }

    fn datas(chunks: &[&[u8]]) -> Vec<String> {
        parse_chunks(chunks)
            .unwrap()
            .into_iter()
            .map(|e| e.data)
            .collect()
    }

    #[test]
    fn simple_events() {
        assert_eq!(
            datas(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]),
            vec!["{\"a\":1}", "[DONE]"]
        );
    }

    #[test]
    fn lines_split_across_chunks_at_every_position() {
        let input = b"data: hello\n\ndata: world\r\n\r\n: ping\n\ndata: [DONE]\n\n";
        for i in 0..input.len() {
            for j in i..input.len() {
                let got = datas(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, vec!["hello", "world", "[DONE]"], "split at {i},{j}");
            }
        }
    }

    #[test]
    fn crlf_and_lone_cr_line_endings() {
        assert_eq!(
            datas(&[b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]),
            vec!["a", "b", "c"]
        );
        // A CR at the end of one chunk and LF at the start of the next is one line end.
        assert_eq!(datas(&[b"data: a\r", b"\n\r", b"\n"]), vec!["a"]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        assert_eq!(
            datas(&[b": keep-alive\n\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n"]),
            vec!["x"]
        );
        assert!(datas(&[b": only a comment\n\n\n\n"]).is_empty());
    }

    #[test]
    fn multi_line_data_joins_with_newline_and_space_is_optional() {
        assert_eq!(
            datas(&[b"data: first\ndata:second\ndata\ndata:  two spaces\n\n"]),
            vec!["first\nsecond\n\n two spaces"]
        );
    }

    #[test]
    fn event_name_is_kept_for_one_event() {
        let ev = parse_chunks(&[b"event: error\ndata: {}\n\ndata: y\n\n"]).unwrap();
        assert_eq!(ev[0].event.as_deref(), Some("error"));
        assert_eq!(ev[1].event, None);
    }

    #[test]
    fn unterminated_last_event_is_still_delivered() {
        assert_eq!(datas(&[b"data: a\n\ndata: [DONE]"]), vec!["a", "[DONE]"]);
    }

    #[test]
    fn bom_at_start_is_stripped() {
        assert_eq!(datas(&["\u{FEFF}data: a\n\n".as_bytes()]), vec!["a"]);
    }

    #[test]
    fn oversized_line_is_an_error_even_without_newline() {
        let big = vec![b'a'; 2000];
        assert_eq!(
            parse_chunks(&[b"data: ", &big]),
            Err(SseError::LineTooLong(1024))
        );
        // Split across many small chunks too.
        let mut p = SseParser::new(1024, 4096);
        let mut out = Vec::new();
        let mut res = Ok(());
        for _ in 0..2000 {
            res = p.feed(b"a", &mut out);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(SseError::LineTooLong(1024)));
    }

    #[test]
    fn oversized_event_is_an_error() {
        let line = format!("data: {}\n", "b".repeat(1000));
        let many = line.repeat(5);
        assert_eq!(
            parse_chunks(&[many.as_bytes()]),
            Err(SseError::EventTooLarge(4096))
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        assert_eq!(
            parse_chunks(&[b"data: \xff\xfe\n\n"]),
            Err(SseError::InvalidUtf8)
        );
    }

    #[test]
    fn multibyte_characters_split_across_chunks() {
        let s = "data: héllo wörld ✓\n\n".as_bytes();
        for i in 0..s.len() {
            assert_eq!(datas(&[&s[..i], &s[i..]]), vec!["héllo wörld ✓"]);
        }
    }
}
