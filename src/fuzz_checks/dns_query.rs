//! Fuzz check for the DNS resolver's answering logic (`vxtap::dns::decide`): any bytes, as a
//! container (or anything else in an overlay network) can send them to the resolver.
//!
//! Input: the whole input is one message, decided as if it came over UDP and over TCP, with
//! fixed [`Names`]: `web` (one address), `many` (more than fit in 512 bytes), `noaddr` (no
//! address), and reverse names for 10.0.0.2, for 10.0.0.3 (a 255-byte name) and for
//! 10.0.0.9 (a name that is not one).
//!
//! Properties:
//! - nothing panics;
//! - a dropped message has no header or has QR set;
//! - every reply is a well-formed response with the query's ID, at most 512 bytes over
//!   UDP; FORMERR or NOTIMP only for a message that does not read as a query;
//! - every answer reads as a query, echoes its question and carries only records of the
//!   question name: A records hold exactly the addresses `Names` gave, in order, TC set
//!   exactly when some did not fit; a PTR record holds the name `Names` gave;
//! - a forwarded query is exactly what `parse_query` reads, and a name `Names` does not own;
//! - UDP and TCP decide alike, except that TCP answers are never cut.

use std::net::Ipv4Addr;
use vxtap::dns::message::{self, Rcode, CLASS_IN, TYPE_A, TYPE_ANY, TYPE_PTR};
use vxtap::dns::{decide, Decision, Names};

const TTL: u32 = 600;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

/// The names the check's resolver owns.
struct Fixed;

fn long_name() -> String {
    [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".")
}

impl Names for Fixed {
    fn lookup(&self, _client: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
        match name {
            "web" => Some(vec![Ipv4Addr::new(10, 0, 0, 2)]),
            "many" => Some((0..100).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect()),
            "noaddr" => Some(Vec::new()),
            _ => None,
        }
    }

    fn reverse(&self, _client: Ipv4Addr, ip: Ipv4Addr) -> Option<String> {
        match ip.octets() {
            [10, 0, 0, 2] => Some("web.mynet".to_owned()),
            [10, 0, 0, 3] => Some(long_name()),
            [10, 0, 0, 9] => Some("bad..name".to_owned()),
            _ => None,
        }
    }
}

/// Checks what `data` does to the resolver; panics when a property breaks.
pub fn dns_query(data: &[u8]) {
    let udp = decide(data, &Fixed, CLIENT, TTL, message::UDP_LIMIT);
    let tcp = decide(data, &Fixed, CLIENT, TTL, message::TCP_LIMIT);
    check(data, &udp, message::UDP_LIMIT);
    check(data, &tcp, message::TCP_LIMIT);
    match (&udp, &tcp) {
        (Decision::Answer(u), Decision::Answer(t)) => {
            let u = message::parse_response(u).expect("checked above");
            let t = message::parse_response(t).expect("checked above");
            assert!(!t.header.truncated(), "a TCP answer was cut");
            assert_eq!(u.header.truncated(), u.answers.len() < t.answers.len());
            assert_eq!(u.answers[..], t.answers[..u.answers.len()]);
        }
        (udp, tcp) => assert_eq!(udp, tcp, "UDP and TCP decide differently"),
    }
}

