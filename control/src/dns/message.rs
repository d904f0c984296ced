//! DNS messages, RFC 1035 section 4: parsing queries and upstream responses, building the
//! answers the resolver gives itself.
//!
//! ```text
//!                                 1  1  1  1  1  1
//!   0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! |                      ID                       |
//! |QR|   Opcode  |AA|TC|RD|RA|   Z    |   RCODE   |
//! |                    QDCOUNT                    |
//! |                    ANCOUNT                    |
//! |                    NSCOUNT                    |
//! |                    ARCOUNT                    |
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! then the question (QNAME QTYPE QCLASS) and the answer, authority and additional records
//! (NAME TYPE CLASS TTL RDLENGTH RDATA).
//! ```
//!
//! Every byte comes from an untrusted client or upstream, so names are read with hard
//! limits: a label is at most 63 bytes, a name at most 255 bytes in wire form, a name
//! follows at most [`MAX_POINTERS`] compression pointers, and each pointer must jump to
//! before everything the name has read so far (and past the header). Offsets thus strictly
//! fall, so no pointer loop can exist. A query must carry exactly one question; what follows
//! it (an EDNS OPT record, typically) is ignored, and responses never carry OPT: the
//! resolver does not speak EDNS, so its answers stay within 512 bytes over UDP.
//!
//! Names are handed out in presentation form: ASCII lowercased, labels joined by `.`, no
//! trailing dot, and every byte other than a letter, digit, `-` or `_` written `\DDD`, so a
//! label holding a dot can never pass for two labels.
//!
//! Pure: no I/O, no clock, no panics on any input.

use std::net::Ipv4Addr;

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const ID: Field = 0..2;
    pub const FLAGS: Field = 2..4;
    pub const QDCOUNT: Field = 4..6;
    pub const ANCOUNT: Field = 6..8;
    pub const NSCOUNT: Field = 8..10;
    pub const ARCOUNT: Field = 10..12;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::ARCOUNT.end;
/// Largest message over UDP without EDNS (RFC 1035 section 2.3.4).
pub const UDP_LIMIT: usize = 512;
/// Largest message over TCP: what the two-byte length prefix can say.
pub const TCP_LIMIT: usize = 65_535;
/// Longest name in wire form, length bytes and the root label included.
pub const MAX_NAME_LEN: usize = 255;
/// Longest label.
pub const MAX_LABEL_LEN: usize = 63;
/// Most compression pointers one name may follow.
pub const MAX_POINTERS: usize = 64;

/// Record type A (RFC 1035).
pub const TYPE_A: u16 = 1;
/// Record type PTR (RFC 1035).
pub const TYPE_PTR: u16 = 12;
/// Record type AAAA (RFC 3596).
pub const TYPE_AAAA: u16 = 28;
/// Query type `*` (RFC 1035; RFC 8482 allows answering it with a subset).
pub const TYPE_ANY: u16 = 255;
/// Class IN.
pub const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const OPCODE_SHIFT: u16 = 11;
const OPCODE_QUERY: u8 = 0;
/// A compression pointer to the question name, which every built response holds at
/// offset 12.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, HEADER_LEN as u8];

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Shorter than the 12-byte header.
    #[error("shorter than a DNS header")]
    ShortHeader,
    /// A query was expected and QR says response.
    #[error("a response where a query was expected")]
    NotAQuery,
    /// A response was expected and QR says query.
    #[error("a query where a response was expected")]
    NotAResponse,
    /// An opcode other than QUERY.
    #[error("opcode {0} is not QUERY")]
    Opcode(u8),
    /// A query must ask exactly one question.
    #[error("{0} questions, not one")]
    QuestionCount(u16),
    /// A name, record or section runs past the end of the message.
    #[error("truncated")]
    Truncated,
    /// A label type other than a plain label or a pointer (0x40 and 0x80 are reserved).
    #[error("label type {0:#04x} is reserved")]
    LabelType(u8),
    /// A pointer that does not jump backwards past the header, or one too many.
    #[error("a compression pointer that is forward, into the header, or one too many")]
    BadPointer,
    /// A name longer than 255 bytes in wire form.
    #[error("a name longer than 255 bytes")]
    NameTooLong,
    /// A name to emit that is not a name: an empty label or one longer than 63 bytes.
    #[error("a label that is empty or longer than 63 bytes")]
    BadLabel,
}

