//! A Telegram webhook delivery's body: JSON parsing, `update_id`, the update decoder
//! (`channels::telegram::incoming`) and the reply splitter on whatever text it yields.
#![no_main]

use aigentable::channels::telegram::{MAX_TEXT_CHARS, incoming, split_text, update_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = update_id(&v);
    // 16 MiB, the default CHANNEL_MEDIA_MAX_BYTES: a larger declared attachment is refused.
    if let Ok(Some(m)) = incoming(&v, 16 * 1024 * 1024) {
        // Small limits exercise the cutting logic on short fuzzed texts too.
        for max in [1, 7, MAX_TEXT_CHARS] {
            for part in split_text(&m.text, max) {
                assert!(part.chars().count() <= max, "a part over {max} characters");
            }
        }
    }
});
