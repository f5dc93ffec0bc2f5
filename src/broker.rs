//! The embedded MQTT broker (cargo feature `embedded-broker`, rumqttd): lets the demo and
//! single-box setups run without installing a broker. rumqttd has no shutdown API; it lives until
//! the process exits, which is what a bridge process wants.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

/// Starts rumqttd listening on `listen` (MQTT 3.1.1) and waits until it accepts connections.
pub async fn start(listen: SocketAddr) -> anyhow::Result<()> {
    // Fail early with a clear message when the port is taken, rather than letting rumqttd's thread die.
    drop(
        std::net::TcpListener::bind(listen)
            .with_context(|| format!("mqtt.embedded.listen: cannot listen on {listen}"))?,
    );
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "id": 0,
            "max_connections": 1000,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 104857600,
            "max_segment_count": 10
        },
        "v4": {
            "1": {
                "name": "embedded",
                "listen": listen.to_string(),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 262144,
                    "max_inflight_count": 100,
                    "dynamic_filters": true
                }
            }
        }
    }))
    .context("embedded broker configuration")?;
    std::thread::Builder::new().name("embedded-broker".into()).spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            tracing::error!(error = %e, "embedded broker stopped");
        }
    })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            tracing::info!(%listen, "embedded MQTT broker listening");
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("embedded broker did not start listening on {listen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