/// The response codes the resolver sends (RFC 1035 section 4.1.1); it never denies a
/// name (NXDOMAIN) itself, it forwards what it does not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// No error.
    NoError = 0,
    /// The query could not be read.
    FormErr = 1,
    /// The server could not answer (no upstream did).
    ServFail = 2,
    /// The kind of query is not supported.
    NotImp = 4,
}

/// The fixed header of any message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Transaction ID.
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z and RCODE as they are on the wire.
    pub flags: u16,
    /// Entries in the question section.
    pub qdcount: u16,
    /// Records in the answer section.
    pub ancount: u16,
    /// Records in the authority section.
    pub nscount: u16,
    /// Records in the additional section.
    pub arcount: u16,
}

impl Header {
    /// Reads the header at the start of `bytes`.
    ///
    /// # Errors
    ///
    /// `ShortHeader` below 12 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Header, MessageError> {
        let word = |f: field::Field| {
            bytes
                .get(f)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(MessageError::ShortHeader)
        };
        Ok(Header {
            id: word(field::ID)?,
            flags: word(field::FLAGS)?,
            qdcount: word(field::QDCOUNT)?,
            ancount: word(field::ANCOUNT)?,
            nscount: word(field::NSCOUNT)?,
            arcount: word(field::ARCOUNT)?,
        })
    }

    /// QR: a response.
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    /// The opcode (0 is QUERY).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> OPCODE_SHIFT) & 0xf) as u8
    }

    /// AA: the answer is authoritative.
    pub fn authoritative(&self) -> bool {
        self.flags & FLAG_AA != 0
    }

    /// TC: the message was truncated.
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    /// RD: recursion desired.
    pub fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    /// RA: recursion available.
    pub fn recursion_available(&self) -> bool {
        self.flags & FLAG_RA != 0
    }

    /// The response code (the low four bits; EDNS extensions are not read).
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }
}

/// A question: a name, a type and a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name in presentation form, lowercase, without the trailing dot (see the module
    /// docs); the root is `""`.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

/// A query with exactly one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Transaction ID.
    pub id: u16,
    /// RD, echoed in the response.
    pub recursion_desired: bool,
    /// The question.
    pub question: Question,
    /// The question as sent, without compression and in its original case (some clients
    /// check the case of what comes back): name, type, class.
    wire_question: Vec<u8>,
}

impl Query {
    /// The question section as it goes into a response.
    pub fn wire_question(&self) -> &[u8] {
        &self.wire_question
    }
}

/// A resource record of an answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name in presentation form.
    pub name: String,
    /// TYPE.
    pub rtype: u16,
    /// CLASS.
    pub class: u16,
    /// TTL.
    pub ttl: u32,
    /// RDATA, as is (names inside it are not decompressed).
    pub data: Vec<u8>,
}

/// A response: its header, its question if it has one, its answer records. The authority
/// and additional sections are checked to lie within the message, nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The header.
    pub header: Header,
    /// The question (error responses may carry none).
    pub question: Option<Question>,
    /// The answer section. When TC is set, what fitted before the message ended.
    pub answers: Vec<Record>,
}

/// A name read from a message.
struct Name {
    /// Presentation form (see the module docs).
    text: String,
    /// Uncompressed wire form, original case.
    wire: Vec<u8>,
    /// Where the name ends in the message (after its terminal label or first pointer).
    end: usize,
}

/// Reads the name at `start` of `msg`, following compression pointers within the limits
/// the module docs give.
fn read_name(msg: &[u8], start: usize) -> Result<Name, MessageError> {
    let mut wire = Vec::with_capacity(32);
    let mut pos = start;
    // Everything at or after `low` has been read by this name: a pointer must go below it.
    let mut low = start;
    let mut pointers = 0;
    let mut end = None;
    loop {
        let len = *msg.get(pos).ok_or(MessageError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                let len = usize::from(len);
                if wire.len() + 1 + len > MAX_NAME_LEN {
                    return Err(MessageError::NameTooLong);
                }
                if len == 0 {
                    wire.push(0);
                    let text = presentation(&wire);
                    return Ok(Name {
                        text,
                        wire,
                        end: end.unwrap_or(pos + 1),
                    });
                }
                let label = msg
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(MessageError::Truncated)?;
                wire.push(len as u8);
                wire.extend_from_slice(label);
                pos += 1 + len;
            }
            0xc0 => {
                let low_byte = *msg.get(pos + 1).ok_or(MessageError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low_byte]));
                pointers += 1;
                if target >= low || target < HEADER_LEN || pointers > MAX_POINTERS {
                    return Err(MessageError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                low = target;
                pos = target;
            }
            other => return Err(MessageError::LabelType(other)),
        }
    }
}

