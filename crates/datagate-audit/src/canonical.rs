//! Reading a record straight from its canonical line, without a general JSON parser.
//!
//! Every line the log writes has the same shape ([`crate::record::encode`]): the members in a
//! fixed order, no whitespace, `null` for absent optional values but for the three members left
//! out when absent (`cpu_ms`, `workers`, `node_id`), times as chrono writes them. Decoding such
//! a line member by member in that order is several times cheaper than serde's field matching,
//! and conversion to Parquet, the start-up scan and the open segment's reads decode every line.
//!
//! [`view`] (members borrowed from the line, what the Parquet conversion appends to its columns)
//! and [`read`] (an owned [`Record`]) accept only lines of exactly that shape and return `None`
//! for anything else — members in another order, whitespace, an unknown or repeated member, a
//! number or time written another way, a raw control character — so the caller decodes those
//! with serde, which has the last word on what a record is. Whatever they return is what serde
//! returns for the same line (property tests hold them to that over arbitrary records and
//! damaged lines). Strings with escapes are cut here and unescaped by serde_json.

use crate::record::{DatasetVersion, Event, Kind, Record};
use chrono::{DateTime, NaiveDate, Utc};
use std::borrow::Cow;

/// A record's members borrowed from its line (a string is copied only when it had escapes),
/// or from a [`Record`]: what the Parquet conversion turns into columns without building a
/// [`Record`] for every line.
#[derive(Debug, Clone, PartialEq)]
pub struct View<'a> {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub kind: Option<Kind>,
    pub event_id: Cow<'a, str>,
    pub request_id: Cow<'a, str>,
    pub key_id: Cow<'a, str>,
    pub role: Cow<'a, str>,
    pub department: Option<Cow<'a, str>>,
    pub tier: Cow<'a, str>,
    pub client_ip: Cow<'a, str>,
    pub user_agent: Cow<'a, str>,
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
    pub action: Cow<'a, str>,
    /// `(name, version)` of each dataset.
    pub datasets: Vec<(Cow<'a, str>, Option<i64>)>,
    pub query_text: Option<Cow<'a, str>>,
    pub query_sha256: Option<Cow<'a, str>>,
    pub status: u16,
    pub error: Option<Cow<'a, str>>,
    pub rows_returned: u64,
    pub bytes_returned: u64,
    pub duration_ms: u64,
    pub cpu_ms: Option<u64>,
    pub outcome: Option<Cow<'a, str>>,
    pub count: u64,
    pub workers: Option<Vec<Cow<'a, str>>>,
    pub node_id: Option<Cow<'a, str>>,
    pub prev_hash: Cow<'a, str>,
    pub hash: Cow<'a, str>,
}

impl<'a> View<'a> {
    /// A record's members, borrowed.
    pub fn of(r: &'a Record) -> Self {
        let b = |s: &'a String| Cow::Borrowed(s.as_str());
        let o = |s: &'a Option<String>| s.as_deref().map(Cow::Borrowed);
        let e = &r.event;
        View {
            seq: r.seq,
            ts: r.ts,
            kind: e.kind,
            event_id: b(&e.event_id),
            request_id: b(&e.request_id),
            key_id: b(&e.key_id),
            role: b(&e.role),
            department: o(&e.department),
            tier: b(&e.tier),
            client_ip: b(&e.client_ip),
            user_agent: b(&e.user_agent),
            method: b(&e.method),
            path: b(&e.path),
            action: b(&e.action),
            datasets: e.datasets.iter().map(|d| (b(&d.name), d.version)).collect(),
            query_text: o(&e.query_text),
            query_sha256: o(&e.query_sha256),
            status: e.status,
            error: o(&e.error),
            rows_returned: e.rows_returned,
            bytes_returned: e.bytes_returned,
            duration_ms: e.duration_ms,
            cpu_ms: e.cpu_ms,
            outcome: o(&e.outcome),
            count: e.count,
            workers: e.workers.as_ref().map(|w| w.iter().map(b).collect()),
            node_id: o(&e.node_id),
            prev_hash: b(&r.prev_hash),
            hash: b(&r.hash),
        }
    }

