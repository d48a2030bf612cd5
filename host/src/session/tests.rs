use super::*;

fn config(key: Option<[u8; 32]>) -> SessionConfig {
    SessionConfig {
        key,
        ttl: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(60),
        max_active: 3,
    }
}

#[test]
fn round_trip_and_binding() {
    let (s, generated) = Sessions::new(&config(Some([7; 32])));
    assert!(!generated);
    let token = s.mint("github", "upstream-abc", None);
    assert!(token.starts_with("mg1."));
    assert!(
        token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "visible ASCII"
    );
    assert!(!token.contains("upstream-abc"));
    let claims = s.open("github", &token, None).unwrap();
    assert_eq!(claims.upstream_session, "upstream-abc");
    assert_eq!(claims.caller, None);
    // Another route, another caller, a tampered token: all unknown.
    assert_eq!(s.open("files", &token, None), Err(SessionError::Unknown));
    assert_eq!(
        s.open("github", &token, Some("mallory")),
        Err(SessionError::WrongCaller)
    );
    let mut bytes = token.clone().into_bytes();
    let last = bytes.len() - 3;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        s.open("github", std::str::from_utf8(&bytes).unwrap(), None),
        Err(SessionError::Unknown)
    );
    assert_eq!(
        s.open("github", "garbage", None),
        Err(SessionError::Unknown)
    );
    assert_eq!(s.open("github", "mg1.", None), Err(SessionError::Unknown));
}

#[test]
fn another_replica_with_the_same_key_reads_it() {
    let (a, _) = Sessions::new(&config(Some([9; 32])));
    let (b, _) = Sessions::new(&config(Some([9; 32])));
    let (c, _) = Sessions::new(&config(Some([1; 32])));
    let token = a.mint("r", "up-1", Some("alice"));
    assert_eq!(
        b.open("r", &token, Some("alice")).unwrap().upstream_session,
        "up-1"
    );
    assert_eq!(
        c.open("r", &token, Some("alice")),
        Err(SessionError::Unknown)
    );
}

#[test]
fn delete_ends_and_expiry_expires() {
    let (s, _) = Sessions::new(&config(Some([3; 32])));
    let token = s.mint("r", "u", None);
    let claims = s.open("r", &token, None).unwrap();
    s.end(&claims);
    assert_eq!(s.open("r", &token, None), Err(SessionError::Ended));
    assert_eq!(s.active_count(), 0);

    let expired = SessionClaims {
        expires_at: now_unix() - 1,
        ..claims
    };
    let token = s.seal("r", &expired);
    assert_eq!(s.open("r", &token, None), Err(SessionError::Expired));
}

#[test]
fn a_token_opened_once_is_answered_from_the_table_alike() {
    let (a, _) = Sessions::new(&config(Some([9; 32])));
    let (b, _) = Sessions::new(&config(Some([9; 32])));
    let token = a.mint("r", "up-1", Some("alice"));
    let first = b.open("r", &token, Some("alice")).unwrap(); // decrypted
    let again = b.open("r", &token, Some("alice")).unwrap(); // from the table
    assert_eq!(first, again);
    assert_eq!(first, a.open("r", &token, Some("alice")).unwrap());
    // The checks still apply on the known path.
    assert_eq!(b.open("r", &token, None), Err(SessionError::WrongCaller));
    assert_eq!(
        b.open("other", &token, Some("alice")),
        Err(SessionError::Unknown)
    );
    b.end(&again);
    assert_eq!(b.open("r", &token, Some("alice")), Err(SessionError::Ended));
    // The token index never outgrows the tracked sessions.
    for i in 0..10 {
        b.mint("r", &format!("u{i}"), None);
    }
    let t = b.table.lock().unwrap();
    assert!(t.active.len() <= 3 && t.tokens.len() == t.active.len());
}

#[test]
fn request_ids_round_trip_and_resist_tampering() {
    let (a, _) = Sessions::new(&config(Some([5; 32])));
    let (b, _) = Sessions::new(&config(Some([5; 32])));
    let (c, _) = Sessions::new(&config(Some([6; 32])));
    let claims = HookedId {
        caller: "alice".into(),
        method: "tools/list".into(),
        target: None,
        client_id: r#""\u0031""#.into(),
    };
    let id = a.seal_request_id("r", &claims);
    assert!(id.starts_with(REQUEST_ID_PREFIX));
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "an id every JSON serialiser writes as it is: {id}"
    );
    assert!(!id.contains("alice"));
    assert_eq!(
        b.open_request_id("r", &id),
        Some(claims.clone()),
        "another replica"
    );
    assert_eq!(b.open_request_id("other", &id), None, "another route");
    assert_eq!(c.open_request_id("r", &id), None, "another key");
    let with_target = HookedId {
        target: Some(String::new()),
        ..claims.clone()
    };
    let id2 = a.seal_request_id("r", &with_target);
    assert_eq!(a.open_request_id("r", &id2), Some(with_target));
    // Every truncation and every single-bit flip is refused, never a panic.
    for cut in 0..id.len() {
        assert_eq!(a.open_request_id("r", &id[..cut]), None, "cut at {cut}");
    }
    let bytes = id.as_bytes();
    for i in REQUEST_ID_PREFIX.len()..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 1 << bit;
            if let Ok(text) = std::str::from_utf8(&flipped)
                && text != id
            {
                assert_eq!(a.open_request_id("r", text), None, "byte {i} bit {bit}");
            }
        }
    }
    // A session id is not a request id, nor the other way round.
    let session = a.mint("r", "u", Some("alice"));
    assert_eq!(a.open_request_id("r", &session), None);
    assert_eq!(a.open("r", &id, Some("alice")), Err(SessionError::Unknown));
}

#[test]
fn a_full_table_forgets_the_least_recently_used_and_stays_bounded() {
    let (s, _) = Sessions::new(&config(Some([2; 32])));
    let a = s.mint("r", "a", None);
    let b = s.mint("r", "b", None);
    let _c = s.mint("r", "c", None);
    // `a` used again: `b` is now the least recently used, and the one a new session evicts.
    s.open("r", &a, None).unwrap();
    s.mint("r", "d", None);
    let tracked: Vec<String> = s.active(Some("r")).into_iter().map(|e| e.id).collect();
    assert_eq!(tracked.len(), 3);
    let b_id = s.open("r", &b, None).unwrap().id; // reopened: tracked again
    assert!(
        tracked.iter().all(|id| *id != b_id),
        "b was the one forgotten"
    );
    // Many more sessions than the table holds, and as many ended: all bounded.
    for i in 0..10_000 {
        let t = s.mint("r", &format!("u{i}"), None);
        if i % 2 == 0 {
            s.end(&s.open("r", &t, None).unwrap());
        }
    }
    let t = s.table.lock().unwrap();
    assert!(t.active.len() <= 3 && t.tokens.len() == t.active.len());
    assert!(t.ended.len() <= 3);
}

#[test]
fn tracking_is_bounded() {
    let (s, _) = Sessions::new(&config(None));
    let tokens: Vec<String> = (0..5)
        .map(|i| s.mint("r", &format!("u{i}"), None))
        .collect();
    assert_eq!(s.active_count(), 3);
    // Every token still opens: tracking is bookkeeping, not the session's life.
    for t in &tokens {
        assert!(s.open("r", t, None).is_ok());
    }
    assert_eq!(s.active(Some("r")).len(), 3);
    assert!(s.active(Some("other")).is_empty());
}
