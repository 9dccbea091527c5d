//! The audit record (API.md §5 "Audit") and its canonical encoding.
//!
//! On disk a record is one line of JSON: the record's fields in a fixed order, then `hash`.
//! `hash` is the SHA-256 (hex) of the exact bytes of the line without its `,"hash":"…"` member,
//! and those bytes include `prev_hash`, the hash of the record before; so changing any byte of
//! a record, or removing or reordering records, breaks the chain. The first record's
//! `prev_hash` is 64 zeros.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A whole request that sent no data (catalog, keys, refusals...): written before the
    /// answer leaves.
    Request,
    /// A data request about to stream: durable before its first byte leaves.
    Begin,
    /// The end of a data request (same `event_id` as its begin): rows, bytes, outcome.
    End,
    /// A data request answered whole at once (a page, encoded before anything left): its
    /// begin and end in one record, with rows, bytes and outcome, durable before the first
    /// byte. No `end` follows.
    Read,
    /// Identical refusals of one caller within one second, counted in `count`.
    Refusals,
    /// Something the log itself did: recovery from a torn tail, start, shutdown.
    Log,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Begin => "begin",
            Kind::End => "end",
            Kind::Read => "read",
            Kind::Refusals => "refusals",
            Kind::Log => "log",
        }
    }
}

/// A dataset a request read, at the version read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetVersion {
    /// `department.dataset`.
    pub name: String,
    pub version: Option<i64>,
}

/// What a request tells the log; the log adds `seq`, `ts`, `prev_hash` and `hash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Event {
    pub kind: Option<Kind>,
    pub event_id: String,
    pub request_id: String,
    /// The key id, or `anonymous`.
    pub key_id: String,
    pub role: String,
    pub department: Option<String>,
    pub tier: String,
    pub client_ip: String,
    pub user_agent: String,
    pub method: String,
    pub path: String,
    /// What was done, e.g. `read.rows`, `read.query`, `catalog.list`, `publish.upload`.
    pub action: String,
    pub datasets: Vec<DatasetVersion>,
    pub query_text: Option<String>,
    pub query_sha256: Option<String>,
    pub status: u16,
    pub error: Option<String>,
    pub rows_returned: u64,
    pub bytes_returned: u64,
    pub duration_ms: u64,
    /// For `end` and `read`: thread CPU time the query used on the query executor, in milliseconds.
    /// Absent from records of other kinds (and from records written before it existed), so
    /// their lines, and hashes, are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// For `end` and `read`: `completed`, `disconnected`, `failed` or `cancelled` (stopped at shutdown).
    pub outcome: Option<String>,
    /// How many requests this record stands for (more than 1 only for `refusals`).
    pub count: u64,
    /// For a query run distributed: the workers it was planned over (`query.workers` that were
    /// up). Absent for queries run in the gateway, so their lines are unchanged. Before
    /// `node_id`, which a log appends last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<String>>,
    /// The gateway that wrote the record (`audit.node_id`), in a cluster where each gateway
    /// keeps its own chain. Absent when not set, so a single gateway's lines are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl Event {
    /// Names the statement a refused query carried, so an auditor sees what was tried as well
    /// as what was read: its SHA-256 always, its text when within `max_bytes` (the SQL size
    /// limit: longer text was refused unread).
    pub fn name_refused_statement(&mut self, text: &str, max_bytes: usize) {
        self.query_sha256 = Some(query_sha256(text));
        self.query_text = (text.len() <= max_bytes).then(|| text.to_string());
    }
}

/// A record as stored: the event, its place in the chain, and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub event: Event,
    pub prev_hash: String,
    pub hash: String,
}

/// The part of a record its hash covers, in its canonical order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts: &'a DateTime<Utc>,
    #[serde(flatten)]
    event: &'a Event,
    prev_hash: &'a str,
}

/// The marker between a record's body and its hash on a line.
const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// A record's body — its line up to (not including) `,"hash":` — written into `buf` (cleared
/// first): what a record's hash covers, but for the closing brace.
pub fn body_into(buf: &mut Vec<u8>, seq: u64, ts: &DateTime<Utc>, event: &Event, prev_hash: &str) {
    buf.clear();
    let body = Body {
        seq,
        ts,
        event,
        prev_hash,
    };
    if serde_json::to_writer(&mut *buf, &body).is_err() {
        buf.clear();
    }
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
}

/// A record's hash, its body written into `buf` (cleared first; left without its closing
/// brace): what [`encode`] computes, without allocating, for checking many records.
pub fn hash_into(
    buf: &mut Vec<u8>,
    seq: u64,
    ts: &DateTime<Utc>,
    event: &Event,
    prev_hash: &str,
) -> [u8; 32] {
    body_into(buf, seq, ts, event, prev_hash);
    body_hash(buf)
}

/// The hash of a record whose body (its line up to `,"hash":`, see [`body_into`]) is `body`:
/// SHA-256 of the body and the closing brace.
pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(body)
        .chain_update(b"}")
        .finalize()
        .into()
}