    /// The record, its strings owned.
    pub fn into_record(self) -> Record {
        let s = Cow::into_owned;
        let o = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned);
        Record {
            seq: self.seq,
            ts: self.ts,
            event: Event {
                kind: self.kind,
                event_id: s(self.event_id),
                request_id: s(self.request_id),
                key_id: s(self.key_id),
                role: s(self.role),
                department: o(self.department),
                tier: s(self.tier),
                client_ip: s(self.client_ip),
                user_agent: s(self.user_agent),
                method: s(self.method),
                path: s(self.path),
                action: s(self.action),
                datasets: self
                    .datasets
                    .into_iter()
                    .map(|(name, version)| DatasetVersion {
                        name: name.into_owned(),
                        version,
                    })
                    .collect(),
                query_text: o(self.query_text),
                query_sha256: o(self.query_sha256),
                status: self.status,
                error: o(self.error),
                rows_returned: self.rows_returned,
                bytes_returned: self.bytes_returned,
                duration_ms: self.duration_ms,
                cpu_ms: self.cpu_ms,
                outcome: o(self.outcome),
                count: self.count,
                workers: self
                    .workers
                    .map(|w| w.into_iter().map(Cow::into_owned).collect()),
                node_id: o(self.node_id),
            },
            prev_hash: s(self.prev_hash),
            hash: s(self.hash),
        }
    }
}

/// The record a canonical line holds, or `None` when the line is not in canonical shape (it
/// may still be a record: decode it with serde).
pub fn read(line: &[u8]) -> Option<Record> {
    view(line).map(View::into_record)
}

/// The members of a canonical line, borrowed from it; `None` when the line is not in
/// canonical shape.
pub fn view(line: &[u8]) -> Option<View<'_>> {
    // Valid UTF-8 once for the whole line: then every slice cut at an ASCII quote is a `str`.
    let text = std::str::from_utf8(line).ok()?;
    let mut c = Cursor { text, at: 0 };
    c.lit(b"{\"seq\":")?;
    let seq = c.u64()?;
    c.lit(b",\"ts\":\"")?;
    let ts = c.time()?;
    c.lit(b",\"kind\":")?;
    let kind = if c.null() {
        None
    } else {
        Some(match c.string()?.as_ref() {
            "request" => Kind::Request,
            "begin" => Kind::Begin,
            "end" => Kind::End,
            "read" => Kind::Read,
            "refusals" => Kind::Refusals,
            "log" => Kind::Log,
            _ => return None,
        })
    };
    c.lit(b",\"event_id\":")?;
    let event_id = c.string()?;
    c.lit(b",\"request_id\":")?;
    let request_id = c.string()?;
    c.lit(b",\"key_id\":")?;
    let key_id = c.string()?;
    c.lit(b",\"role\":")?;
    let role = c.string()?;
    c.lit(b",\"department\":")?;
    let department = c.optional_string()?;
    c.lit(b",\"tier\":")?;
    let tier = c.string()?;
    c.lit(b",\"client_ip\":")?;
    let client_ip = c.string()?;
    c.lit(b",\"user_agent\":")?;
    let user_agent = c.string()?;
    c.lit(b",\"method\":")?;
    let method = c.string()?;
    c.lit(b",\"path\":")?;
    let path = c.string()?;
    c.lit(b",\"action\":")?;
    let action = c.string()?;
    c.lit(b",\"datasets\":[")?;
    let datasets = c.list(|c| {
        c.lit(b"{\"name\":")?;
        let name = c.string()?;
        c.lit(b",\"version\":")?;
        let version = if c.null() { None } else { Some(c.i64()?) };
        c.lit(b"}")?;
        Some((name, version))
    })?;
    c.lit(b",\"query_text\":")?;
    let query_text = c.optional_string()?;
    c.lit(b",\"query_sha256\":")?;
    let query_sha256 = c.optional_string()?;
    c.lit(b",\"status\":")?;
    let status = u16::try_from(c.u64()?).ok()?;
    c.lit(b",\"error\":")?;
    let error = c.optional_string()?;
    c.lit(b",\"rows_returned\":")?;
    let rows_returned = c.u64()?;
    c.lit(b",\"bytes_returned\":")?;
    let bytes_returned = c.u64()?;
    c.lit(b",\"duration_ms\":")?;
    let duration_ms = c.u64()?;
    let cpu_ms = c.left_out(b",\"cpu_ms\":", Cursor::u64)?;
    c.lit(b",\"outcome\":")?;
    let outcome = c.optional_string()?;
    c.lit(b",\"count\":")?;
    let count = c.u64()?;
    let workers = c.left_out(b",\"workers\":[", |c| c.list(Cursor::string))?;
    let node_id = c.left_out(b",\"node_id\":", Cursor::string)?;
    c.lit(b",\"prev_hash\":")?;
    let prev_hash = c.string()?;
    c.lit(b",\"hash\":")?;
    let hash = c.string()?;
    c.lit(b"}")?;
    if c.at != line.len() {
        return None;
    }
    Some(View {
        seq,
        ts,
        kind,
        event_id,
        request_id,
        key_id,
        role,
        department,
        tier,
        client_ip,
        user_agent,
        method,
        path,
        action,
        datasets,
        query_text,
        query_sha256,
        status,
        error,
        rows_returned,
        bytes_returned,
        duration_ms,
        cpu_ms,
        outcome,
        count,
        workers,
        node_id,
        prev_hash,
        hash,
    })
}

