use super::*;

fn limit(capacity: f64, refill_rate: f64) -> Limit {
    Limit {
        capacity,
        refill_rate,
    }
}

#[tokio::test(start_paused = true)]
async fn bucket_arithmetic() {
    let l = limit(3.0, 1.0);
    let t0 = Instant::now();
    let mut b = Bucket::new(&l, t0);
    // (advance ms, try_take result, tokens after)
    let steps: &[(u64, bool, f64)] = &[
        (0, true, 2.0),
        (0, true, 1.0),
        (0, true, 0.0),
        (0, false, 0.0),
        (500, false, 0.5),
        (500, true, 0.0),
        (10_000, true, 2.0), // refill caps at capacity
    ];
    let mut now = t0;
    for (i, (advance, ok, after)) in steps.iter().enumerate() {
        now += Duration::from_millis(*advance);
        assert_eq!(b.try_take(&l, now), *ok, "step {i}");
        assert!(
            (b.tokens - after).abs() < 1e-9,
            "step {i}: {} != {after}",
            b.tokens
        );
    }
    let mut empty = Bucket::new(&l, now);
    for _ in 0..3 {
        assert!(empty.try_take(&l, now));
    }
    assert_eq!(empty.retry_after(&l), Duration::from_secs(1));
    assert_eq!(l.full_after(0.0), Duration::from_secs(3));
    assert_eq!(limit(5.0, 0.0).full_after(1.0), Duration::MAX);
    // Absurd but valid configs saturate instead of overflowing.
    assert_eq!(limit(1e12, 1e-300).full_after(0.0), Duration::MAX);
}

#[tokio::test(start_paused = true)]
async fn all_or_nothing_across_levels() {
    let m = MemoryBackend::new(1000);
    let client = BucketKey::Client("alice".into());
    let server = BucketKey::Server("github".into());
    let buckets = vec![
        (client.clone(), limit(10.0, 0.0)),
        (server.clone(), limit(2.0, 0.0)),
    ];
    assert!(
        matches!(m.take_now(&buckets), Decision::Allowed(s) if s.remaining == 1.0 && s.limit == 2.0)
    );
    assert!(matches!(m.take_now(&buckets), Decision::Allowed(_)));
    match m.take_now(&buckets) {
        Decision::Limited { level, .. } => assert_eq!(level, "server"),
        other => panic!("{other:?}"),
    }
    // The refused request charged nothing: the client bucket still has 8.
    let only_client = vec![(client, limit(10.0, 0.0))];
    assert!(matches!(m.take_now(&only_client), Decision::Allowed(s) if s.remaining == 7.0));
}

