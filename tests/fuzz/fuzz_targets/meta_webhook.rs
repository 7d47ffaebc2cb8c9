//! A Meta (WhatsApp, Messenger, Instagram) webhook delivery's body: the signature check on
//! the raw bytes, JSON parsing, the payload decoder (`channels::meta::items`) for each
//! provider with and without an account filter, the split of a batch into per-contact parts
//! (every item in exactly one), E.164 normalisation and the reply splitter at each
//! provider's limit.
#![no_main]

use aigentable::channels::meta::{
    Item, e164, in_part, items, max_text_chars, parts, sign, signature_ok,
};
use aigentable::channels::telegram::split_text;
use aigentable::model::ChannelKind;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    // The signature covers the raw bytes: ours verifies, a changed body does not.
    let sig = sign(SECRET, data);
    assert!(signature_ok(SECRET, data, &sig));
    let mut other = data.to_vec();
    other.push(b' ');
    assert!(!signature_ok(SECRET, &other, &sig));
    let _ = signature_ok(SECRET, data, &String::from_utf8_lossy(data));
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for kind in [
        ChannelKind::Whatsapp,
        ChannelKind::Messenger,
        ChannelKind::Instagram,
    ] {
        let Ok((all, foreign)) = items(kind, &v, "") else {
            continue;
        };
        assert_eq!(foreign, 0, "no account filter, nothing is foreign");
        // A filter only leaves items out.
        if let Ok((mine, _)) = items(kind, &v, "1111111111") {
            assert!(mine.len() <= all.len());
        }
        let ps = parts(&all);
        for item in &all {
            let n = ps.iter().filter(|p| in_part(item, Some(p))).count();
            assert_eq!(n, 1, "an item in {n} parts: {item:?}");
            if let Item::Message(m) = item {
                let _ = e164(&m.contact);
                for max in [1, 7, max_text_chars(kind)] {
                    for part in split_text(&m.text, max) {
                        assert!(part.chars().count() <= max, "a part over {max} characters");
                    }
                }
            }
        }
    }
});
