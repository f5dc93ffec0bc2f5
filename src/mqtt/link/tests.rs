//! The command link's pure parts, no broker: how a failed MQTT 5 attempt is judged, SUBACK
//! tracking, readiness and `/readyz` wording, the link's options, and the main connection's side of
//! the hand-over (`Carrying`). The link itself is tested end to end in `tests/it/commands.rs`.

use super::*;

fn refused(code: ConnectReturnCode) -> ConnectionError {
    ConnectionError::ConnectionRefused(code)
}

fn closed_after_connect() -> ConnectionError {
    ConnectionError::MqttState(rumqttc::v5::StateError::ConnectionAborted)
}

#[test]
fn a_broker_refusing_the_protocol_version_means_mqtt_3_1_1_only() {
    let v = judge(&refused(ConnectReturnCode::UnsupportedProtocolVersion), true);
    assert_eq!(v, Verdict::Fallback { only_311: true });
    let v = judge(&refused(ConnectReturnCode::RefusedProtocolVersion), true);
    assert_eq!(v, Verdict::Fallback { only_311: true });
}

#[test]
fn a_socket_closed_right_after_connect_while_the_main_connection_stays_up_means_mqtt_3_1_1_only() {
    assert_eq!(judge(&closed_after_connect(), true), Verdict::Fallback { only_311: true });
}

#[test]
fn another_refusal_falls_back_too_but_says_it_is_no_protocol_matter() {
    let v = judge(&refused(ConnectReturnCode::NotAuthorized), true);
    assert_eq!(v, Verdict::Fallback { only_311: false });
}

#[test]
fn nothing_is_learned_when_the_broker_was_unreachable_or_the_main_connection_moved() {
    let io = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(judge(&io, true), Verdict::Retry);
    assert_eq!(judge(&closed_after_connect(), false), Verdict::Retry);
    assert_eq!(judge(&refused(ConnectReturnCode::UnsupportedProtocolVersion), false), Verdict::Retry);
}

#[test]
fn suback_tracking_matches_packet_ids_in_request_order_and_reports_refusals() {
    let mut acks = SubAcks::default();
    assert!(acks.done(), "nothing requested, nothing to wait for");
    acks.requested(vec!["home/+/+/set".into()]);
    acks.requested(vec!["home/a/+/reset".into(), "home/b/+/reset".into()]);
    assert!(!acks.done());
    acks.written(7);
    acks.written(8);
    assert!(acks.acked(7, &[SubscribeReasonCode::Success(QoS::AtMostOnce)]).is_empty());
    assert!(!acks.done());
    let refused = acks.acked(8, &[SubscribeReasonCode::Success(QoS::AtMostOnce), SubscribeReasonCode::NotAuthorized]);
    assert_eq!(refused, ["home/b/+/reset"]);
    assert!(acks.done());
    assert!(acks.acked(9, &[]).is_empty(), "an unknown packet id changes nothing");
}

#[test]
fn a_suback_with_too_few_codes_counts_the_missing_ones_as_refused() {
    let mut acks = SubAcks::default();
    acks.requested(vec!["a/+/set".into(), "b/+/set".into()]);
    acks.written(1);
    assert_eq!(acks.acked(1, &[SubscribeReasonCode::Success(QoS::AtMostOnce)]), ["b/+/set"]);
}

#[test]
fn link_filters_keep_the_retain_flag_and_get_stored_commands_at_every_subscribe() {
    let f = filter("home/+/+/set".into());
    assert!(f.preserve_retain);
    assert_eq!(f.retain_forward_rule, RetainForwardRule::OnEverySubscribe);
    assert!(!f.nolocal);
}

