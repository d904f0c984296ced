//! Fuzz check for the HTTP/1.1 message reader (`vxtap::http::wire`): requests as any local
//! client of the Docker plugin socket may send them, answers as the Docker engine or an etcd
//! endpoint may send them.
//!
//! Input: the first byte's low bit picks requests (0) or answers (1); the rest is what
//! arrives on one connection, read as messages one after another (a kept-alive connection,
//! or pipelining) until one fails or the bytes run out.
//!
//! Properties:
//! - nothing panics;
//! - the messages, bodies and the error that ends them are the same whether the bytes are
//!   read from one buffer or one byte at a time (a `BufReader` of capacity 1), so nothing
//!   depends on where reads split the stream;
//! - every request head has a token method, a target of printable ASCII starting with `/`,
//!   and a length or chunked framing (never "until close");
//! - every body is within the cap, and a `Content-Length` body is exactly that long;
//! - every message consumes bytes: a parse never yields a message from nothing.

use std::io::{self, BufRead, BufReader};
use vxtap::http::wire::{self, Framing, RequestHead, ResponseHead};

/// The body cap used: small, so that caps are hit often.
const MAX_BODY: usize = 4096;
/// The fewest bytes a message takes: the shortest start line (an answer's: a request line
/// is at least `G / HTTP/1.1`), a bare LF, and the bare LF of the empty line.
const SHORTEST: usize = "HTTP/1. 100\n\n".len();
/// At most this many messages per input, to bound the time one input takes.
const MAX_MESSAGES: usize = 64;

/// One message read.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

impl Head {
    fn framing(&self) -> Framing {
        match self {
            Head::Request(head) => head.framing,
            Head::Response(head) => head.framing,
        }
    }
}

/// Everything a connection's bytes yield: the messages, then the error that ended them
/// (`None` if the bytes ran out between messages).
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    messages: Vec<(Head, Vec<u8>)>,
    end: Option<(io::ErrorKind, String)>,
}

fn read_all<R: BufRead>(reader: &mut R, responses: bool) -> Reading {
    let mut reading = Reading {
        messages: Vec::new(),
        end: None,
    };
    while reading.messages.len() < MAX_MESSAGES {
        match reader.fill_buf() {
            Ok([]) => break,
            Ok(_) => {}
            Err(e) => {
                reading.end = Some((e.kind(), e.to_string()));
                break;
            }
        }
        let head = if responses {
            wire::read_response_head(reader).map(Head::Response)
        } else {
            wire::read_request_head(reader).map(Head::Request)
        };
        let message = head.and_then(|head| {
            let body = wire::read_body(reader, head.framing(), MAX_BODY)?;
            Ok((head, body))
        });
        match message {
            Ok(message) => reading.messages.push(message),
            Err(e) => {
                reading.end = Some((e.kind(), e.to_string()));
                break;
            }
        }
    }
    reading
}

/// Checks what `data` describes; panics when a property breaks.
pub fn http_messages(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let responses = mode & 1 == 1;
    let whole = read_all(&mut &bytes[..], responses);
    let trickled = read_all(&mut BufReader::with_capacity(1, bytes), responses);
    assert_eq!(
        whole, trickled,
        "the result depends on how reads split the bytes"
    );

    let mut consumed_at_least = 0;
    for (head, body) in &whole.messages {
        assert!(body.len() <= MAX_BODY, "a body over the cap");
        if let Framing::Length(length) = head.framing() {
            assert_eq!(body.len() as u64, length, "a body unlike its length");
        }
        if let Head::Request(request) = head {
            assert!(
                !request.method.is_empty()
                    && request
                        .method
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b)),
                "method {:?}",
                request.method
            );
            assert!(
                request.target.starts_with('/')
                    && request.target.bytes().all(|b| b.is_ascii_graphic()),
                "target {:?}",
                request.target
            );
            assert_ne!(request.framing, Framing::UntilClose);
        }
        consumed_at_least += SHORTEST + body.len();
    }
    assert!(
        consumed_at_least <= bytes.len(),
        "{} messages from {} bytes",
        whole.messages.len(),
        bytes.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_property_holds_on_hand_made_streams() {
        http_messages(b"\0POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /b HTTP/1.1\r\n\r\n");
        http_messages(
            b"\0POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        );
        http_messages(b"\x01HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\nrest");
        http_messages(b"\x01HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab");
        http_messages(b"\0GET / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n");
        http_messages(b"");
        http_messages(b"\0");
    }
}
