use super::Collector;
use crate::mqtt::tests::outgoing;
use crate::mqtt::{Outgoing, QoS, detached};

fn payloads(publishes: &[Outgoing]) -> Vec<&str> {
    publishes.iter().map(|p| std::str::from_utf8(&p.payload).unwrap()).collect()
}

#[test]
fn without_a_collector_publishes_go_to_the_queue() {
    let (h, mut rx) = detached(10);
    h.publish_batch(vec![outgoing("a")]);
    assert!(h.publish("t", "b", QoS::AtMostOnce, false));
    let got: Vec<String> = rx.drain().into_iter().map(|c| c.payload).collect();
    assert_eq!(got, ["a", "b"]);
}

#[test]
fn a_collector_takes_its_connections_publishes_in_order_and_nothing_reaches_the_queue() {
    let (h, mut rx) = detached(10);
    let collector = Collector::begin(&h.shared);
    h.publish_batch(vec![outgoing("a"), outgoing("b")]);
    assert!(h.publish("t", "c", QoS::AtMostOnce, true), "a single publish is taken too");
    h.publish_batch(vec![outgoing("d")]);
    let collected = collector.finish();
    assert_eq!(payloads(&collected), ["a", "b", "c", "d"]);
    assert!(rx.drain().is_empty(), "nothing queued");
    assert_eq!(h.shared.metrics.publish_queue_depth.get(), 0, "nothing counted as queued");

    h.publish_batch(vec![outgoing("after")]);
    assert_eq!(rx.drain().len(), 1, "finished: the queue again");
}

#[test]
fn another_connections_publishes_are_not_collected() {
    let (mine, _mine_rx) = detached(10);
    let (other, mut other_rx) = detached(10);
    let collector = Collector::begin(&mine.shared);
    other.publish_batch(vec![outgoing("theirs")]);
    assert!(collector.finish().is_empty());
    assert_eq!(other_rx.drain().len(), 1, "queued on its own connection");
}

#[test]
fn a_collector_dropped_unfinished_stops_collecting_and_lets_go_of_what_it_held() {
    let (h, mut rx) = detached(10);
    {
        let _collector = Collector::begin(&h.shared);
        h.publish_batch(vec![outgoing("lost with the handler that panicked")]);
    }
    h.publish_batch(vec![outgoing("next")]);
    let got: Vec<String> = rx.drain().into_iter().map(|c| c.payload).collect();
    assert_eq!(got, ["next"], "queued, not collected for nobody");
    let collector = Collector::begin(&h.shared);
    assert!(collector.finish().is_empty(), "nothing left over from before");
}

#[test]
fn collecting_is_per_thread() {
    let (h, mut rx) = detached(10);
    let collector = Collector::begin(&h.shared);
    let other_thread = h.clone();
    std::thread::spawn(move || other_thread.publish_batch(vec![outgoing("from another thread")])).join().unwrap();
    assert!(collector.finish().is_empty());
    assert_eq!(rx.drain().len(), 1, "another thread's publish is queued");
}