/// The presentation form of a wire name (see the module docs).
fn presentation(wire: &[u8]) -> String {
    let mut text = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        let Some(label) = tail.get(..len) else { break };
        if len == 0 {
            break;
        }
        if !text.is_empty() {
            text.push('.');
        }
        for &b in label {
            let b = b.to_ascii_lowercase();
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                text.push(char::from(b));
            } else {
                text.push_str(&format!("\\{b:03}"));
            }
        }
        rest = &tail[len..];
    }
    text
}

/// Reads the question at `pos`: the question and where it ends.
fn read_question(msg: &[u8], pos: usize) -> Result<(Question, Vec<u8>, usize), MessageError> {
    let name = read_name(msg, pos)?;
    let fixed = msg
        .get(name.end..name.end + 4)
        .ok_or(MessageError::Truncated)?;
    let mut wire = name.wire;
    wire.extend_from_slice(fixed);
    let question = Question {
        name: name.text,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
    };
    Ok((question, wire, name.end + 4))
}

/// Reads a query: a header with QR clear and opcode QUERY, and exactly one question. What
/// follows the question (an EDNS OPT record, stray records) is ignored.
///
/// # Errors
///
/// `ShortHeader`, `NotAQuery`, `Opcode`, `QuestionCount`, or why the question is unreadable.
pub fn parse_query(bytes: &[u8]) -> Result<Query, MessageError> {
    let header = Header::parse(bytes)?;
    if header.is_response() {
        return Err(MessageError::NotAQuery);
    }
    if header.opcode() != OPCODE_QUERY {
        return Err(MessageError::Opcode(header.opcode()));
    }
    if header.qdcount != 1 {
        return Err(MessageError::QuestionCount(header.qdcount));
    }
    let (question, wire_question, _) = read_question(bytes, HEADER_LEN)?;
    Ok(Query {
        id: header.id,
        recursion_desired: header.recursion_desired(),
        question,
        wire_question,
    })
}

/// Reads a response: the header (QR set), at most one question, and every record of every
/// section, each checked to lie within the message. A response with TC set may end early:
/// the records read until then are kept.
///
/// # Errors
///
/// `ShortHeader`, `NotAResponse`, `QuestionCount` (more than one), or why a name or record
/// is unreadable.
pub fn parse_response(bytes: &[u8]) -> Result<Response, MessageError> {
    let header = Header::parse(bytes)?;
    if !header.is_response() {
        return Err(MessageError::NotAResponse);
    }
    if header.qdcount > 1 {
        return Err(MessageError::QuestionCount(header.qdcount));
    }
    let mut pos = HEADER_LEN;
    let mut question = None;
    if header.qdcount == 1 {
        let (q, _, end) = read_question(bytes, pos)?;
        question = Some(q);
        pos = end;
    }
    let mut answers = Vec::new();
    let total = u32::from(header.ancount) + u32::from(header.nscount) + u32::from(header.arcount);
    for index in 0..total {
        if header.truncated() && pos == bytes.len() {
            break;
        }
        let (record, end) = read_record(bytes, pos)?;
        if index < u32::from(header.ancount) {
            answers.push(record);
        }
        pos = end;
    }
    Ok(Response {
        header,
        question,
        answers,
    })
}

/// Reads the record at `pos`: the record and where it ends.
fn read_record(msg: &[u8], pos: usize) -> Result<(Record, usize), MessageError> {
    let name = read_name(msg, pos)?;
    let fixed = msg
        .get(name.end..name.end + 10)
        .ok_or(MessageError::Truncated)?;
    let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let data_start = name.end + 10;
    let data = msg
        .get(data_start..data_start + rdlength)
        .ok_or(MessageError::Truncated)?;
    let record = Record {
        name: name.text,
        rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        class: u16::from_be_bytes([fixed[2], fixed[3]]),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        data: data.to_vec(),
    };
    Ok((record, data_start + rdlength))
}

/// A response to `query` under construction: header and question, then records while they
/// fit in `limit` bytes; TC once one does not.
struct Builder {
    bytes: Vec<u8>,
    limit: usize,
    answers: u16,
}

