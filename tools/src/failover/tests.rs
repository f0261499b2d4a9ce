//! Unit tests of the failover tracker (`super`): each counted once, whatever the attempts.

use super::*;

fn id(n: u8) -> VertexId {
    VertexId([n; 32])
}

fn t() -> (Tracker, Instant) {
    (Tracker::new(3, Duration::from_secs(2)), Instant::now())
}

#[test]
fn plain_submission_is_final_once() {
    let (mut tr, t0) = t();
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], false, 0, t0);
    let s = tr.next_send(t0).expect("due");
    assert_eq!((s.tag, s.preferred), (1, 0));
    let i = tr.sent(1, 0, 0, t0);
    tr.acked(1, i, id(1));
    assert_eq!(tr.active(), 1);
    assert!(tr.decided(id(1), true, t0 + Duration::from_millis(300)).is_some());
    let f = tr.finish();
    assert_eq!((f.c.finalized, f.lost(), f.c.retries, f.c.failed_over), (1, 0, 0, 0));
    assert_eq!(tr.active(), 0);
}

#[test]
fn refused_not_ready_is_retried_elsewhere_and_counts_failed_over() {
    let (mut tr, t0) = t();
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], false, 2, t0);
    tr.next_send(t0).expect("due");
    let i = tr.sent(1, 2, 0, t0);
    tr.refused(1, i, Refusal::Other, t0);
    assert!(tr.next_send(t0).is_none(), "a short backoff first");
    let s = tr.next_send(t0 + Duration::from_millis(60)).expect("retry due");
    assert_eq!(s.tried, vec![2]);
    let j = tr.sent(1, 0, 0, t0);
    tr.acked(1, j, id(1));
    tr.decided(id(1), true, t0 + Duration::from_millis(500));
    let f = tr.finish();
    assert_eq!((f.c.finalized, f.lost(), f.c.retries, f.c.failed_over), (1, 0, 1, 1));
}

#[test]
fn timed_out_original_that_finalizes_late_is_not_double_counted() {
    let (mut tr, t0) = t();
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], false, 0, t0);
    tr.next_send(t0);
    let i = tr.sent(1, 0, 0, t0);
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(tr.ack_timeouts(t1).len(), 1);
    tr.next_send(t1).expect("retry after the ack timeout");
    let j = tr.sent(1, 1, 0, t1);
    // Both acknowledged: the late original and the retry (conflicting vertices).
    tr.acked(1, i, id(1));
    tr.acked(1, j, id(2));
    // The retry's vertex loses to the original: not decided yet as a payload.
    tr.decided(id(2), false, t1 + Duration::from_millis(100));
    assert_eq!(tr.c.rejected, 0);
    tr.decided(id(1), true, t1 + Duration::from_millis(200));
    let f = tr.finish();
    assert_eq!((f.c.finalized, f.c.rejected, f.c.duplicates_decided, f.lost(), f.c.failed_over), (1, 0, 0, 0, 0));
    // The other order: final first, then a late decision of the superseded attempt.
    let t2 = t1 + Duration::from_secs(1);
    tr.add(2, vec![2], vec![ConflictKey([2; 32])], false, 0, t2);
    tr.next_send(t2);
    let i = tr.sent(2, 0, 0, t2);
    let t3 = t2 + Duration::from_secs(3);
    tr.ack_timeouts(t3);
    tr.next_send(t3).expect("retry");
    let j = tr.sent(2, 1, 0, t3);
    tr.acked(2, j, id(4));
    tr.decided(id(4), true, t3 + Duration::from_secs(1));
    tr.acked(2, i, id(3));
    tr.decided(id(3), true, t3 + Duration::from_secs(2));
    let f = tr.finish();
    assert_eq!((f.c.finalized, f.c.duplicates_decided, f.lost(), f.c.failed_over), (2, 1, 0, 1));
}