#[tokio::test(start_paused = true)]
async fn refunds_give_tokens_back_up_to_capacity() {
    let m = MemoryBackend::new(1000);
    let b = vec![(BucketKey::Client("c".into()), limit(3.0, 0.0))];
    for _ in 0..3 {
        assert!(matches!(m.take_now(&b), Decision::Allowed(_)));
    }
    assert!(matches!(m.take_now(&b), Decision::Limited { .. }));
    m.refund_now(&[b[0].clone(), b[0].clone()]);
    assert!(matches!(m.take_now(&b), Decision::Allowed(s) if s.remaining == 1.0));
    m.refund_now(&[b[0].clone(), b[0].clone(), b[0].clone(), b[0].clone()]);
    assert!(
        matches!(m.take_now(&b), Decision::Allowed(s) if s.remaining == 2.0),
        "capped"
    );
    // A bucket never charged (or forgotten) is full: nothing to give back.
    m.refund_now(&[(BucketKey::Client("new".into()), limit(3.0, 0.0))]);
    assert_eq!(m.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn refill_over_time_and_reset_headers() {
    let m = MemoryBackend::new(1000);
    let b = vec![(BucketKey::Client("c".into()), limit(2.0, 0.5))];
    m.take_now(&b);
    m.take_now(&b);
    match m.take_now(&b) {
        Decision::Limited {
            retry_after,
            snapshot,
            ..
        } => {
            assert_eq!(retry_after, Duration::from_secs(2));
            assert_eq!(snapshot.reset, Duration::from_secs(4));
        }
        other => panic!("{other:?}"),
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(matches!(m.take_now(&b), Decision::Allowed(_)));
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_and_idle_buckets_are_forgotten() {
    let m = MemoryBackend::new(64);
    for i in 0..1000 {
        m.take_now(&[(BucketKey::Client(format!("c{i}").into()), limit(5.0, 1.0))]);
    }
    assert!(m.len() <= 64 + SHARDS, "{}", m.len());
    tokio::time::advance(Duration::from_secs(1)).await;
    m.sweep();
    assert!(m.is_empty(), "refilled buckets are forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_under_concurrency() {
    let m = Arc::new(MemoryBackend::new(1000));
    let b = vec![(BucketKey::Server("s".into()), limit(100.0, 0.0))];
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let m = m.clone();
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            (0..50)
                .filter(|_| matches!(m.take_now(&b), Decision::Allowed(_)))
                .count()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += t.await.unwrap();
    }
    assert_eq!(
        allowed, 100,
        "exactly capacity allowed out of 400 concurrent attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn buckets_are_inspected_and_reset_by_filter() {
    let backend = MemoryBackend::new(100);
    let l = limit(2.0, 0.001);
    let (alice, bob, gh): (Arc<str>, Arc<str>, Arc<str>) =
        ("alice".into(), "bob".into(), "github".into());
    let tool = BucketKey::Tool {
        client: alice.clone(),
        server: gh.clone(),
        tool: "search".into(),
    };
    for key in [
        BucketKey::Client(alice.clone()),
        BucketKey::Client(bob.clone()),
        BucketKey::Server(gh.clone()),
        tool.clone(),
    ] {
        backend.take_now(&[(key, l)]);
    }
    let all = backend.inspect(&BucketFilter::default());
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|b| (b.tokens - 1.0).abs() < 1e-6));
    let of_alice = BucketFilter {
        client: Some("alice".into()),
        ..BucketFilter::default()
    };
    // Alice's own bucket and her tool bucket; not the server's (it names no client).
    assert_eq!(backend.inspect(&of_alice).len(), 2);
    let on_github_tool = BucketFilter {
        server: Some("github".into()),
        tool: Some("search".into()),
        ..BucketFilter::default()
    };
    let found = backend.inspect(&on_github_tool);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, tool);
    assert_eq!(backend.reset(&of_alice), 2);
    assert_eq!(backend.len(), 2);
    // A reset bucket is a new one: full.
    assert!(matches!(
        backend.take_now(&[(BucketKey::Client(alice.clone()), l)]),
        Decision::Allowed(s) if (s.remaining - 1.0).abs() < 1e-6
    ));
    assert_eq!(backend.reset(&BucketFilter::default()), 3);
    assert!(backend.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_changed_limit_keeps_the_tokens_up_to_its_capacity() {
    // What a reload that changes a limit does to a kept bucket.
    let backend = MemoryBackend::new(100);
    let key = BucketKey::Client("alice".into());
    let wide = limit(10.0, 0.001);
    for _ in 0..3 {
        backend.take_now(&[(key.clone(), wide)]);
    }
    // Tightened to 2: at most 2 left, not a fresh bucket of 2 on top of what was spent.
    let tight = limit(2.0, 0.001);
    let d = backend.take_now(&[(key.clone(), tight)]);
    assert!(
        matches!(d, Decision::Allowed(ref s) if (s.remaining - 1.0).abs() < 1e-6),
        "{d:?}"
    );
    // Loosened again: the tokens left stay, they do not jump to the new capacity.
    let d = backend.take_now(&[(key, wide)]);
    assert!(
        matches!(d, Decision::Allowed(ref s) if s.remaining < 1.0),
        "{d:?}"
    );
}
