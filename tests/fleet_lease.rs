//! The leader lease on a real PostgreSQL: one holder at a time, a term that
//! grows at each change of holder, and writes under an old term refused.

mod common;

use std::time::Duration;

use purgeq::fleet::{Claim, NodeName, Term, Transition, transition};
use purgeq::store::StoreError;
use purgeq::store::fleet::{FleetDb, FleetError};

use common::postgres::TestDatabase;

/// Short leases, so a lapse takes a fraction of a second to wait for.
const TTL: Duration = Duration::from_millis(500);
const LAPSE: Duration = Duration::from_millis(800);

fn node(name: &str) -> NodeName {
    NodeName::parse(name).unwrap()
}

fn term(n: i64) -> Term {
    Term::new(n).unwrap()
}

async fn fleet(test: &str) -> Option<(TestDatabase, FleetDb)> {
    let db = TestDatabase::create(test).await?;
    let fleet = FleetDb::connect(&db.url)
        .await
        .expect("connect and migrate");
    Some((db, fleet))
}

async fn done(db: TestDatabase, fleet: FleetDb) {
    fleet.pool().close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn the_first_claim_leads_and_the_others_follow_it() {
    let Some((db, fleet)) = fleet("the_first_claim_leads_and_the_others_follow_it").await else {
        return;
    };
    let (a, b) = (node("a"), node("b"));
    let first = fleet.claim(&a, None, TTL).await.unwrap();
    assert_eq!(
        transition(None, &first),
        Transition::Elected { term: term(1) }
    );

    let lost = fleet.claim(&b, None, TTL).await.unwrap();
    assert_eq!(
        lost,
        Claim {
            won: None,
            holder: Some((a.clone(), term(1)))
        }
    );
    // A renewal keeps the term, and so the batches it cut stay its own.
    let renewed = fleet.claim(&a, Some(term(1)), TTL).await.unwrap();
    assert_eq!(
        transition(Some(term(1)), &renewed),
        Transition::Renewed { term: term(1) }
    );
    assert_eq!(fleet.holder().await.unwrap(), Some((a, term(1))));
    done(db, fleet).await;
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_under_a_new_term_and_the_old_leader_is_fenced() {
    let Some((db, fleet)) =
        fleet("a_lapsed_lease_is_taken_over_under_a_new_term_and_the_old_leader_is_fenced").await
    else {
        return;
    };
    let (a, b) = (node("a"), node("b"));
    fleet.claim(&a, None, TTL).await.unwrap();
    tokio::time::sleep(LAPSE).await;
    let taken = fleet.claim(&b, None, TTL).await.unwrap();
    assert_eq!(
        transition(None, &taken),
        Transition::Elected { term: term(2) }
    );

    // The old leader comes back (a pause, a lost connection): its renewal
    // loses, its release does nothing, and its writes are refused.
    let back = fleet.claim(&a, Some(term(1)), TTL).await.unwrap();
    assert_eq!(
        transition(Some(term(1)), &back),
        Transition::Deposed {
            holder: Some((b.clone(), term(2)))
        }
    );
    assert!(!fleet.release(&a, term(1)).await.unwrap());
    assert!(matches!(
        fleet.begin_fenced(&a, term(1)).await,
        Err(FleetError::Fenced(t)) if t == term(1)
    ));
    // The same name under the new term is not the old leader either.
    assert!(matches!(
        fleet.begin_fenced(&a, term(2)).await,
        Err(FleetError::Fenced(_))
    ));
    let tx = fleet
        .begin_fenced(&b, term(2))
        .await
        .expect("the leader writes");
    tx.commit().await.unwrap();
    done(db, fleet).await;
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let Some((db, fleet)) = fleet("a_released_lease_is_taken_at_once").await else {
        return;
    };
    let (a, b) = (node("a"), node("b"));
    fleet
        .claim(&a, None, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(fleet.release(&a, term(1)).await.unwrap());
    assert_eq!(fleet.holder().await.unwrap(), None);
    let taken = fleet.claim(&b, None, TTL).await.unwrap();
    assert_eq!(taken.won, Some(term(2)));
    done(db, fleet).await;
}

#[tokio::test]
async fn of_many_nodes_claiming_at_once_exactly_one_wins() {
    let Some((db, fleet)) = fleet("of_many_nodes_claiming_at_once_exactly_one_wins").await else {
        return;
    };
    for round in 1..=3 {
        let names: Vec<NodeName> = (0..6).map(|i| node(&format!("n{i}"))).collect();
        let claims =
            futures::future::join_all(names.iter().map(|n| fleet.claim(n, None, TTL))).await;
        let winners: Vec<Term> = claims
            .iter()
            .filter_map(|c| c.as_ref().unwrap().won)
            .collect();
        assert_eq!(winners, vec![term(round)], "round {round}: {claims:?}");
        tokio::time::sleep(LAPSE).await;
    }
    done(db, fleet).await;
}

#[tokio::test]
async fn a_takeover_waits_for_the_old_leaders_write_in_flight() {
    let Some((db, fleet)) = fleet("a_takeover_waits_for_the_old_leaders_write_in_flight").await
    else {
        return;
    };
    let (a, b) = (node("a"), node("b"));
    fleet.claim(&a, None, TTL).await.unwrap();
    let write = fleet.begin_fenced(&a, term(1)).await.unwrap();
    tokio::time::sleep(LAPSE).await;
    // The lease lapsed, but a's write holds the row: b's claim gives up
    // after its lock timeout instead of interleaving with that write.
    let blocked = fleet.claim(&b, None, TTL).await;
    assert!(
        matches!(&blocked, Err(StoreError::Busy { .. })),
        "{blocked:?}"
    );
    write.commit().await.unwrap();
    assert_eq!(fleet.claim(&b, None, TTL).await.unwrap().won, Some(term(2)));
    done(db, fleet).await;
}

#[tokio::test]
async fn a_leader_paused_inside_a_write_cannot_hold_off_failover() {
    let Some((db, fleet)) = fleet("a_leader_paused_inside_a_write_cannot_hold_off_failover").await
    else {
        return;
    };
    let (a, b) = (node("a"), node("b"));
    fleet.claim(&a, None, TTL).await.unwrap();
    let write = fleet.begin_fenced(&a, term(1)).await.unwrap();
    // Paused (SIGSTOP) for longer than the server lets a session idle in
    // a transaction: the server ends that session and frees the row.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fleet.claim(&b, None, TTL).await.unwrap().won, Some(term(2)));
    // When the old leader wakes, its write is gone with its session.
    assert!(write.commit().await.is_err());
    done(db, fleet).await;
}

/// The store's writer checks the fence: while node a writes as leader
/// under term 1, its pipeline's writes commit; once b took the lease over,
/// the same writes are refused (for good, saying why) and nothing is
/// recorded, while intents are still stored (every node ingests).
#[tokio::test]
async fn the_store_refuses_a_deposed_leaders_writes_but_not_its_intents() {
    use purgeq::store::{CutLimits, NewRequest, QuotaAccount, RequestId, Store, Timestamp};
    use purgeq::target::{Kind, Priority, PurgeTarget};
    let Some((db, fleet)) =
        fleet("the_store_refuses_a_deposed_leaders_writes_but_not_its_intents").await
    else {
        return;
    };
    let store = Store::open_postgres(&fleet).await.expect("open");
    let post = |url: &str| NewRequest {
        id: RequestId::generate(),
        received_at: time::OffsetDateTime::now_utc(),
        source: "test".into(),
        label: None,
        priority: Priority::Normal,
        targets: vec![PurgeTarget {
            endpoint_id: "ep".into(),
            kind: Kind::File,
            url: url.into(),
        }],
        preload_after_purge: Vec::new(),
        preload_only: Vec::new(),
        cache_facts: Default::default(),
        origin_purges: Vec::new(),
        skip_origin_caches: Vec::new(),
        tags: Vec::new(),
        via_tag: Default::default(),
    };
    let limits = CutLimits {
        max_files: 10,
        max_directories: 10,
        account: QuotaAccount {
            subscription_id: "sub".into(),
            day: "2026-12-03".into(),
        },
        files_per_day: 2_000,
        directories_per_day: 500,
        reserve_files: 0,
        reserve_directories: 0,
    };
    let now = || Timestamp::new(time::OffsetDateTime::now_utc());
    let (a, b) = (node("a"), node("b"));
    fleet.claim(&a, None, TTL).await.unwrap();
    let term_1 = store.fenced(&a, term(1));
    store
        .enqueue(post("http://e.com/1"))
        .await
        .expect("enqueue");
    let batch = term_1.cut_batch("ep", limits.clone(), now()).await;
    assert!(matches!(batch, Ok(Some(_))), "{batch:?}");

    tokio::time::sleep(LAPSE).await;
    fleet.claim(&b, None, TTL).await.unwrap();
    store
        .enqueue(post("http://e.com/2"))
        .await
        .expect("intents go on");
    let refused = term_1
        .cut_batch("ep", limits.clone(), now())
        .await
        .expect_err("fenced");
    // Final, not retryable (issue 28): the term is over for good, and an
    // old pipeline that kept "trying again" kept a deposed leader writing.
    assert!(!refused.is_retryable(), "{refused:?}");
    assert!(
        refused
            .to_string()
            .contains("no longer leads the fleet under term 1"),
        "{refused}"
    );
    let counts = store.state_counts().await.expect("counts");
    assert_eq!(
        (counts.pending, counts.sending),
        (1, 1),
        "nothing cut under term 1"
    );

    // The fence is the write's own term, not what the node believes now:
    // a leads again (term 3), and a write of its term-1 pipeline is still
    // refused, while its term-3 pipeline writes.
    tokio::time::sleep(LAPSE).await;
    let claim = fleet.claim(&a, None, TTL).await.unwrap();
    assert_eq!(claim.won, Some(term(3)), "{claim:?}");
    let stale = term_1.cut_batch("ep", limits.clone(), now()).await;
    assert!(matches!(stale, Err(StoreError::Fenced { .. })), "{stale:?}");
    let current = store
        .fenced(&a, term(3))
        .cut_batch("ep", limits, now())
        .await;
    assert!(matches!(current, Ok(Some(_))), "{current:?}");
    store.close().await;
    db.drop_now().await;
}