#[test]
fn attempts_are_bounded_and_the_rest_is_lost() {
    let (mut tr, t0) = t();
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], false, 0, t0);
    let mut now = t0;
    for n in 0..3 {
        let s = tr.next_send(now).expect("due");
        let i = tr.sent(s.tag, n, 0, now);
        tr.failed(1, i, now);
        now += Duration::from_secs(1);
    }
    assert!(tr.next_send(now + Duration::from_secs(10)).is_none());
    let f = tr.finish();
    assert_eq!((f.c.retries, f.lost_unacknowledged, f.submit_errors, f.lost()), (2, 1, 1, 1));
    assert_eq!(tr.active(), 0);
}

#[test]
fn first_conflict_is_a_double_spend_a_retried_one_is_not() {
    let (mut tr, t0) = t();
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], true, 0, t0);
    tr.next_send(t0);
    let i = tr.sent(1, 0, 0, t0);
    tr.refused(1, i, Refusal::Conflict, t0);
    assert_eq!(tr.c.double_spends_refused, 1);
    // A retry after a lost reply meets the original's key: its own conflict, not a double spend.
    tr.add(2, vec![2], vec![ConflictKey([2; 32])], false, 0, t0);
    tr.next_send(t0);
    let i = tr.sent(2, 0, 0, t0);
    tr.failed(2, i, t0);
    tr.next_send(t0).expect("retry");
    let j = tr.sent(2, 1, 0, t0);
    tr.refused(2, j, Refusal::Conflict, t0);
    assert_eq!((tr.c.double_spends_refused, tr.c.own_conflicts), (1, 1));
    assert_eq!(tr.active(), 0);
    // The feed tells: the original's vertex was final.
    tr.feed_decision(2, id(9), true, Some(0), t0);
    let f = tr.finish();
    assert_eq!((f.c.finalized, f.c.resolved_from_feed, f.lost(), f.c.failed_over), (1, 1, 0, 0));
}

#[test]
fn acked_vertex_of_a_dead_node_unknown_elsewhere_is_resubmitted() {
    let (mut tr, t0) = t();
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], false, 2, t0);
    tr.next_send(t0);
    let i = tr.sent(1, 2, 0, t0);
    tr.acked(1, i, id(1));
    assert_eq!(tr.stale_ids(|n, g| n == 2 && g == 0, 10), vec![(id(1), 2, 0)]);
    let dead = t0 + Duration::from_millis(100);
    tr.unknown(id(1), dead, dead + Duration::from_millis(500));
    assert!(tr.next_send(dead + Duration::from_secs(1)).is_none());
    tr.unknown(id(1), dead, dead + Duration::from_secs(3));
    let s = tr.next_send(dead + Duration::from_secs(3)).expect("resubmitted");
    assert_eq!(s.tried, vec![2]);
    let j = tr.sent(1, 0, 1, dead + Duration::from_secs(3));
    tr.acked(1, j, id(2));
    tr.decided(id(2), true, dead + Duration::from_secs(4));
    let f = tr.finish();
    assert_eq!((f.c.finalized, f.c.abandoned, f.c.retries, f.c.failed_over, f.lost()), (1, 1, 1, 1, 0));
}

#[test]
fn early_decision_before_ack_counts() {
    let (mut tr, t0) = t();
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], false, 0, t0);
    tr.next_send(t0);
    let i = tr.sent(1, 0, 0, t0);
    assert!(tr.decided(id(1), true, t0).is_none());
    tr.acked(1, i, id(1));
    assert_eq!(tr.c.finalized, 1);
}