/// Encodes a record: returns its line (with the trailing newline) and its hash.
pub fn encode(seq: u64, ts: &DateTime<Utc>, event: &Event, prev_hash: &str) -> (Vec<u8>, String) {
    let mut line = Vec::new();
    let hash = hex::encode(hash_into(&mut line, seq, ts, event, prev_hash));
    line.extend_from_slice(HASH_MEMBER);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    (line, hash)
}

/// An event's members encoded by whoever submits it (so the log's one writer thread does not
/// serialize): the JSON object's members without its braces, exactly as [`encode`] places them
/// between `ts` and `prev_hash`.
#[derive(Debug, Clone)]
pub struct EncodedEvent(Vec<u8>);

impl EncodedEvent {
    /// `event`, written by gateway `node_id` (a JSON string, already encoded) unless it
    /// names its node itself: the member serde would place last.
    pub fn with_node(event: &Event, node_id: Option<&str>) -> Self {
        let mut e = Self::new(event);
        if let (Some(node), None) = (node_id, &event.node_id) {
            e.0.extend_from_slice(b",\"node_id\":");
            e.0.extend_from_slice(node.as_bytes());
        }
        e
    }

    pub fn new(event: &Event) -> Self {
        let mut bytes = Vec::with_capacity(1024);
        if serde_json::to_writer(&mut bytes, event).is_err() {
            bytes.clear();
        }
        // `{...}` → `...`
        bytes.pop();
        if !bytes.is_empty() {
            bytes.drain(..1);
        }
        Self(bytes)
    }
}

/// Appends the line of the record (`seq`, `ts` already JSON-encoded, the event, `prev_hash`)
/// to `out` — the same bytes [`encode`] gives — and returns its hash.
pub fn append_line(
    out: &mut Vec<u8>,
    seq: u64,
    ts_json: &[u8],
    event: &EncodedEvent,
    prev_hash: &[u8; 32],
) -> [u8; 32] {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(ts_json);
    if !event.0.is_empty() {
        out.push(b',');
        out.extend_from_slice(&event.0);
    }
    out.extend_from_slice(b",\"prev_hash\":\"");
    let mut hex_buf = [0u8; 64];
    hex::encode_to_slice(prev_hash, &mut hex_buf).unwrap_or_default();
    out.extend_from_slice(&hex_buf);
    out.push(b'"');
    let hash = body_hash(&out[start..]);
    hex::encode_to_slice(hash, &mut hex_buf).unwrap_or_default();
    out.extend_from_slice(HASH_MEMBER);
    out.extend_from_slice(&hex_buf);
    out.extend_from_slice(b"\"}\n");
    hash
}

/// A record's line as read: every member at the top level. [`Record`] nests its event with
/// `#[serde(flatten)]`, which makes serde buffer each line's members before reading them; this
/// twin reads them in one pass (same members, same rules: unknown members refused, event
/// members defaulted when absent).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatRecord {
    seq: u64,
    ts: DateTime<Utc>,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    tier: String,
    #[serde(default)]
    client_ip: String,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    datasets: Vec<DatasetVersion>,
    #[serde(default)]
    query_text: Option<String>,
    #[serde(default)]
    query_sha256: Option<String>,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    rows_returned: u64,
    #[serde(default)]
    bytes_returned: u64,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    cpu_ms: Option<u64>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    count: u64,
    #[serde(default)]
    workers: Option<Vec<String>>,
    #[serde(default)]
    node_id: Option<String>,
    prev_hash: String,
    hash: String,
}

impl From<FlatRecord> for Record {
    fn from(f: FlatRecord) -> Self {
        Record {
            seq: f.seq,
            ts: f.ts,
            event: Event {
                kind: f.kind,
                event_id: f.event_id,
                request_id: f.request_id,
                key_id: f.key_id,
                role: f.role,
                department: f.department,
                tier: f.tier,
                client_ip: f.client_ip,
                user_agent: f.user_agent,
                method: f.method,
                path: f.path,
                action: f.action,
                datasets: f.datasets,
                query_text: f.query_text,
                query_sha256: f.query_sha256,
                status: f.status,
                error: f.error,
                rows_returned: f.rows_returned,
                bytes_returned: f.bytes_returned,
                duration_ms: f.duration_ms,
                cpu_ms: f.cpu_ms,
                outcome: f.outcome,
                count: f.count,
                workers: f.workers,
                node_id: f.node_id,
            },
            prev_hash: f.prev_hash,
            hash: f.hash,
        }
    }
}

/// A line as a record: read in place when it has the canonical shape ([`crate::canonical`]),
/// by serde otherwise (the same answer, at several times the cost).
fn parse(line: &[u8]) -> Result<Record, LineError> {
    match crate::canonical::read(line) {
        Some(record) => Ok(record),
        None => decode_with_serde(line),
    }
}

