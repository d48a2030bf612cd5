//! The strict JSON walk (`mcp::scan::check`, `Cursor::strict`) against serde_json.
//!
//! The response hooks read a message's top level and leave a large result to be checked by the
//! first walk that reads it (the policy's list filter), so that walk is the only check such a
//! list gets: it must never accept what serde_json refuses (then a client could read entries
//! the gateway did not judge), and refuse what serde_json reads only for nesting deeper than
//! serde_json reads into a tree (127 levels). Whatever the input: no panic, no stack overflow.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgate::mcp::scan;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = scan::check(text);
    let theirs = serde_json::from_str::<serde::de::IgnoredAny>(text);
    match (&ours, &theirs) {
        (Ok(()), Err(e)) => panic!("checked, but serde_json refuses it ({e}): {text:?}"),
        (Err(e), Ok(_)) => {
            // Only nesting serde_json would not read into a tree either.
            let tree = serde_json::from_str::<serde_json::Value>(text)
                .expect_err(&format!("refused ({e}) what serde_json reads: {text:?}"));
            assert!(
                tree.to_string().contains("recursion limit"),
                "refused ({e}) what serde_json reads but as a tree ({tree}): {text:?}"
            );
        }
        _ => {}
    }
    // A strict walk through an object's members checks exactly as much.
    if text.trim_start().starts_with('{') {
        let mut c = scan::Cursor::strict(text);
        let walked = c.object(|c, _| c.skip().map(drop)).and_then(|()| c.end());
        assert_eq!(walked.is_ok(), ours.is_ok(), "{text:?}");
    }
    // The fast walk, for text already checked: on JSON it finds serde_json's spans (of repeated
    // keys, serde_json keeps the last); on any text it never panics.
    let members = scan::members(text);
    if let Ok(map) = serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(text) {
        let members = members.expect("an object serde_json reads walks");
        for (key, value) in map {
            let last = members
                .iter()
                .rev()
                .find(|m| m.is(&key))
                .expect("every key walks");
            assert_eq!(last.value, value.get(), "{key} in {text:?}");
        }
    }
    let elements = scan::elements(text);
    if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) {
        let items: Vec<&str> = items.iter().map(|r| r.get()).collect();
        assert_eq!(
            elements.expect("an array serde_json reads walks"),
            items,
            "{text:?}"
        );
    }
});
