//! What the resolver does with one message from a client: answer it from [`Names`], refuse
//! it, forward it upstream, or drop it. Pure, so the whole answering logic is tested and
//! fuzzed without sockets; the server only carries out the [`Decision`].
//!
//! - Fewer than 12 bytes, or QR set: dropped. Answering a response could start a loop
//!   between two resolvers, and a message without a header has no ID to answer.
//! - Another opcode than QUERY: NOTIMP. A header that reads but a question that does not
//!   (none, two, a bad name): FORMERR.
//! - Class IN, a name [`Names::lookup`] knows: A (and `*`) queries get its addresses, every
//!   other type NODATA. A reverse name (`D.C.B.A.in-addr.arpa`) that [`Names::reverse`]
//!   knows: PTR (and `*`) get the name, other types NODATA.
//! - Everything else (other classes, names the store does not hold) is forwarded: a name is
//!   never denied here, since the host's resolvers may know it.

use super::message::{self, Header, MessageError, Query, Rcode, CLASS_IN};
use std::net::Ipv4Addr;

/// The names the resolver answers for itself: containers of the overlay networks the
/// client is on.
pub trait Names: Send + Sync {
    /// The addresses of `name` (lowercase, without the trailing dot) as `client` should
    /// see them. `None`: not ours, forward the query. An empty list: ours, but no address.
    fn lookup(&self, client: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>>;

    /// The name of `ip` (for an `in-addr.arpa` query) if the address is ours; `None`:
    /// forward the query.
    fn reverse(&self, client: Ipv4Addr, ip: Ipv4Addr) -> Option<String>;
}

/// Why a message gets no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a DNS header.
    ShortHeader,
    /// QR set: a response, not a query.
    Response,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answered from [`Names`]: send these bytes back.
    Answer(Vec<u8>),
    /// Refused with this code (FORMERR, NOTIMP, or SERVFAIL when [`Names`] gave a name
    /// that is not one): send these bytes back.
    Error(Rcode, Vec<u8>),
    /// Not ours: send the query upstream and relay the answer.
    Forward(Query),
    /// Send nothing.
    Drop(DropReason),
}

/// Decides what to do with `bytes` from `client`. Answers carry `ttl` and are at most
/// `limit` bytes long ([`message::UDP_LIMIT`] or [`message::TCP_LIMIT`]); what does not fit
/// is cut and flagged TC.
pub fn decide(
    bytes: &[u8],
    names: &dyn Names,
    client: Ipv4Addr,
    ttl: u32,
    limit: usize,
) -> Decision {
    let header = match Header::parse(bytes) {
        Ok(header) => header,
        Err(_) => return Decision::Drop(DropReason::ShortHeader),
    };
    if header.is_response() {
        return Decision::Drop(DropReason::Response);
    }
    let query = match message::parse_query(bytes) {
        Ok(query) => query,
        Err(MessageError::Opcode(_)) => return refuse(&header, Rcode::NotImp),
        Err(_) => return refuse(&header, Rcode::FormErr),
    };
    let question = &query.question;
    if question.qclass != CLASS_IN {
        return Decision::Forward(query);
    }
    if let Some(ip) = message::reverse_address(&question.name) {
        let Some(name) = names.reverse(client, ip) else {
            return Decision::Forward(query);
        };
        if !matches!(question.qtype, message::TYPE_PTR | message::TYPE_ANY) {
            return Decision::Answer(message::nodata(&query));
        }
        return match message::ptr_answer(&query, &name, ttl, limit) {
            Ok(bytes) => Decision::Answer(bytes),
            Err(_) => Decision::Error(Rcode::ServFail, message::error(&query, Rcode::ServFail)),
        };
    }
    let Some(addrs) = names.lookup(client, &question.name) else {
        return Decision::Forward(query);
    };
    if matches!(question.qtype, message::TYPE_A | message::TYPE_ANY) {
        Decision::Answer(message::answer(&query, &addrs, ttl, limit))
    } else {
        Decision::Answer(message::nodata(&query))
    }
}

