//! The SSE event splitter, differential over chunk boundaries (the input is the stream, cut at
//! boundaries drawn from it, and byte by byte).
//!
//! The same bytes split at any boundaries give the same events, byte for byte; events and the
//! unterminated rest put back together are the input (nothing lost, nothing added); and an event
//! whose data a hook rewrote is one complete event carrying exactly the new data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgate::mcp::sse::{EventSplitter, event_data, replace_data};

fn split(chunks: &[&[u8]]) -> (Vec<bytes::Bytes>, bytes::Bytes) {
    let mut splitter = EventSplitter::default();
    let mut events = Vec::new();
    for chunk in chunks {
        splitter.push(chunk);
        while let Some(event) = splitter.next_event() {
            events.push(event);
        }
    }
    (events, splitter.take_rest())
}

/// Chunk lengths (0 to 16, empty chunks included) drawn from a generator seeded by the input,
/// so every input is also tried at boundaries of its own.
fn cut(stream: &[u8]) -> Vec<&[u8]> {
    let mut state = stream.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let (head, tail) = rest.split_at(((state % 17) as usize).min(rest.len()));
        chunks.push(head);
        rest = tail;
    }
    chunks
}

fuzz_target!(|stream: &[u8]| {
    let whole = split(&[stream]);
    assert_eq!(
        whole,
        split(&cut(stream)),
        "chunk boundaries changed the events"
    );
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(
        whole,
        split(&bytes),
        "byte-by-byte chunks changed the events"
    );

    let (events, rest) = whole;
    let rebuilt: Vec<u8> = events
        .iter()
        .flat_map(|e| e.iter().copied())
        .chain(rest.iter().copied())
        .collect();
    assert_eq!(rebuilt, stream, "the splitter lost or added bytes");

    let data = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
    for event in &events {
        let _ = event_data(event);
        let replaced = replace_data(event, data);
        let (again, left) = split(&[&replaced]);
        assert_eq!(
            again.len(),
            1,
            "a rewritten event is not one event: {replaced:?}"
        );
        assert!(left.is_empty());
        assert_eq!(
            event_data(&again[0]).as_deref(),
            Some(&data[..]),
            "rewritten data"
        );
    }
});