impl Builder {
    fn new(query: &Query, rcode: Rcode, authoritative: bool, limit: usize) -> Builder {
        let mut flags = FLAG_QR | FLAG_RA | rcode as u16;
        if authoritative {
            flags |= FLAG_AA;
        }
        if query.recursion_desired {
            flags |= FLAG_RD;
        }
        let mut bytes = Vec::with_capacity(UDP_LIMIT);
        bytes.extend_from_slice(&query.id.to_be_bytes());
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&[0; 6]);
        bytes.extend_from_slice(&query.wire_question);
        Builder {
            bytes,
            // The header and question always fit: 12 + 255 + 4 < 512.
            limit: limit.max(UDP_LIMIT),
            answers: 0,
        }
    }

    /// Adds a record owned by the question name, unless the message is full (then TC).
    fn record(&mut self, rtype: u16, ttl: u32, data: &[u8]) -> bool {
        let Ok(rdlength) = u16::try_from(data.len()) else {
            return self.truncate();
        };
        if self.truncated() || self.bytes.len() + 12 + data.len() > self.limit {
            return self.truncate();
        }
        self.bytes.extend_from_slice(&POINTER_TO_QUESTION);
        self.bytes.extend_from_slice(&rtype.to_be_bytes());
        self.bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.bytes.extend_from_slice(&ttl.to_be_bytes());
        self.bytes.extend_from_slice(&rdlength.to_be_bytes());
        self.bytes.extend_from_slice(data);
        self.answers += 1;
        true
    }

    fn truncated(&self) -> bool {
        self.bytes[field::FLAGS.start] & (FLAG_TC >> 8) as u8 != 0
    }

    fn truncate(&mut self) -> bool {
        self.bytes[field::FLAGS.start] |= (FLAG_TC >> 8) as u8;
        false
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes[field::ANCOUNT].copy_from_slice(&self.answers.to_be_bytes());
        self.bytes
    }
}

/// An authoritative answer with one A record per address, as many as fit in `limit` bytes
/// (at least [`UDP_LIMIT`]); TC is set when some do not. No addresses makes it NODATA.
pub fn answer(query: &Query, addrs: &[Ipv4Addr], ttl: u32, limit: usize) -> Vec<u8> {
    let mut builder = Builder::new(query, Rcode::NoError, true, limit);
    for addr in addrs {
        if !builder.record(TYPE_A, ttl, &addr.octets()) {
            break;
        }
    }
    builder.finish()
}

/// An authoritative NOERROR answer without records: the name exists, but has no record of
/// the type asked (an AAAA query for a name that has only A records).
pub fn nodata(query: &Query) -> Vec<u8> {
    Builder::new(query, Rcode::NoError, true, UDP_LIMIT).finish()
}

/// An authoritative answer with one PTR record naming `name` (presentation form with or
/// without the trailing dot, no escapes), or TC without it if it does not fit in `limit`.
///
/// # Errors
///
/// `BadLabel` or `NameTooLong` if `name` is not a name.
pub fn ptr_answer(
    query: &Query,
    name: &str,
    ttl: u32,
    limit: usize,
) -> Result<Vec<u8>, MessageError> {
    let wire = encode_name(name)?;
    let mut builder = Builder::new(query, Rcode::NoError, true, limit);
    builder.record(TYPE_PTR, ttl, &wire);
    Ok(builder.finish())
}

/// A response to `query` with `rcode` and no records (SERVFAIL when no upstream answered).
pub fn error(query: &Query, rcode: Rcode) -> Vec<u8> {
    Builder::new(query, rcode, false, UDP_LIMIT).finish()
}