/// A line as serde reads it: any order of members, whitespace, every form of JSON.
pub(crate) fn decode_with_serde(line: &[u8]) -> Result<Record, LineError> {
    serde_json::from_slice::<FlatRecord>(line)
        .map(Record::from)
        .map_err(|e| LineError::Unreadable(e.to_string()))
}

/// Why a line is not a good record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not a record at all (torn, garbage).
    Unreadable(String),
    /// A record whose bytes do not hash to its `hash`.
    HashMismatch,
}

/// Decodes one line (without its newline) and checks its own hash.
pub fn decode(line: &[u8]) -> Result<Record, LineError> {
    let record = parse(line)?;
    check_hash(line, &record.hash)?;
    Ok(record)
}

/// Whether `line` (read as a record whose `hash` member is `hash`) hashes to its `hash`.
pub fn check_hash(line: &[u8], hash: &str) -> Result<(), LineError> {
    let at = line
        .windows(HASH_MEMBER.len())
        .rposition(|w| w == HASH_MEMBER)
        .ok_or_else(|| LineError::Unreadable("no hash member".into()))?;
    // The line must end exactly with the hash member: `,"hash":"<64 hex>"}`.
    let tail = &line[at + HASH_MEMBER.len()..];
    if tail.len() != 66 || &tail[64..] != b"\"}" || tail[..64] != *hash.as_bytes() {
        return Err(LineError::HashMismatch);
    }
    let mut computed = [0u8; 64];
    hex::encode_to_slice(body_hash(&line[..at]), &mut computed)
        .map_err(|_| LineError::HashMismatch)?;
    if computed != tail[..64] {
        return Err(LineError::HashMismatch);
    }
    Ok(())
}

/// Decodes one line without checking its hash — for copies of lines whose chain is proven
/// elsewhere (the Parquet conversion of a sealed segment: `verify` re-encodes every row of the
/// copy and compares it with the chain, so a line that did not match its hash cannot hide).
pub fn decode_unchecked(line: &[u8]) -> Result<Record, LineError> {
    parse(line)
}

/// SHA-256 (hex) of a query's text, as records carry it.
pub fn query_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            kind: Some(Kind::Request),
            event_id: "e1".into(),
            request_id: "r1".into(),
            key_id: "anonymous".into(),
            method: "GET".into(),
            path: "/api/v1/datasets".into(),
            status: 200,
            count: 1,
            datasets: vec![DatasetVersion {
                name: "transport.bus_lines".into(),
                version: Some(1),
            }],
            query_text: Some("SELECT '\"hash\":\"' -- 路".into()),
            ..Default::default()
        }
    }

    #[test]
    fn lines_built_from_encoded_events_are_the_canonical_lines() {
        let ts = Utc::now();
        let ts_json = serde_json::to_vec(&ts).unwrap();
        let mut events = vec![event(), Event::default()];
        events.push(Event {
            kind: Some(Kind::End),
            cpu_ms: Some(12),
            outcome: Some("completed".into()),
            datasets: vec![],
            error: Some("a \"quoted\" \n error".into()),
            ..event()
        });
        let mut prev = GENESIS_HASH.to_string();
        for (seq, e) in events.iter().enumerate() {
            let (want, want_hash) = encode(seq as u64 + 1, &ts, e, &prev);
            let mut prev_bytes = [0u8; 32];
            hex::decode_to_slice(&prev, &mut prev_bytes).unwrap();
            let mut got = b"earlier bytes".to_vec();
            let hash = append_line(
                &mut got,
                seq as u64 + 1,
                &ts_json,
                &EncodedEvent::new(e),
                &prev_bytes,
            );
            assert_eq!(
                String::from_utf8_lossy(&got[13..]),
                String::from_utf8_lossy(&want)
            );
            assert_eq!(hex::encode(hash), want_hash);
            prev = want_hash;
        }
    }

    #[test]
    fn the_flat_reader_reads_what_the_nested_record_reads() {
        let ts = Utc::now();
        for e in [event(), Event::default()] {
            let (line, _) = encode(3, &ts, &e, GENESIS_HASH);
            let body = &line[..line.len() - 1];
            let nested: Record = serde_json::from_slice(body).unwrap();
            assert_eq!(parse(body).unwrap(), nested);
        }
        // Unknown members are refused by both.
        let odd = br#"{"seq":1,"ts":"2026-11-30T00:00:00Z","extra":1,"prev_hash":"","hash":""}"#;
        assert!(serde_json::from_slice::<Record>(odd).is_err());
        assert!(parse(odd).is_err());
    }

    #[test]
    fn round_trip_and_hash_covers_every_byte() {
        let ts = Utc::now();
        let (line, hash) = encode(7, &ts, &event(), GENESIS_HASH);
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        let r = decode(body).unwrap();
        assert_eq!(
            (r.seq, r.ts, &r.event, r.hash.as_str()),
            (7, ts, &event(), hash.as_str())
        );
        assert_eq!(r.prev_hash, GENESIS_HASH);
        for i in 0..body.len() {
            let mut bad = body.to_vec();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
    }
}
