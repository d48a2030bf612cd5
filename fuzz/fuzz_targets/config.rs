//! The config loader on arbitrary text: YAML parsing, `${VAR}` interpolation, every section's
//! validation. Never a panic, and a refused config always says where: each error that names a
//! line names one inside the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgate::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Two variables are set, so interpolation has something to splice in (including YAML).
    let env = |name: &str| match name {
        "KEY" => Some("k3y-from-the-environment".to_string()),
        "YAML" => Some("{a: [1, 2]}\nb: c".to_string()),
        _ => None,
    };
    // Lines as YAML counts them: CR LF, a lone CR and LF each end one.
    let lines = text.replace("\r\n", "\n").matches(['\r', '\n']).count() + 1;
    if let Err(errors) = Config::parse(text, "fuzz.yaml", &env) {
        assert!(!errors.errors.is_empty(), "a refusal without a reason");
        for e in &errors.errors {
            assert!(
                !e.message.is_empty(),
                "an error without a message at {}",
                e.path
            );
            if let Some(line) = e.line {
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of a {lines}-line text: {e:?}"
                );
            }
        }
    }
});
