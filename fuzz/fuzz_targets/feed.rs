//! Shared by the decoder targets (included with `#[path]`, not a target of its own).

use datagate_ingest::decode::PushDecoder;

/// Feeds `data` to `decoder` in two chunks split at `split`, taking what it holds back after
/// each, then ends it: any outcome but a panic is fine.
pub fn feed(decoder: &mut dyn PushDecoder, data: &[u8], split: usize) {
    let (a, b) = data.split_at(split.min(data.len()));
    let drained = |d: &mut dyn PushDecoder| loop {
        match d.held() {
            Ok(batches) if batches.is_empty() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    };
    if decoder.push(a).is_ok() && drained(decoder) && decoder.push(b).is_ok() && drained(decoder)
    {
        let _ = decoder.finish();
        drained(decoder);
    }
}