fn check(data: &[u8], decision: &Decision, limit: usize) {
    let header = message::Header::parse(data);
    let query = message::parse_query(data);
    match decision {
        Decision::Drop(_) => {
            assert!(header.is_err() || header.is_ok_and(|h| h.is_response()));
        }
        Decision::Forward(forwarded) => {
            let query = query.expect("a forwarded message reads as a query");
            assert_eq!(&query, forwarded);
            let q = &query.question;
            let owned = match message::reverse_address(&q.name) {
                Some(ip) => Fixed.reverse(CLIENT, ip).is_some(),
                None => Fixed.lookup(CLIENT, &q.name).is_some(),
            };
            assert!(
                q.qclass != CLASS_IN || !owned,
                "an owned name was forwarded"
            );
        }
        Decision::Error(rcode, reply) => {
            let response = reply_to(data, reply, limit);
            assert_eq!(response.header.rcode(), *rcode as u8);
            assert!(response.answers.is_empty());
            match rcode {
                Rcode::FormErr | Rcode::NotImp => assert!(query.is_err()),
                // Only a PTR name that is not a name.
                Rcode::ServFail => {
                    let query = query.expect("SERVFAIL for a query");
                    assert_eq!(
                        message::reverse_address(&query.question.name),
                        Some(Ipv4Addr::new(10, 0, 0, 9))
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        Decision::Answer(reply) => {
            let response = reply_to(data, reply, limit);
            let query = query.expect("an answered message reads as a query");
            let q = &query.question;
            assert_eq!(response.question.as_ref(), Some(q));
            assert!(response.header.authoritative());
            assert_eq!(response.header.rcode(), 0);
            assert_eq!(response.header.recursion_desired(), query.recursion_desired);
            for record in &response.answers {
                assert_eq!(record.name, q.name);
                assert_eq!((record.class, record.ttl), (CLASS_IN, TTL));
            }
            let expected = match message::reverse_address(&q.name) {
                Some(ip) => {
                    let name = Fixed.reverse(CLIENT, ip).expect("an owned address");
                    let mut wire = Vec::new();
                    for label in name.split('.') {
                        wire.push(label.len() as u8);
                        wire.extend_from_slice(label.as_bytes());
                    }
                    wire.push(0);
                    match q.qtype {
                        TYPE_PTR | TYPE_ANY => vec![(TYPE_PTR, wire)],
                        _ => vec![],
                    }
                }
                None => {
                    let addrs = Fixed.lookup(CLIENT, &q.name).expect("an owned name");
                    match q.qtype {
                        TYPE_A | TYPE_ANY => addrs
                            .iter()
                            .map(|a| (TYPE_A, a.octets().to_vec()))
                            .collect(),
                        _ => vec![],
                    }
                }
            };
            let got: Vec<_> = response
                .answers
                .iter()
                .map(|r| (r.rtype, r.data.clone()))
                .collect();
            assert_eq!(got[..], expected[..got.len()]);
            assert_eq!(response.header.truncated(), got.len() < expected.len());
        }
    }
}

/// `reply` parsed as a response to `data`, checked for size, ID and QR.
fn reply_to(data: &[u8], reply: &[u8], limit: usize) -> message::Response {
    assert!(reply.len() <= limit, "{} bytes", reply.len());
    let response = message::parse_response(reply).expect("a reply reads as a response");
    let header = message::Header::parse(data).expect("a reply to a message with a header");
    assert_eq!(response.header.id, header.id);
    assert!(response.header.is_response() && response.header.recursion_available());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn every_kind_of_decision_passes() {
        let cases = [
            (query(1, b"\x03web\x00", TYPE_A), "answer"),
            (query(2, b"\x04many\x00", TYPE_A), "answer"),
            (
                query(3, b"\x012\x010\x010\x0210\x07in-addr\x04arpa\x00", TYPE_PTR),
                "answer",
            ),
            (
                query(3, b"\x013\x010\x010\x0210\x07in-addr\x04arpa\x00", TYPE_PTR),
                "answer",
            ),
            (
                query(4, b"\x019\x010\x010\x0210\x07in-addr\x04arpa\x00", TYPE_PTR),
                "error",
            ),
            (query(5, b"\x07example\x03com\x00", TYPE_A), "forward"),
            (query(6, b"\xc0\x0c", TYPE_A), "error"),
            (vec![0; 5], "drop"),
        ];
        for (data, kind) in cases {
            let decision = decide(&data, &Fixed, CLIENT, TTL, message::UDP_LIMIT);
            let got = match decision {
                Decision::Answer(_) => "answer",
                Decision::Error(..) => "error",
                Decision::Forward(_) => "forward",
                Decision::Drop(_) => "drop",
            };
            assert_eq!(got, kind, "{data:?}");
            dns_query(&data);
        }
    }
}
