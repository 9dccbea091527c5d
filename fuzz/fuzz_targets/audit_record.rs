//! The audit record parser (what verify and the readers run over every line of a segment):
//! any bytes are a record or a line error; a record re-encoded decodes to the same record.
#![no_main]

use datagate_audit::record::{decode, decode_unchecked, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let checked = decode(data);
    let _ = decode_unchecked(data);
    if let Ok(r) = checked {
        let (line, hash) = encode(r.seq, &r.ts, &r.event, &r.prev_hash);
        let again = decode(&line).expect("a re-encoded record decodes");
        assert_eq!((again.seq, again.ts, &again.event), (r.seq, r.ts, &r.event));
        assert_eq!((again.prev_hash.as_str(), again.hash.as_str()), (r.prev_hash.as_str(), hash.as_str()));
    }
});
