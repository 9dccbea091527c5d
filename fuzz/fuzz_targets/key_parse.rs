//! Key parsing: any text is a key token or a refusal, and a parsed token prints back to the
//! text it came from.
#![no_main]

use datagate_catalog::KeyToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = KeyToken::parse(text) {
        assert_eq!(token.expose(), text, "a parsed key prints back as given");
    }
});
