//! A Socket.IO frame as the server decodes it: the socket.io packet parser the server uses
//! (socketioxide's CommonParser), the event name, the payload as the handlers receive it
//! (`TryData<Value>`), then the handlers' own decoding (`realtime::decode_event`: payload
//! shape, ids, fields, the size the payload cap measures), as a visitor and as staff.
#![no_main]

use aigentable::realtime::decode_event;
use libfuzzer_sys::fuzz_target;
use socketioxide_core::Str;
use socketioxide_core::packet::PacketData;
use socketioxide_core::parser::{Parse, ParserState};
use socketioxide_parser_common::CommonParser;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let state = ParserState::default();
    let Ok(packet) = CommonParser.decode_str(&state, Str::from(text.to_owned())) else {
        return;
    };
    let (PacketData::Event(mut value, _) | PacketData::BinaryEvent(mut value, _)) = packet.inner
    else {
        return;
    };
    let Ok(event) = CommonParser.read_event(&value).map(str::to_owned) else {
        return;
    };
    let payload = CommonParser
        .decode_value::<serde_json::Value>(&mut value, true)
        .map_err(|e| e.to_string());
    for visitor in [true, false] {
        if let Err(e) = decode_event(&event, payload.clone(), visitor) {
            assert!(e.status.is_client_error(), "a payload error is a 4xx");
        }
    }
});
