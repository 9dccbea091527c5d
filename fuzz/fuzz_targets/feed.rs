//! Shared by the decoder targets (included with `#[path]`, not a target of its own).

use datagate_ingest::decode::PushDecoder;

/// Feeds `data` to `decoder` in two chunks split at `split`, then ends it: any outcome but a
/// panic is fine.
pub fn feed(decoder: &mut dyn PushDecoder, data: &[u8], split: usize) {
    let (a, b) = data.split_at(split.min(data.len()));
    if decoder.push(a).is_ok() && decoder.push(b).is_ok() {
        let _ = decoder.finish();
    }
}
