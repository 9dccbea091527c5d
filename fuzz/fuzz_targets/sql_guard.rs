//! The SQL guard (parse → read-only and complexity checks): any text is accepted as one
//! read-only statement or refused with a problem; never a panic, a hang or a stack overflow.
#![no_main]

use datagate_query::QueryLimits;
use datagate_query::sql::parse_readonly;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let limits = QueryLimits::default();
    let _ = parse_readonly(sql, &limits, false);
});