fn refuse(header: &Header, rcode: Rcode) -> Decision {
    Decision::Error(rcode, message::header_error(header, rcode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::{
        build_query, parse_response, TCP_LIMIT, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR, UDP_LIMIT,
    };
    use std::sync::Mutex;

    /// `web` at 10.0.0.2 for everyone, `many` with 100 addresses, `bad.ptr` whose reverse
    /// name is not a name; remembers who asked.
    #[derive(Default)]
    struct Fixed {
        clients: Mutex<Vec<Ipv4Addr>>,
    }

    impl Names for Fixed {
        fn lookup(&self, client: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
            self.clients.lock().unwrap().push(client);
            match name {
                "web" | "web.mynet" => Some(vec![Ipv4Addr::new(10, 0, 0, 2)]),
                "many" => Some((0..100).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect()),
                "noaddr" => Some(vec![]),
                _ => None,
            }
        }

        fn reverse(&self, client: Ipv4Addr, ip: Ipv4Addr) -> Option<String> {
            self.clients.lock().unwrap().push(client);
            match ip.octets() {
                [10, 0, 0, 2] => Some("web.mynet".to_owned()),
                [10, 0, 0, 9] => Some("bad..name".to_owned()),
                _ => None,
            }
        }
    }

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

    fn run(bytes: &[u8]) -> Decision {
        decide(bytes, &Fixed::default(), CLIENT, 600, UDP_LIMIT)
    }

    fn answered(decision: Decision) -> message::Response {
        match decision {
            Decision::Answer(bytes) => parse_response(&bytes).unwrap(),
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn owned_names_are_answered_case_blind() {
        let names = Fixed::default();
        let r = answered(decide(
            &build_query(1, "WEB.MyNet", TYPE_A),
            &names,
            CLIENT,
            600,
            UDP_LIMIT,
        ));
        assert_eq!(r.header.id, 1);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, [10, 0, 0, 2]);
        assert_eq!(r.answers[0].ttl, 600);
        assert_eq!(*names.clients.lock().unwrap(), [CLIENT]);
        let r = answered(run(&build_query(2, "web", TYPE_ANY)));
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn other_types_of_owned_names_are_nodata() {
        for qtype in [TYPE_AAAA, 15, 16] {
            let r = answered(run(&build_query(3, "web", qtype)));
            assert_eq!((r.header.rcode(), r.answers.len()), (0, 0));
        }
        let r = answered(run(&build_query(3, "noaddr", TYPE_A)));
        assert_eq!((r.header.rcode(), r.answers.len()), (0, 0));
    }

    #[test]
    fn reverse_lookups() {
        let r = answered(run(&build_query(4, "2.0.0.10.in-addr.arpa", TYPE_PTR)));
        assert_eq!(r.answers[0].data, b"\x03web\x05mynet\x00");
        let r = answered(run(&build_query(4, "2.0.0.10.in-addr.arpa", TYPE_A)));
        assert!(r.answers.is_empty());
        assert!(matches!(
            run(&build_query(4, "3.0.0.10.in-addr.arpa", TYPE_PTR)),
            Decision::Forward(_)
        ));
        match run(&build_query(4, "9.0.0.10.in-addr.arpa", TYPE_PTR)) {
            Decision::Error(Rcode::ServFail, bytes) => {
                assert_eq!(parse_response(&bytes).unwrap().header.rcode(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_names_and_other_classes_are_forwarded() {
        match run(&build_query(5, "example.com", TYPE_A)) {
            Decision::Forward(q) => {
                assert_eq!((q.id, q.question.name.as_str()), (5, "example.com"))
            }
            other => panic!("{other:?}"),
        }
        let mut chaos = build_query(6, "web", TYPE_A);
        let len = chaos.len();
        chaos[len - 1] = 3;
        assert!(matches!(run(&chaos), Decision::Forward(_)));
    }

    #[test]
    fn answers_fit_the_transport() {
        let query = build_query(7, "many", TYPE_A);
        let r = answered(run(&query));
        assert!(r.header.truncated());
        let tcp = decide(&query, &Fixed::default(), CLIENT, 600, TCP_LIMIT);
        let r = answered(tcp);
        assert!(!r.header.truncated());
        assert_eq!(r.answers.len(), 100);
    }

    #[test]
    fn junk_is_dropped_or_refused() {
        assert_eq!(
            run(b"\x01\x02\x03"),
            Decision::Drop(DropReason::ShortHeader)
        );
        let mut response = build_query(8, "web", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(run(&response), Decision::Drop(DropReason::Response));
        let mut notify = build_query(8, "web", TYPE_A);
        notify[2] = 4 << 3;
        match run(&notify) {
            Decision::Error(Rcode::NotImp, bytes) => {
                let r = parse_response(&bytes).unwrap();
                assert_eq!(
                    (r.header.id, r.header.rcode(), r.header.opcode()),
                    (8, 4, 4)
                );
            }
            other => panic!("{other:?}"),
        }
        let mut two = build_query(8, "web", TYPE_A);
        two[5] = 2;
        assert!(matches!(run(&two), Decision::Error(Rcode::FormErr, _)));
        let mut looped = build_query(8, "web", TYPE_A)[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(run(&looped), Decision::Error(Rcode::FormErr, _)));
    }
}