/// Bytes that end the plain run of a JSON string: its closing quote, an escape, or a control
/// character (which JSON does not allow raw).
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The index of the first byte at or after `i` that ends a string's plain run (a quote, a
/// backslash or a control character; [`SPECIAL`]), or `bytes.len()`. Eight bytes are tested
/// at a time: strings are most of a line, and a byte at a time they were the reader's largest
/// cost in conversion.
fn plain_run(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A high bit in each byte of `w` that is below `n` (< 0x80). Borrows only ever flag bytes
    // above a byte that is flagged rightly, so the lowest flag is exact.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let flags = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !SPECIAL[bytes[i] as usize] {
        i += 1;
    }
    i
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Consumes `s` if the line continues with it (a fixed-size comparison the compiler
    /// unrolls, not a call to `memcmp` per member).
    fn lit<const N: usize>(&mut self, s: &[u8; N]) -> Option<()> {
        if self.bytes().get(..N) == Some(s.as_slice()) {
            self.at += N;
            Some(())
        } else {
            None
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.bytes().first() == Some(&(c as u8)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A member left out when absent (`name` is its `,"name":` and what starts the value):
    /// `Some(None)` when the line does not continue with it, `None` when its value is bad.
    fn left_out<const N: usize, T>(
        &mut self,
        name: &[u8; N],
        value: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.lit(name) {
            Some(()) => value(self).map(Some),
            None => Some(None),
        }
    }

    /// The items of a JSON array whose `[` is consumed, up to and including its `]`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut items = Vec::new();
        if self.eat(']') {
            return Some(items);
        }
        loop {
            items.push(item(self)?);
            if self.eat(']') {
                return Some(items);
            }
            self.lit(b",")?;
        }
    }

    fn null(&mut self) -> bool {
        self.lit(b"null").is_some()
    }

    /// A JSON integer as serde writes a `u64`: digits, no leading zero, no sign, no fraction.
    fn u64(&mut self) -> Option<u64> {
        let digits = self
            .bytes()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let d = &self.bytes()[..digits];
        if digits == 0 || (digits > 1 && d[0] == b'0') {
            return None;
        }
        let mut n: u64 = 0;
        for &b in d {
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        self.at += digits;
        // A fraction or exponent makes it a float: not canonical.
        match self.bytes().first() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    fn i64(&mut self) -> Option<i64> {
        if self.eat('-') {
            let n = self.u64()?;
            // -0 is written by nobody (serde writes 0): leave it to serde.
            if n == 0 {
                return None;
            }
            0i64.checked_sub_unsigned(n)
        } else {
            i64::try_from(self.u64()?).ok()
        }
    }

    /// A JSON string; escapes are left to serde_json (over just the string's bytes).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.lit(b"\"")?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut i = plain_run(bytes, start);
        match bytes.get(i) {
            Some(b'"') => {
                self.at = i + 1;
                Some(Cow::Borrowed(&self.text[start..i]))
            }
            Some(b'\\') => {
                // Find the closing quote past the escapes, then let serde_json unescape.
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        b if b < 0x20 => return None,
                        _ => i += 1,
                    }
                }
                if i >= bytes.len() {
                    return None;
                }
                let s: String = serde_json::from_str(&self.text[start - 1..=i]).ok()?;
                self.at = i + 1;
                Some(Cow::Owned(s))
            }
            _ => None,
        }
    }

    fn optional_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null() {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A time as chrono writes a `DateTime<Utc>` (the opening quote consumed):
    /// `YYYY-MM-DDTHH:MM:SS`, then `.` and 3, 6 or 9 digits unless whole, then `Z"`.
    fn time(&mut self) -> Option<DateTime<Utc>> {
        let b = self.bytes();
        if b.len() < 21 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, &d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })
        };
        let shape = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if shape.iter().any(|&(i, c)| b[i] != c) {
            return None;
        }
        let year = num(0..4)?;
        let (month, day) = (num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let (nanos, end) = match b[19] {
            b'Z' => (0, 19),
            b'.' => {
                let digits = b[20..].iter().take_while(|d| d.is_ascii_digit()).count();
                if !matches!(digits, 3 | 6 | 9) {
                    return None;
                }
                let frac = num(20..20 + digits)?;
                (frac * 10u32.pow(9 - digits as u32), 20 + digits)
            }
            _ => return None,
        };
        if b.get(end..end + 2) != Some(b"Z\"".as_slice()) || second > 59 {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
        let time = date.and_hms_nano_opt(hour, minute, second, nanos)?;
        self.at += end + 2;
        Some(time.and_utc())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{GENESIS_HASH, encode};
    use proptest::prelude::*;

    fn serde_read(line: &[u8]) -> Option<Record> {
        crate::record::decode_with_serde(line).ok()
    }

    pub(crate) fn text() -> impl Strategy<Value = String> {
        // Any characters (control characters, quotes, backslashes, CJK) some of the time.
        prop_oneof![
            any::<String>(),
            "[ -~路径]{0,40}",
            "[\\x00-\\x1f\"\\\\/a路\\x7f]{0,12}",
            "[a-z]{0,3}"
        ]
    }

    prop_compose! {
        /// Arbitrary events: texts from [`text`], integers up to `max`, dataset names and
        /// worker URLs from `item`, at least `min_workers` workers when there are any.
        pub(crate) fn events_with(max: u64, item: BoxedStrategy<String>, min_workers: usize)(
            strings in proptest::collection::vec(text(), 10),
            optional in proptest::collection::vec(proptest::option::of(text()), 5),
            datasets in proptest::collection::vec((item.clone(), proptest::option::of(any::<i64>())), 0..3),
            numbers in (any::<u16>(), 0..=max, 0..=max, 0..=max, proptest::option::of(0..=max)),
            count in 0..=max,
            workers in proptest::option::of(proptest::collection::vec(item.clone(), min_workers..3)),
            node_id in proptest::option::of(text()),
            kind in proptest::option::of(prop_oneof![Just(Kind::Request), Just(Kind::Begin), Just(Kind::End), Just(Kind::Read), Just(Kind::Refusals), Just(Kind::Log)]),
        ) -> Event {
            let s = |i: usize| strings[i].clone();
            Event {
                kind,
                event_id: s(0),
                request_id: s(1),
                key_id: s(2),
                role: s(3),
                department: optional[0].clone(),
                tier: s(4),
                client_ip: s(5),
                user_agent: s(6),
                method: s(7),
                path: s(8),
                action: s(9),
                datasets: datasets
                    .into_iter()
                    .map(|(name, version)| DatasetVersion { name, version })
                    .collect(),
                query_text: optional[1].clone(),
                query_sha256: optional[2].clone(),
                status: numbers.0,
                error: optional[3].clone(),
                rows_returned: numbers.1,
                bytes_returned: numbers.2,
                duration_ms: numbers.3,
                cpu_ms: numbers.4,
                outcome: optional[4].clone(),
                count,
                workers,
                node_id,
            }
        }
    }

    fn events() -> impl Strategy<Value = Event> {
        events_with(u64::MAX, text().boxed(), 0)
    }

    pub(crate) fn times() -> impl Strategy<Value = DateTime<Utc>> {
        // Whole seconds, milliseconds and microseconds are written with 0, 3 and 6 digits.
        prop_oneof![
            any::<i64>(),
            any::<i64>().prop_map(|n| n / 1_000_000_000 * 1_000_000_000),
            any::<i64>().prop_map(|n| n / 1_000_000 * 1_000_000),
            any::<i64>().prop_map(|n| n / 1_000 * 1_000),
        ]
        .prop_map(DateTime::from_timestamp_nanos)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Every line the log writes is read here, and read as serde reads it.
        #[test]
        fn canonical_lines_are_read_as_serde_reads_them(
            event in events(), ts in times(), seq in any::<u64>(),
        ) {
            let (line, _) = encode(seq, &ts, &event, GENESIS_HASH);
            let line = &line[..line.len() - 1];
            let got = read(line);
            prop_assert!(got.is_some(), "{}", String::from_utf8_lossy(line));
            prop_assert_eq!(&got, &serde_read(line));
            // The view the conversion builds its columns from is the record's own.
            let record = got.unwrap();
            prop_assert_eq!(view(line).unwrap(), View::of(&record));
        }

        /// A damaged line (a byte changed, inserted or removed anywhere) is either not read
        /// here (serde decides) or read exactly as serde reads it.
        #[test]
        fn damaged_lines_are_left_to_serde_or_read_as_it_reads_them(
            event in events(), ts in times(), seq in any::<u64>(),
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            let (line, _) = encode(seq, &ts, &event, GENESIS_HASH);
            let mut line = line[..line.len() - 1].to_vec();
            for (at, byte, how) in edits {
                let i = at.index(line.len() + 1);
                match how {
                    0 if i < line.len() => line[i] = byte,
                    1 => line.insert(i, byte),
                    _ if i < line.len() => { line.remove(i); }
                    _ => {}
                }
            }
            if let Some(got) = read(&line) {
                prop_assert_eq!(Some(got), serde_read(&line), "{}", String::from_utf8_lossy(&line));
            }
        }

        /// The eight-bytes-at-a-time scan stops where a byte-at-a-time one does, over bytes
        /// dense in quotes, backslashes, control characters and bytes just beside them.
        #[test]
        fn plain_runs_end_where_a_byte_by_byte_scan_ends(
            bytes in proptest::collection::vec(
                prop_oneof![
                    8 => 0x20u8..0x7f,
                    1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20,
                    1 => prop_oneof![Just(0x21u8), Just(0x23), Just(0x5b), Just(0x5d), Just(0x7f)],
                    2 => 0x80u8..=0xff,
                ],
                0..80,
            ),
            start in any::<proptest::sample::Index>(),
        ) {
            let start = start.index(bytes.len() + 1);
            let slow = (start..bytes.len())
                .find(|&i| SPECIAL[bytes[i] as usize])
                .unwrap_or(bytes.len());
            prop_assert_eq!(plain_run(&bytes, start), slow);
        }
    }

    /// Damage aimed at what the reader itself parses: numbers, times, nulls and members.
    #[test]
    fn lines_of_another_shape_are_left_to_serde() {
        let event = Event {
            kind: Some(Kind::Begin),
            key_id: "k1".into(),
            datasets: vec![DatasetVersion {
                name: "a.b".into(),
                version: Some(-3),
            }],
            cpu_ms: Some(5),
            status: 200,
            count: 1,
            ..Default::default()
        };
        let ts = DateTime::parse_from_rfc3339("2026-11-30T10:20:30.123Z")
            .unwrap()
            .to_utc();
        let (line, _) = encode(42, &ts, &event, GENESIS_HASH);
        let line = String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
        assert_eq!(read(line.as_bytes()), serde_read(line.as_bytes()));
        for (from, to) in [
            ("\"seq\":42", "\"seq\":042"),
            ("\"seq\":42", "\"seq\":42.0"),
            ("\"seq\":42", "\"seq\":4e1"),
            ("\"seq\":42", "\"seq\": 42"),
            ("\"status\":200", "\"status\":70000"),
            ("\"version\":-3", "\"version\":-0"),
            ("\"version\":-3", "\"version\":-9223372036854775809"),
            ("\"cpu_ms\":5", "\"cpu_ms\":null"),
            (".123Z", ".1234Z"),
            ("30.123Z", "60.123Z"),
            (".123Z", ".123+00:00"),
            ("2026-11-30", "2026-02-30"),
            ("\"kind\":\"begin\"", "\"kind\":\"Begin\""),
            ("\"role\":\"\"", "\"role\":\"\",\"role\":\"\""),
            ("\"role\":\"\"", "\"role\":\"\",\"extra\":1"),
            ("\"tier\":\"\",", ""),
        ] {
            assert!(line.contains(from), "{from}");
            let changed = line.replacen(from, to, 1);
            assert_eq!(read(changed.as_bytes()), None, "{changed}");
        }
        // Serde still reads some of them: the caller falls back to it.
        let spaced = line.replacen("\"seq\":42", "\"seq\": 42", 1);
        assert_eq!(serde_read(spaced.as_bytes()).map(|r| r.seq), Some(42));
    }
}