/// A response with `rcode` to a message whose question could not be read: its ID, opcode
/// and RD, no question (FORMERR, NOTIMP).
pub fn header_error(header: &Header, rcode: Rcode) -> Vec<u8> {
    let flags = FLAG_QR
        | FLAG_RA
        | (header.flags & (0xf << OPCODE_SHIFT))
        | (header.flags & FLAG_RD)
        | rcode as u16;
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    bytes.extend_from_slice(&header.id.to_be_bytes());
    bytes.extend_from_slice(&flags.to_be_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes
}

/// `name` in wire form: labels split at `.`, a trailing dot allowed.
fn encode_name(name: &str) -> Result<Vec<u8>, MessageError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut wire = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return Err(MessageError::BadLabel);
            }
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
    }
    wire.push(0);
    if wire.len() > MAX_NAME_LEN {
        return Err(MessageError::NameTooLong);
    }
    Ok(wire)
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`) stands for: four labels, each a
/// decimal octet without leading zeros. Anything else under `in-addr.arpa` is not one.
pub fn reverse_address(name: &str) -> Option<Ipv4Addr> {
    let labels = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut count = 0;
    for label in labels.split('.') {
        let canonical = !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_digit())
            && (label == "0" || !label.starts_with('0'));
        let octet = label.parse::<u8>().ok().filter(|_| canonical)?;
        *octets.get_mut(count)? = octet;
        count += 1;
    }
    if count != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::from(octets))
}

/// A query as a client sends it, for tests here and elsewhere in the crate.
#[cfg(test)]
pub(crate) fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&FLAG_RD.to_be_bytes());
    bytes.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&encode_name(name).expect("a test name"));
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig +edns=0 web.example A` as glibc-free clients send it: RD, AD, and an OPT record
    /// with a 1232-byte payload size and a cookie.
    const DIG_A_EDNS: &[u8] = &[
        0x4f, 0x1b, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x03, b'W', b'e', b'b', 0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x00, //
        0x00, 0x01, 0x00, 0x01, //
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00, 0x08,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    ];

    fn query(name: &str, qtype: u16) -> Query {
        parse_query(&build_query(0x1234, name, qtype)).unwrap()
    }

    #[test]
    fn parses_a_query_with_edns() {
        let q = parse_query(DIG_A_EDNS).unwrap();
        assert_eq!(q.id, 0x4f1b);
        assert!(q.recursion_desired);
        assert_eq!(
            q.question,
            Question {
                name: "web.example".into(),
                qtype: TYPE_A,
                qclass: CLASS_IN
            }
        );
        // The question keeps its case for the echo.
        assert_eq!(q.wire_question(), &DIG_A_EDNS[12..29]);
    }

    #[test]
    fn answers_echo_id_question_and_rd() {
        let q = parse_query(DIG_A_EDNS).unwrap();
        let addrs = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
        let bytes = answer(&q, &addrs, 600, UDP_LIMIT);
        let r = parse_response(&bytes).unwrap();
        assert_eq!(r.header.id, 0x4f1b);
        assert!(r.header.authoritative() && r.header.recursion_available());
        assert!(r.header.recursion_desired() && !r.header.truncated());
        assert_eq!(r.header.rcode(), Rcode::NoError as u8);
        assert_eq!(r.question.as_ref(), Some(&q.question));
        assert_eq!(&bytes[12..29], q.wire_question());
        assert_eq!(r.answers.len(), 2);
        for (record, addr) in r.answers.iter().zip(addrs) {
            assert_eq!(record.name, "web.example");
            assert_eq!(
                (record.rtype, record.class, record.ttl),
                (TYPE_A, CLASS_IN, 600)
            );
            assert_eq!(record.data, addr.octets());
        }
        // No OPT in the response: the resolver does not speak EDNS.
        assert_eq!(r.header.arcount, 0);
    }

    #[test]
    fn too_many_addresses_truncate_over_udp_but_not_tcp() {
        let q = query("many.example", TYPE_A);
        let addrs: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
        let udp = answer(&q, &addrs, 60, UDP_LIMIT);
        assert!(udp.len() <= UDP_LIMIT);
        let r = parse_response(&udp).unwrap();
        assert!(r.header.truncated());
        assert_eq!(r.answers.len(), (UDP_LIMIT - 12 - 18) / 16);
        let tcp = answer(&q, &addrs, 60, TCP_LIMIT);
        let r = parse_response(&tcp).unwrap();
        assert!(!r.header.truncated());
        assert_eq!(r.answers.len(), 100);
    }

    #[test]
    fn nodata_and_errors() {
        let q = query("web.example", TYPE_AAAA);
        let r = parse_response(&nodata(&q)).unwrap();
        assert_eq!((r.header.rcode(), r.answers.len()), (0, 0));
        assert!(r.header.authoritative());
        let r = parse_response(&error(&q, Rcode::ServFail)).unwrap();
        assert_eq!(r.header.rcode(), Rcode::ServFail as u8);
        assert!(!r.header.authoritative());
        assert_eq!(r.question, Some(q.question));
        let header = Header::parse(&build_query(7, "x", TYPE_A)).unwrap();
        let r = parse_response(&header_error(&header, Rcode::FormErr)).unwrap();
        assert_eq!((r.header.id, r.header.rcode(), r.question), (7, 1, None));
        assert!(r.header.recursion_desired());
    }

    #[test]
    fn ptr_answers_and_names_that_are_not_names() {
        let q = query("2.0.0.10.in-addr.arpa", TYPE_PTR);
        let r = parse_response(&ptr_answer(&q, "web.mynet.", 5, UDP_LIMIT).unwrap()).unwrap();
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].rtype, TYPE_PTR);
        assert_eq!(r.answers[0].data, b"\x03web\x05mynet\x00");
        assert_eq!(
            ptr_answer(&q, "a..b", 5, UDP_LIMIT),
            Err(MessageError::BadLabel)
        );
        let long_label = "a".repeat(64);
        assert_eq!(
            ptr_answer(&q, &long_label, 5, UDP_LIMIT),
            Err(MessageError::BadLabel)
        );
        let long_name = vec!["a".repeat(63); 4].join(".");
        assert_eq!(
            ptr_answer(&q, &long_name, 5, UDP_LIMIT),
            Err(MessageError::NameTooLong)
        );
        // The longest name fits over TCP; over UDP after a long question it cannot: TC.
        // A question of 255 bytes: three 63-byte labels, one of 48, in-addr.arpa.
        let labels = [vec!["b".repeat(63); 3], vec!["b".repeat(48)]].concat();
        let q = query(&format!("{}.in-addr.arpa", labels.join(".")), TYPE_PTR);
        assert_eq!(q.wire_question().len(), MAX_NAME_LEN + 4);
        let longest = [
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(61),
        ]
        .join(".");
        let udp = ptr_answer(&q, &longest, 5, UDP_LIMIT).unwrap();
        assert!(udp.len() <= UDP_LIMIT);
        let r = parse_response(&udp).unwrap();
        assert!(r.header.truncated() && r.answers.is_empty());
        let r = parse_response(&ptr_answer(&q, &longest, 5, TCP_LIMIT).unwrap()).unwrap();
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn names_are_lowercased_and_escaped() {
        let mut bytes = build_query(1, "x", TYPE_A);
        bytes.truncate(12);
        bytes.extend_from_slice(b"\x07A.b\\c d\x03COM\x00\x00\x01\x00\x01");
        let q = parse_query(&bytes).unwrap();
        assert_eq!(q.question.name, "a\\046b\\092c\\032d.com");
        let root = build_query(1, "", TYPE_A);
        assert_eq!(parse_query(&root).unwrap().question.name, "");
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_address("2.0.0.10.in-addr.arpa"),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(
            reverse_address("255.0.168.192.in-addr.arpa"),
            Some(Ipv4Addr::new(192, 168, 0, 255))
        );
        for not in [
            "0.10.in-addr.arpa",
            "1.2.0.0.10.in-addr.arpa",
            "02.0.0.10.in-addr.arpa",
            "256.0.0.10.in-addr.arpa",
            "+1.0.0.10.in-addr.arpa",
            "a.0.0.10.in-addr.arpa",
            ".0.0.10.in-addr.arpa",
            "2.0.0.10.ip6.arpa",
            "in-addr.arpa",
        ] {
            assert_eq!(reverse_address(not), None, "{not}");
        }
    }

    #[test]
    fn hostile_queries_are_refused() {
        let good = build_query(9, "web.example", TYPE_A);
        // Truncated headers.
        for len in 0..HEADER_LEN {
            assert_eq!(parse_query(&good[..len]), Err(MessageError::ShortHeader));
        }
        // Truncated questions.
        for len in HEADER_LEN..good.len() {
            assert_eq!(
                parse_query(&good[..len]),
                Err(MessageError::Truncated),
                "{len}"
            );
        }
        // A response sent as a query.
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Err(MessageError::NotAQuery));
        // Another opcode (NOTIFY).
        let mut notify = good.clone();
        notify[2] = 4 << 3;
        assert_eq!(parse_query(&notify), Err(MessageError::Opcode(4)));
        // No question, two questions.
        for count in [0u16, 2] {
            let mut q = good.clone();
            q[4..6].copy_from_slice(&count.to_be_bytes());
            assert_eq!(parse_query(&q), Err(MessageError::QuestionCount(count)));
        }
        // A label past the end.
        let mut past = good[..12].to_vec();
        past.extend_from_slice(b"\x3fabc");
        assert_eq!(parse_query(&past), Err(MessageError::Truncated));
        // Reserved label types.
        for kind in [0x40u8, 0x80] {
            let mut q = good[..12].to_vec();
            q.extend_from_slice(&[kind | 1, b'a', 0, 0, 1, 0, 1]);
            assert_eq!(parse_query(&q), Err(MessageError::LabelType(kind)));
        }
        // A name over 255 bytes: five 63-byte labels.
        let mut long = good[..12].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse_query(&long), Err(MessageError::NameTooLong));
        // 255 bytes exactly is a name.
        let mut max = good[..12].to_vec();
        for len in [63u8, 63, 63, 61] {
            max.push(len);
            max.extend(std::iter::repeat_n(b'a', usize::from(len)));
        }
        max.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(parse_query(&max).is_ok());
    }

    #[test]
    fn pointer_loops_and_bad_pointers_are_refused() {
        let header = &build_query(9, "x", TYPE_A)[..12];
        let with = |name: &[u8]| {
            let mut q = header.to_vec();
            q.extend_from_slice(name);
            q.extend_from_slice(&[0, 1, 0, 1]);
            q
        };
        // A pointer to itself, to the header, forwards, and a cut pointer.
        assert_eq!(
            parse_query(&with(&[0xc0, 12])),
            Err(MessageError::BadPointer)
        );
        assert_eq!(
            parse_query(&with(&[0xc0, 0])),
            Err(MessageError::BadPointer)
        );
        assert_eq!(
            parse_query(&with(&[0xc0, 14, 1, b'a', 0])),
            Err(MessageError::BadPointer)
        );
        assert_eq!(
            parse_query(&header.iter().copied().chain([0xc0]).collect::<Vec<_>>()),
            Err(MessageError::Truncated)
        );
        // In a response: a name that jumps back into itself (a loop through labels).
        let mut r = header.to_vec();
        r[2] |= 0x80;
        r[4..8].copy_from_slice(&[0, 1, 0, 1]);
        r.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        // Answer owner at 19: label "b" then a pointer back to that label.
        r.extend_from_slice(b"\x01b\xc0\x13\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00");
        assert_eq!(parse_response(&r), Err(MessageError::BadPointer));
        // A good chain of pointers: "c" -> "b" -> question name "a".
        let mut r = header.to_vec();
        r[2] |= 0x80;
        r[4..8].copy_from_slice(&[0, 1, 0, 2]);
        r.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        r.extend_from_slice(b"\x01b\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00");
        r.extend_from_slice(b"\x01c\xc0\x13\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00");
        let parsed = parse_response(&r).unwrap();
        let names: Vec<_> = parsed.answers.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["b.a", "c.b.a"]);
    }

    #[test]
    fn too_many_pointers_are_refused() {
        // Records that are each a pointer to the record before: the n-th name follows n
        // pointers, the first to the question.
        let chain = |records: u16| {
            let mut r = build_query(9, "a", TYPE_A);
            r[2] |= 0x80;
            r[6..8].copy_from_slice(&records.to_be_bytes());
            let mut previous = HEADER_LEN;
            for _ in 0..records {
                let here = r.len();
                r.extend_from_slice(&[0xc0 | (previous >> 8) as u8, previous as u8]);
                r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
                previous = here;
            }
            r
        };
        let ok = parse_response(&chain(MAX_POINTERS as u16)).unwrap();
        assert!(ok.answers.iter().all(|a| a.name == "a"));
        assert_eq!(
            parse_response(&chain(MAX_POINTERS as u16 + 1)),
            Err(MessageError::BadPointer)
        );
    }

    #[test]
    fn responses_must_be_responses_and_fit() {
        let q = build_query(9, "a", TYPE_A);
        assert_eq!(parse_response(&q), Err(MessageError::NotAResponse));
        let mut r = answer(
            &parse_query(&q).unwrap(),
            &[Ipv4Addr::LOCALHOST],
            1,
            UDP_LIMIT,
        );
        let full = r.clone();
        r.pop();
        assert_eq!(parse_response(&r), Err(MessageError::Truncated));
        // With TC set, a response may stop between records.
        let mut cut = full[..full.len() - 16].to_vec();
        cut[2] |= 0x02;
        assert_eq!(parse_response(&cut).unwrap().answers, []);
    }
}