/// A payload whose first node died before acknowledging it, while its deliberate double spend
/// (at another node) won the key: every retry is refused as a conflict, and it is counted as
/// outspent, not lost (the key has its one final spend; nothing was lost). A payload refused
/// as a conflict whose key nobody of the load won stays lost.
#[test]
fn a_payload_outspent_by_its_final_double_spend_is_not_lost() {
    let (mut tr, t0) = t();
    let k = ConflictKey([7; 32]);
    tr.add(1, vec![1], vec![k], false, 2, t0);
    tr.next_send(t0).expect("due");
    let i = tr.sent(1, 2, 0, t0);
    tr.failed(1, i, t0); // node-2 was killed
    // The double spend of the same key, through node-0: acknowledged and final.
    tr.add(2, vec![2], vec![k], true, 0, t0);
    let mut now = t0;
    let mut twin_sent = false;
    while let Some(s) = tr.next_send(now) {
        if s.tag == 2 && !twin_sent {
            let j = tr.sent(2, 0, 0, now);
            tr.acked(2, j, id(2));
            twin_sent = true;
            continue;
        }
        let j = tr.sent(s.tag, 0, 0, now);
        tr.refused(s.tag, j, Refusal::Conflict, now);
        now += Duration::from_secs(1);
    }
    assert!(tr.decided(id(2), true, now).is_some());
    // A third payload refused the same way, whose key no payload of the load won.
    tr.add(3, vec![3], vec![ConflictKey([8; 32])], false, 2, now);
    tr.next_send(now).expect("due");
    let i = tr.sent(3, 2, 0, now);
    tr.failed(3, i, now);
    tr.next_send(now).expect("retry");
    let j = tr.sent(3, 1, 0, now);
    tr.refused(3, j, Refusal::Conflict, now);
    let f = tr.finish();
    assert_eq!((f.c.finalized, f.c.outspent, f.lost_unacknowledged, f.lost()), (1, 1, 1, 1), "{f:?}");
}

/// Backed-off retries never hold up new payloads, and come out by due time once due (the
/// queue of backed-off sends is ordered by due time, not scanned).
#[test]
fn backed_off_retries_wait_without_blocking_new_payloads() {
    let (mut tr, t0) = t();
    for tag in 1..=3 {
        tr.add(tag, vec![1], vec![ConflictKey([tag as u8; 32])], false, 0, t0);
        tr.next_send(t0).expect("due");
        let i = tr.sent(tag, 0, 0, t0);
        // 1 and 3 overloaded (200 ms), 2 not ready (50 ms).
        let why = if tag == 2 { Refusal::Other } else { Refusal::Overloaded };
        tr.refused(tag, i, why, t0);
    }
    let t1 = t0 + Duration::from_millis(10);
    tr.add(4, vec![1], vec![ConflictKey([4; 32])], false, 0, t1);
    assert_eq!(tr.next_send(t1).map(|s| s.tag), Some(4), "a new payload goes out past the backed-off ones");
    assert!(tr.next_send(t1).is_none());
    let t2 = t0 + Duration::from_millis(60);
    assert_eq!(tr.next_send(t2).map(|s| s.tag), Some(2), "the shorter backoff first");
    assert!(tr.next_send(t2).is_none());
    let t3 = t0 + Duration::from_millis(250);
    tr.add(5, vec![1], vec![ConflictKey([5; 32])], false, 0, t3);
    let order: Vec<u64> = std::iter::from_fn(|| tr.next_send(t3).map(|s| s.tag)).collect();
    assert_eq!(order, vec![1, 3, 5], "earliest due first, queueing order among equals");
}

/// A send queued with an earlier reading of the clock than the one before it (a reply task
/// read the clock after the loop did) keeps the queue ordered instead of panicking, and goes
/// out in queueing order.
#[test]
fn an_earlier_clock_reading_keeps_the_queue_in_order() {
    let (mut tr, t0) = t();
    let t1 = t0 + Duration::from_millis(5);
    tr.add(1, vec![1], vec![ConflictKey([1; 32])], false, 0, t1);
    tr.add(2, vec![1], vec![ConflictKey([2; 32])], false, 0, t0);
    assert!(tr.next_send(t0).is_none(), "nothing is due before the first send's time");
    let order: Vec<u64> = std::iter::from_fn(|| tr.next_send(t1).map(|s| s.tag)).collect();
    assert_eq!(order, vec![1, 2]);
}