#[test]
fn commands_are_ready_only_once_acknowledged_on_the_connection_that_carries_them() {
    assert_eq!(commands_not_ready(&Route::default(), false), None, "no command filter: nothing to wait for");
    assert_eq!(carrier(&Route::default(), false), "none");
    // At start the main connection carries them: its own `subscribed` decides.
    assert_eq!(commands_not_ready(&Route::default(), true), None);
    assert_eq!(carrier(&Route::default(), true), "main_connection_until_mqtt5_is_up");
    let up = |subscribed| Route { link: LinkState::Up { subscribed }, main_carries: false, refused: Vec::new() };
    assert!(commands_not_ready(&Route { link: LinkState::Idle, ..up(false) }, true).is_some());
    assert!(commands_not_ready(&up(false), true).unwrap().contains("acknowledge"));
    assert_eq!(commands_not_ready(&up(true), true), None);
    assert_eq!(carrier(&up(true), true), "mqtt5_retain_as_published");
    let down = Route { link: LinkState::Down("I/O: refused".into()), ..up(false) };
    assert!(commands_not_ready(&down, true).unwrap().contains("refused"));
    // Decided, but the main connection has not taken them yet.
    let deciding = Route { link: LinkState::Fallback("closed".into()), ..up(false) };
    assert!(commands_not_ready(&deciding, true).is_some());
    assert_eq!(carrier(&deciding, true), "pending");
    // The main connection carries them: its own `subscribed` decides.
    let fallback = Route { main_carries: true, ..deciding };
    assert_eq!(commands_not_ready(&fallback, true), None);
    assert_eq!(carrier(&fallback, true), "mqtt311_broker_main_connection");
    let refused = Route { refused: vec!["home/+/+/set".into()], ..up(true) };
    assert!(commands_not_ready(&refused, true).unwrap().contains("home/+/+/set"));
}

#[test]
fn the_link_uses_the_bridge_settings_under_its_own_client_id_without_a_last_will() {
    let mut s = MqttSettings::from_url("mqtt://broker.lan:1884", "hlbridge").unwrap();
    s.last_will = Some(("home/bridge/status".into(), "offline".into()));
    s.username = Some("u".into());
    s.password = Some("p".into());
    let o = s.link_options().unwrap();
    assert_eq!(o.client_id(), "hlbridge-cmd");
    assert_eq!(o.broker_address(), ("broker.lan".to_owned(), 1884));
    assert!(o.last_will().is_none());
    assert!(o.clean_start());
    assert!(o.credentials().is_some());
    // Not rumqttc's default (u16::MAX): it allocates an in-flight slot per possible packet id.
    assert_eq!(o.get_outgoing_inflight_upper_limit(), Some(LINK_INFLIGHT));
}

#[test]
fn the_main_connection_carries_and_delivers_commands_from_the_start() {
    let c = Carrying::new();
    assert!(c.subscribes() && c.delivers());
}

#[test]
fn after_letting_go_the_main_connection_delivers_until_the_last_unsuback() {
    let mut c = Carrying::new();
    assert_eq!(c.request(false), CarryStep::Unsubscribe);
    assert!(!c.subscribes());
    assert!(c.delivers(), "a command routed here before the link subscribed may still come");
    c.released([4, 5].into());
    c.unsuback(4);
    assert!(c.delivers());
    c.unsuback(9);
    assert!(c.delivers(), "an unrelated UNSUBACK changes nothing");
    c.unsuback(5);
    assert!(!c.delivers());
    assert_eq!(c.request(false), CarryStep::Nothing, "a repeated request sends nothing");
}

#[test]
fn letting_go_of_nothing_stops_delivering_at_once() {
    let mut c = Carrying::new();
    assert_eq!(c.request(false), CarryStep::Unsubscribe);
    c.released(BTreeSet::new());
    assert!(!c.delivers());
}

#[test]
fn taking_the_filters_back_during_a_release_delivers_at_once_and_ignores_the_late_unsuback() {
    let mut c = Carrying::new();
    c.request(false);
    c.released([4].into());
    assert_eq!(c.request(true), CarryStep::Subscribe);
    c.unsuback(4);
    assert!(c.subscribes() && c.delivers());
    assert_eq!(c.request(true), CarryStep::Nothing);
}

#[test]
fn a_lost_connection_ends_a_release_and_requests_while_down_send_nothing() {
    let mut c = Carrying::new();
    c.request(false);
    c.released([4].into());
    c.reset();
    assert!(!c.delivers(), "nothing more arrives on a lost connection");
    c.request_while_down(true);
    assert!(c.subscribes() && c.delivers(), "the next ConnAck subscribes them");
    c.request_while_down(false);
    assert!(!c.subscribes() && !c.delivers());
}
