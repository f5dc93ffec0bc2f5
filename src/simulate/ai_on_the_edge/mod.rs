//! AI-on-the-edge-device simulator: a camera meter that publishes its rounds exactly as
//! `shared/protocols/ai-on-the-edge.md` describes, in the upstream flat layout (jomjol v16.1.0) or
//! the topic clusters of the Slider0007 fork (v17-dev), with the firmware's own plausibility checks
//! (so misread digits become `Neg. Rate` / `Rate too high` rounds, `N` digits are substituted or
//! not), its last will, its Home Assistant discovery configs, and its control topics
//! (`ctrl/flow_start`, `ctrl/set_prevalue`, fork `process/ctrl/cycle_start`,
//! `process/ctrl/set_fallbackvalue`, `device/ctrl/reboot`).
//!
//! Split like the go-e simulator: [`Camera`] is the pure device (the meter, the rounds, the
//! payload formats, the control handling) and knows nothing about sockets; [`run`] wires it to the
//! broker and drives its interval. Stopping it cuts the connection without a DISCONNECT, like a
//! camera losing power, so the broker publishes its last will.
//!
//! The room: this file is the camera ([`Camera`] and what describes it) and the entry ([`run`],
//! `start` inside the bridge, [`run_cli`]); `config` holds the options, the `simulators:` keys,
//! the command line and their checks; `tests` holds the unit tests.

mod config;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use time::macros::{format_description, offset};
use time::{OffsetDateTime, UtcOffset};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mqtt::{MqttSettings, QoS};

pub(crate) use config::validate;
pub use config::{AiOnTheEdgeSimConfig, AiOnTheEdgeSimOptions, CliArgs};
use config::{check, spec_of};

/// The upstream discovery configs of a v16.1.0 camera (MainTopic `watermeter`, sequence `main`,
/// water_m3), used as the template for the simulated camera's.
const DISCOVERY_TEMPLATE: &str =
    include_str!("../../../adapters/ai_on_the_edge/fixtures/upstream_v16.1.0_ha_discovery_RECONSTRUCTED.tsv");

/// The camera's clock offset: its timestamps are local time (`+0100`), as on a real device.
const LOCAL_OFFSET: UtcOffset = offset!(+1);

/// Which MQTT layout the simulated camera speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimDialect {
    /// jomjol firmware v16.1.0 (flat topics).
    #[default]
    Upstream,
    /// The Slider0007 fork's topic clusters (v17-dev).
    Clusters,
}

/// What one round of one sequence reads (the firmware's checks then decide what is published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoundKind {
    /// The digits are read right.
    Good,
    /// A digit is misread lower than the previous value: `Neg. Rate` (fork `E91`).
    NegRate,
    /// A digit is misread one step up: `Rate too high` (fork `E93`).
    RateTooHigh,
    /// A digit is not recognised (`N`) and substituted from the previous value: a good reading.
    DigitSubstituted,
    /// A digit is not recognised and cannot be substituted: empty error, no value (fork `E90`).
    DigitUnreadable,
}

/// Meter types the simulator announces in its discovery configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimMeterType {
    /// `water_m3`.
    #[default]
    WaterM3,
    /// `gas_m3`.
    GasM3,
    /// `energy_kwh`.
    EnergyKwh,
}

impl SimMeterType {
    /// (device_class, unit, rate device_class, rate unit) as the firmware's discovery writes them.
    fn discovery(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            SimMeterType::WaterM3 => ("water", "m³", "volume_flow_rate", "m³/h"),
            SimMeterType::GasM3 => ("gas", "m³", "volume_flow_rate", "m³/h"),
            SimMeterType::EnergyKwh => ("energy", "kWh", "power", "kW"),
        }
    }
}

/// Everything a camera needs besides the broker.
#[derive(Debug, Clone)]
pub struct CameraSpec {
    /// `[MQTT] MainTopic`.
    pub main_topic: String,
    /// Layout.
    pub dialect: SimDialect,
    /// Number sequences, in config order.
    pub sequences: Vec<String>,
    /// Round interval (real cameras: 5 min).
    pub interval: Duration,
    /// `[MQTT] RetainMessages` (firmware default: false).
    pub retain: bool,
    /// `[MQTT] HomeassistantDiscovery`.
    pub discovery: bool,
    /// MeterType.
    pub meter_type: SimMeterType,
    /// Meter reading at start.
    pub start_value: f64,
    /// Share of rounds with a misread (0..1), when no `pattern` is given.
    pub error_rate: f64,
    /// Fixed sequence of round kinds (cycled); empty = random with `error_rate`.
    pub pattern: Vec<RoundKind>,
    /// Fork: publish process data as single topics too (besides the json).
    pub cluster_topics: bool,
    /// RNG seed.
    pub seed: u64,
}

impl Default for CameraSpec {
    fn default() -> Self {
        CameraSpec {
            main_topic: "watermeter".into(),
            dialect: SimDialect::Upstream,
            sequences: vec!["main".into()],
            interval: Duration::from_secs(10),
            retain: false,
            discovery: true,
            meter_type: SimMeterType::WaterM3,
            start_value: 512.3025,
            error_rate: 0.1,
            pattern: Vec::new(),
            cluster_topics: false,
            seed: 1,
        }
    }
}

/// One message the camera publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    /// Full topic.
    pub topic: String,
    /// Payload text.
    pub payload: String,
    /// Retain flag.
    pub retain: bool,
}

/// What a control message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ControlOutcome {
    /// Start a round now (`flow_start`, `cycle_start`).
    StartRound,
    /// Applied (previous value set, reboot), with a log text.
    Applied(String),
    /// Refused like the firmware would, with its log text.
    Refused(String),
    /// Not a control topic of this camera.
    Ignored,
}

/// One number sequence of the simulated camera.
#[derive(Debug, Clone)]
struct Sequence {
    name: String,
    /// What the meter's dial really shows.
    true_value: f64,
    /// The firmware's previous value (prevalue.ini).
    prev: Option<f64>,
    /// Printed with 6 decimals after a `set_prevalue` (std::to_string), else with the sequence's.
    prev_text: Option<String>,
    /// When the previous value was read.
    prev_at: Option<OffsetDateTime>,
    /// Time of the last valid reading (`timestamp`).
    last_good: Option<OffsetDateTime>,
    /// The raw digits of the last round.
    last_raw: String,
}

/// The simulated camera, without IO.
#[derive(Debug)]
pub(crate) struct Camera {
    spec: CameraSpec,
    rng: StdRng,
    sequences: Vec<Sequence>,
    booted: OffsetDateTime,
    /// Rounds since boot.
    round: u64,
    /// Static topics and discovery still to send (first round after boot).
    boot_topics_due: bool,
    /// Time of the previous round, for the meter's flow.
    last_round: OffsetDateTime,
}

fn local_ts(t: OffsetDateTime) -> String {
    t.to_offset(LOCAL_OFFSET)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
        ))
        .unwrap_or_default()
}

/// Raw digits as the camera reads them: leading zeros kept (four before the point).
fn raw_digits(v: f64) -> String {
    format!("{:09.4}", v.max(0.0))
}

impl Camera {
    /// A camera that just booted at `now`.
    pub(crate) fn new(spec: CameraSpec, now: OffsetDateTime) -> Camera {
        let interval = time::Duration::try_from(spec.interval).unwrap_or(time::Duration::minutes(5));
        let sequences = spec
            .sequences
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let v = spec.start_value + 100.0 * i as f64;
                Sequence {
                    name: name.clone(),
                    true_value: v,
                    // prevalue.ini survives the reboot: the first round already has a rate.
                    prev: Some(v),
                    prev_text: None,
                    prev_at: Some(now - interval),
                    last_good: None,
                    last_raw: raw_digits(v),
                }
            })
            .collect();
        Camera {
            rng: StdRng::seed_from_u64(spec.seed),
            sequences,
            booted: now,
            round: 0,
            boot_topics_due: true,
            last_round: now - interval,
            spec,
        }
    }

    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.spec.main_topic)
    }

    /// The last will: topic and payload (always retained).
    pub(crate) fn last_will(&self) -> (String, String) {
        match self.spec.dialect {
            SimDialect::Upstream => (self.topic("connection"), "connection lost".into()),
            SimDialect::Clusters => (self.topic("device/status/connection"), "offline".into()),
        }
    }

    /// What the camera publishes on each (re)connect (the fork's birth; upstream v16 has none).
    pub(crate) fn on_connect(&self) -> Vec<Publish> {
        match self.spec.dialect {
            SimDialect::Upstream => Vec::new(),
            SimDialect::Clusters => {
                vec![Publish { topic: self.topic("device/status/connection"), payload: "online".into(), retain: false }]
            }
        }
    }

    /// The topics the camera subscribes to.
    pub(crate) fn subscriptions(&self) -> Vec<String> {
        match self.spec.dialect {
            SimDialect::Upstream => vec![self.topic("ctrl/flow_start"), self.topic("ctrl/set_prevalue")],
            SimDialect::Clusters => vec![
                self.topic("process/ctrl/cycle_start"),
                self.topic("process/ctrl/set_fallbackvalue"),
                self.topic("device/ctrl/reboot"),
            ],
        }
    }

    /// The largest change per round the firmware accepts (MaxRateType AbsoluteChange): twice what
    /// the strongest simulated flow can add, so only misreads exceed it.
    fn max_change(&self) -> f64 {
        2.0 * 1.5 * self.spec.interval.as_secs_f64() / 3600.0 + 0.05
    }

    fn next_kind(&mut self) -> RoundKind {
        if !self.spec.pattern.is_empty() {
            return self.spec.pattern[(self.round as usize - 1) % self.spec.pattern.len()];
        }
        if !self.rng.random_bool(self.spec.error_rate.clamp(0.0, 1.0)) {
            return RoundKind::Good;
        }
        match self.rng.random_range(0..100) {
            0..35 => RoundKind::NegRate,
            35..60 => RoundKind::RateTooHigh,
            60..85 => RoundKind::DigitSubstituted,
            _ => RoundKind::DigitUnreadable,
        }
    }

    /// Runs one round at `now` and returns what the camera publishes, in the firmware's order.
    pub(crate) fn round(&mut self, now: OffsetDateTime) -> Vec<Publish> {
        self.round += 1;
        let hours = ((now - self.last_round).as_seconds_f64() / 3600.0).max(0.0);
        self.last_round = now;
        // Water runs in some rounds only, at a household rate.
        for s in &mut self.sequences {
            if self.rng.random_bool(0.5) {
                s.true_value += self.rng.random_range(0.1..1.5) * hours;
            }
        }
        let kinds: Vec<RoundKind> = (0..self.sequences.len()).map(|_| self.next_kind()).collect();
        match self.spec.dialect {
            SimDialect::Upstream => self.upstream_round(now, &kinds),
            SimDialect::Clusters => self.cluster_round(now, &kinds),
        }
    }

    fn device_stats(&mut self) -> (u64, u64, i64, i64) {
        let uptime = (self.last_round - self.booted).whole_seconds().max(0) as u64;
        let free = 3_058_639 - self.rng.random_range(0..4000);
        let rssi = -61 + self.rng.random_range(-4..=4);
        let temp = 47 + self.rng.random_range(-2..=2);
        (uptime, free, rssi, temp)
    }

    /// The firmware's post-processing of one sequence: returns (value, raw, error text, rate/min).
    fn read(&mut self, i: usize, kind: RoundKind, now: OffsetDateTime) -> Reading {
        let max_change = self.max_change();
        let s = &mut self.sequences[i];
        let truth = (s.true_value * 10_000.0).round() / 10_000.0;
        let (read, mut raw, unreadable) = match kind {
            RoundKind::Good => (truth, raw_digits(truth), false),
            RoundKind::NegRate => {
                let low = s.prev.unwrap_or(truth) - 0.001;
                (low, raw_digits(low), false)
            }
            RoundKind::RateTooHigh => {
                let high = truth + 1.0 + max_change;
                (high, raw_digits(high), false)
            }
            RoundKind::DigitSubstituted | RoundKind::DigitUnreadable => {
                let mut r = raw_digits(truth);
                r.pop();
                r.push('N');
                (truth, r, kind == RoundKind::DigitUnreadable)
            }
        };
        if raw.is_empty() {
            raw = raw_digits(read);
        }
        s.last_raw = raw.clone();
        let pre_text = s.prev_text.clone().or_else(|| s.prev.map(|p| format!("{p:.4}"))).unwrap_or_default();
        let verdict = if unreadable {
            Err(String::new())
        } else {
            match s.prev {
                Some(p) if read < p - 1e-9 => Err(format!("Neg. Rate - Read:  - Raw: {raw} - Pre: {pre_text} ")),
                Some(p) if read - p > max_change => {
                    Err(format!("Rate too high - Read: {read:.4} - Pre: {pre_text} - Rate: {:.4}", read - p))
                }
                _ => Ok(()),
            }
        };
        match verdict {
            Ok(()) => {
                let rate = match (s.prev, s.prev_at) {
                    (Some(p), Some(at)) => {
                        let minutes = (now - at).as_seconds_f64() / 60.0;
                        (minutes > 0.0).then(|| (read - p) / minutes)
                    }
                    _ => None,
                };
                let change = read - s.prev.unwrap_or(0.0);
                s.prev = Some(read);
                s.prev_text = None;
                s.prev_at = Some(now);
                s.last_good = Some(now);
                Reading { value: Some(read), raw, error: "no error".into(), rate, change, pre: format!("{read:.4}") }
            }
            Err(error) => Reading { value: None, raw, error, rate: None, change: 0.0, pre: pre_text },
        }
    }

    fn upstream_round(&mut self, now: OffsetDateTime, kinds: &[RoundKind]) -> Vec<Publish> {
        let retain = self.spec.retain;
        let mut out = Vec::with_capacity(40);
        let mut p = |topic: String, payload: String, retain: bool| out.push(Publish { topic, payload, retain });
        for step in ["Take Image", "Aligning", "Digitization of ROIs", "Digitization of ROIs", "Post-Processing"] {
            p(self.topic("status"), step.into(), false);
        }
        p(self.topic("status"), "Sending MQTT".into(), false);
        if std::mem::take(&mut self.boot_topics_due) {
            if self.spec.discovery {
                for d in self.discovery_configs() {
                    p(d.topic, d.payload, true);
                }
            }
            p(self.topic("fwVersion"), "Release: v16.1.0 (Commit: a1ccda2)".into(), retain);
            p(self.topic("MAC"), "A0:B7:65:50:65:28".into(), retain);
            p(self.topic("IP"), "192.168.1.50".into(), retain);
            p(self.topic("hostname"), self.spec.main_topic.rsplit('/').next().unwrap_or("watermeter").into(), retain);
            p(self.topic("interval"), format!("{:.1}", self.spec.interval.as_secs_f64() / 60.0), retain);
        }
        let (uptime, free, rssi, temp) = self.device_stats();
        p(self.topic("connection"), "connected".into(), retain);
        p(self.topic("uptime"), uptime.to_string(), retain);
        p(self.topic("freeMem"), free.to_string(), retain);
        p(self.topic("wifiRSSI"), rssi.to_string(), retain);
        p(self.topic("CPUtemp"), temp.to_string(), retain);
        for (i, kind) in kinds.iter().enumerate() {
            let r = self.read(i, *kind, now);
            let s = &self.sequences[i];
            // The sequence `default` publishes directly under the MainTopic.
            let prefix = if s.name == "default" { self.spec.main_topic.clone() } else { self.topic(&s.name) };
            let t = |f: &str| format!("{prefix}/{f}");
            let value = r.value.map(|v| format!("{v:.4}")).unwrap_or_default();
            let rate = r.rate.map(|r| format!("{r:.6}")).unwrap_or_default();
            let timestamp = s.last_good.map(local_ts).unwrap_or_default();
            if !value.is_empty() {
                p(t("value"), value.clone(), retain);
            }
            if !r.error.is_empty() {
                p(t("error"), r.error.clone(), retain);
            }
            if let Some(rate_min) = r.rate {
                p(t("rate"), rate.clone(), retain);
                p(t("rate_per_time_unit"), format!("{:.6}", rate_min * 60.0), retain);
            }
            p(t("changeabsolut"), format!("{:.4}", r.change), retain);
            p(t("rate_per_digitization_round"), format!("{:.4}", r.change), retain);
            p(t("raw"), r.raw.clone(), retain);
            if !timestamp.is_empty() {
                p(t("timestamp"), timestamp.clone(), retain);
            }
            let json = format!(
                "  {{\n    \"value\": \"{value}\",\n    \"raw\": \"{}\",\n    \"pre\": \"{}\",\n    \"error\": \"{}\",\n    \"rate\": \"{rate}\",\n    \"timestamp\": \"{timestamp}\"\n  }}\n",
                r.raw, r.pre, r.error
            );
            p(t("json"), json, retain);
        }
        p(self.topic("status"), "Flow finished".into(), false);
        out
    }

    fn cluster_round(&mut self, now: OffsetDateTime, kinds: &[RoundKind]) -> Vec<Publish> {
        let retain_data = self.spec.retain;
        let mut out = Vec::with_capacity(60);
        let mut p = |topic: String, payload: String, retain: bool| out.push(Publish { topic, payload, retain });
        let state = |s: &str| s.to_owned();
        for step in ["Take Image", "Image Alignment", "Digitization", "Post-Processing", "Publish to MQTT"] {
            p(self.topic("process/status/process_state"), state(step), false);
        }
        if std::mem::take(&mut self.boot_topics_due) {
            p(
                self.topic("device/info/hardware"),
                "{\n\t\"board\":\t{\n\t\t\"board_type\":\t\"ESP32CAM\",\n\t\t\"chip_model\":\t\"ESP32\",\n\t\t\"chip_cores\":\t2,\n\t\t\"chip_revision\":\t\"1.0\",\n\t\t\"chip_frequency\":\t240\n\t},\n\t\"camera\":\t{\n\t\t\"type\":\t\"OV2640\",\n\t\t\"frequency\":\t20\n\t},\n\t\"sdcard\":\t{\n\t\t\"capacity\":\t29544,\n\t\t\"partition_size\":\t29528\n\t}\n}".into(),
                true,
            );
            let host = self.spec.main_topic.rsplit('/').next().unwrap_or("watermeter").to_owned();
            p(
                self.topic("device/info/network"),
                format!(
                    "{{\n\t\"hostname\":\t\"{host}\",\n\t\"ipv4_address\":\t\"192.168.1.51\",\n\t\"mac_address\":\t\"A0:B7:65:50:65:2C\"\n}}"
                ),
                true,
            );
            p(self.topic("device/info/firmware_version"), "v17.0.0 (1234567)".into(), true);
            if self.spec.discovery {
                for d in self.discovery_configs() {
                    p(d.topic, d.payload, true);
                }
            }
        }
        let (uptime, free, rssi, temp) = self.device_stats();
        p(self.topic("device/status/connection"), "online".into(), false);
        p(self.topic("device/status/device_uptime"), uptime.to_string(), false);
        p(self.topic("device/status/wlan_rssi"), rssi.to_string(), false);
        p(self.topic("device/status/chip_temp"), temp.to_string(), false);
        p(self.topic("device/status/sd_partition_free"), "29016".into(), false);
        p(
            self.topic("device/status/heap"),
            format!(
                "{{\n\t\"heap_total_free\":\t{free},\n\t\"heap_internal_free\":\t97356,\n\t\"heap_internal_largest_free\":\t65524,\n\t\"heap_internal_min_free\":\t71000,\n\t\"heap_spiram_free\":\t{},\n\t\"heap_spiram_largest_free\":\t2883572,\n\t\"heap_spiram_min_free\":\t2700000\n}}",
                free - 97_356
            ),
            false,
        );
        p(self.topic("device/status/ntp_syncstatus"), "Synchronized".into(), false);
        p(self.topic("process/status/process_status"), "Processing (Automatic)".into(), false);
        p(
            self.topic("process/status/process_interval"),
            format!("{:.1}", self.spec.interval.as_secs_f64() / 60.0),
            false,
        );
        p(self.topic("process/status/process_time"), "25".into(), false);
        p(self.topic("process/data/number_sequences"), self.sequences.len().to_string(), retain_data);
        let mut any_error = false;
        for (i, kind) in kinds.iter().enumerate() {
            let r = self.read(i, *kind, now);
            let s = &self.sequences[i];
            let fallback = s.prev.map(|v| format!("{v:.4}")).unwrap_or_default();
            let status = match (&r.value, r.error.as_str()) {
                (Some(_), _) => "000 Valid".to_owned(),
                (None, "") => format!("E90 No data to substitute N | Raw: {}", r.raw),
                (None, e) if e.starts_with("Neg. Rate") => "E91 Rate negative".to_owned(),
                (None, _) => "E93 Rate too high (>)".to_owned(),
            };
            any_error |= r.value.is_none();
            let fields = [
                ("sequence_name", s.name.clone()),
                // The fork publishes the fallback value when the reading is rejected.
                ("actual_value", r.value.map(|v| format!("{v:.4}")).unwrap_or_else(|| fallback.clone())),
                ("fallback_value", fallback),
                ("raw_value", r.raw.clone()),
                ("value_status", status),
                ("rate_per_minute", format!("{:.4}", r.rate.unwrap_or(0.0))),
                ("rate_per_interval", format!("{:.4}", r.change)),
                ("timestamp_processed", local_ts(now)),
                ("timestamp_fallbackvalue", s.last_good.map(local_ts).unwrap_or_default()),
            ];
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\t\"{k}\":\t\"{v}\"")).collect();
            p(self.topic(&format!("process/data/{i}/json")), format!("{{\n{}\n}}", body.join(",\n")), retain_data);
            if self.spec.cluster_topics {
                for (k, v) in fields.iter().skip(1) {
                    p(self.topic(&format!("process/data/{i}/{k}")), v.clone(), retain_data);
                }
            }
        }
        p(self.topic("process/status/process_error"), if any_error { "1" } else { "0" }.into(), false);
        p(self.topic("process/status/cycle_counter"), self.round.to_string(), false);
        p(self.topic("process/status/process_state"), state("Idle - Waiting for Autostart"), false);
        out
    }

    /// The discovery configs: the v16.1.0 set for upstream (from the reconstructed sample), one
    /// `actual_value` config per sequence for the fork.
    pub(crate) fn discovery_configs(&self) -> Vec<Publish> {
        let mt = &self.spec.main_topic;
        let node = mt.rsplit('/').next().unwrap_or(mt);
        let (class, unit, rate_class, rate_unit) = self.spec.meter_type.discovery();
        if self.spec.dialect == SimDialect::Clusters {
            return self
                .sequences
                .iter()
                .enumerate()
                .map(|(i, s)| Publish {
                    topic: format!("homeassistant/sensor/{node}/{}_actual_value/config", s.name),
                    payload: format!(
                        "{{\"~\": \"{mt}\", \"uniq_id\": \"{node}_{}_actual_value\", \"name\": \"{}: Actual Value\", \"ic\": \"mdi:gauge\", \"stat_t\": \"~/process/data/{i}/json\", \"val_tpl\": \"{{{{value_json.actual_value}}}}\", \"qos\": \"1\", \"unit_of_meas\": \"{unit}\", \"dev_cla\": \"{class}\", \"stat_cla\": \"total_increasing\", \"avty_t\": \"~/device/status/connection\", \"dev\": {{\"ids\": [\"{node}\"], \"sw\": \"v17.0.0 [SLFork]\"}}}}",
                        s.name, s.name
                    ),
                    retain: true,
                })
                .collect();
        }
        let several = self.sequences.len() > 1;
        let mut out = Vec::new();
        for line in DISCOVERY_TEMPLATE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let Some((topic, payload)) = line.split_once('\t') else { continue };
            let payload = payload
                .replace(
                    "\"unit_of_meas\": \"m³\",\"device_class\": \"water\"",
                    &format!("\"unit_of_meas\": \"{unit}\",\"device_class\": \"{class}\""),
                )
                .replace(
                    "\"unit_of_meas\": \"m³/h\",\"device_class\": \"volume_flow_rate\"",
                    &format!("\"unit_of_meas\": \"{rate_unit}\",\"device_class\": \"{rate_class}\""),
                )
                .replace("Rate (m³/h)", &format!("Rate ({rate_unit})"))
                .replace("\"unit_of_meas\": \"m³\"", &format!("\"unit_of_meas\": \"{unit}\""));
            let object = topic.rsplit('/').nth(1).unwrap_or_default();
            let per_sequence = payload.contains("\"~/main/");
            let sequences: Vec<&str> =
                if per_sequence { self.sequences.iter().map(|s| s.name.as_str()).collect() } else { vec![""] };
            for seq in sequences {
                let (obj, name_prefix) = if several && per_sequence {
                    (format!("{seq}_{object}"), format!("{seq} "))
                } else {
                    (object.to_owned(), String::new())
                };
                let state_prefix = if seq == "default" { "~/".to_owned() } else { format!("~/{seq}/") };
                let mut body = payload
                    .replace(&format!("-{object}\""), &format!("-{obj}\""))
                    .replace(&format!("_{object}\""), &format!("_{obj}\""))
                    .replace("\"~/main/", &format!("\"{state_prefix}"))
                    .replace("\"watermeter", &format!("\"{mt}"))
                    .replace(".watermeter_", &format!(".{}_", mt));
                if !name_prefix.is_empty()
                    && let Some(pos) = body.find("\"name\": \"")
                {
                    body.insert_str(pos + "\"name\": \"".len(), &name_prefix);
                }
                let comp = topic.split('/').nth(1).unwrap_or("sensor");
                out.push(Publish {
                    topic: format!("homeassistant/{comp}/{node}/{obj}/config"),
                    payload: body,
                    retain: true,
                });
            }
        }
        out
    }

    /// Handles a message on one of [`Camera::subscriptions`], as the firmware does.
    pub(crate) fn control(&mut self, topic: &str, payload: &[u8], now: OffsetDateTime) -> ControlOutcome {
        let Some(rest) = topic.strip_prefix(self.spec.main_topic.as_str()).and_then(|r| r.strip_prefix('/')) else {
            return ControlOutcome::Ignored;
        };
        match (self.spec.dialect, rest) {
            (SimDialect::Upstream, "ctrl/flow_start") => ControlOutcome::StartRound,
            (SimDialect::Clusters, "process/ctrl/cycle_start") => {
                if payload.is_empty() {
                    ControlOutcome::Refused("cycle_start needs a payload (length > 0)".into())
                } else {
                    ControlOutcome::StartRound
                }
            }
            (SimDialect::Upstream, "ctrl/set_prevalue") => self.set_previous(payload, "numbersname", now),
            (SimDialect::Clusters, "process/ctrl/set_fallbackvalue") => self.set_previous(payload, "sequence", now),
            (SimDialect::Clusters, "device/ctrl/reboot") => {
                if payload.is_empty() {
                    return ControlOutcome::Refused("reboot needs a payload (length > 0)".into());
                }
                self.booted = now;
                self.round = 0;
                self.boot_topics_due = true;
                ControlOutcome::Applied("rebooted".into())
            }
            _ => ControlOutcome::Ignored,
        }
    }

    fn set_previous(&mut self, payload: &[u8], name_key: &str, now: OffsetDateTime) -> ControlOutcome {
        let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return ControlOutcome::Refused("payload is not a JSON object".into());
        };
        let Some(name) = m.get(name_key).and_then(|v| v.as_str()) else {
            return ControlOutcome::Refused(format!("`{name_key}` must be a JSON string"));
        };
        // The firmware wants a JSON number; a quoted number is refused.
        let Some(value) = m.get("value").and_then(|v| v.as_f64()) else {
            return ControlOutcome::Refused("`value` must be a JSON number".into());
        };
        let Some(s) = self.sequences.iter_mut().find(|s| s.name == name) else {
            return ControlOutcome::Refused(format!("no number sequence `{name}`"));
        };
        let value = if value >= 0.0 {
            value
        } else {
            match s.last_raw.parse::<f64>() {
                Ok(raw) if raw != 0.0 => raw,
                _ => return ControlOutcome::Refused("the raw value is not a number; cannot use it".into()),
            }
        };
        s.prev = Some(value);
        s.prev_text = Some(format!("{value:.6}"));
        s.prev_at = Some(now);
        ControlOutcome::Applied(format!("previous value of `{name}` set to {value:.6}"))
    }
}

/// One sequence's post-processed round.
struct Reading {
    value: Option<f64>,
    raw: String,
    error: String,
    rate: Option<f64>,
    change: f64,
    pre: String,
}
/// Runs the simulated camera until `cancel`; then drops the connection without a goodbye, so the
/// broker publishes the last will (a camera losing power).
pub async fn run(opts: AiOnTheEdgeSimOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut camera = Camera::new(opts.camera.clone(), OffsetDateTime::now_utc());
    let mut settings = opts.broker.clone();
    settings.last_will = Some(camera.last_will());
    let tracker = TaskTracker::new();
    let mqtt_cancel = CancellationToken::new();
    let mqtt = crate::simulate::connect(&settings, &opts.wait_for_bridge, &tracker, mqtt_cancel.clone())?;
    let subs = camera.subscriptions();
    let refs: Vec<&str> = subs.iter().map(String::as_str).collect();
    let mut control = mqtt.subscribe_many(&refs, 64).await;
    let mut watch = mqtt.watch();
    let mut generation = 0;
    let publish = |mqtt: &crate::mqtt::MqttHandle, list: Vec<Publish>| {
        // The firmware drops what it cannot send (no outbox).
        if mqtt.state().connected {
            for p in list {
                mqtt.publish(p.topic, p.payload, QoS::AtLeastOnce, p.retain);
            }
        }
    };
    // A camera runs its first round once it is on the network and the broker (after boot).
    let connected = tokio::select! {
        _ = cancel.cancelled() => false,
        c = watch.wait_for(|s| s.connected) => c.is_ok(),
    };
    if connected {
        generation = watch.borrow_and_update().generation;
        publish(&mqtt, camera.on_connect());
    }
    let mut ticker = tokio::time::interval(opts.camera.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(main_topic = %opts.camera.main_topic, dialect = ?opts.camera.dialect,
        interval = ?opts.camera.interval, "simulated AI-on-the-edge camera started");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {
                let list = camera.round(OffsetDateTime::now_utc());
                publish(&mqtt, list);
            }
            changed = watch.changed() => {
                if changed.is_err() { break; }
                let s = *watch.borrow_and_update();
                if s.connected && s.generation != generation {
                    generation = s.generation;
                    publish(&mqtt, camera.on_connect());
                }
            }
            msg = control.recv() => {
                let Some(msg) = msg else { break };
                match camera.control(&msg.topic, &msg.payload, OffsetDateTime::now_utc()) {
                    ControlOutcome::StartRound => {
                        let list = camera.round(OffsetDateTime::now_utc());
                        publish(&mqtt, list);
                        ticker.reset();
                    }
                    ControlOutcome::Applied(what) => tracing::info!(topic = %msg.topic, "simulated camera: {what}"),
                    ControlOutcome::Refused(why) => tracing::warn!(topic = %msg.topic, "simulated camera refused: {why}"),
                    ControlOutcome::Ignored => {}
                }
            }
        }
    }
    // No DISCONNECT: the broker sees the connection drop and publishes the last will.
    mqtt_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("simulated camera tasks did not stop within 5 s");
    }
    tracing::info!(main_topic = %opts.camera.main_topic, "simulated AI-on-the-edge camera stopped");
    Ok(())
}
fn client_id(main_topic: &str) -> String {
    // The firmware's default ClientID is its host name; the MainTopic's last level stands in.
    let host = main_topic.rsplit('/').next().unwrap_or(main_topic);
    format!("aioted-{host}")
}
/// Starts the simulator inside the bridge process.
pub(crate) async fn start(
    name: &str,
    cfg: &AiOnTheEdgeSimConfig,
    config: &crate::simulate::BridgeBroker,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let broker = super::broker_settings(cfg.broker.as_deref(), config, &client_id(&cfg.main_topic))?;
    let opts =
        AiOnTheEdgeSimOptions { broker, camera: spec_of(cfg), wait_for_bridge: config.wait_for(cfg.broker.as_deref()) };
    super::spawn_named(tracker, name, run(opts, cancel));
    Ok(())
}

/// Runs the simulator from the command line until Ctrl-C.
pub async fn run_cli(args: CliArgs) -> ExitCode {
    let errs = check(
        &args.main_topic,
        args.interval,
        args.errors,
        &args.sequences,
        "",
        ["--main-topic", "--interval", "--errors", "--sequences"],
    );
    if !errs.is_empty() {
        for (k, m) in errs {
            eprintln!("{k}: {m}");
        }
        return ExitCode::from(2);
    }
    let broker = match MqttSettings::from_url(&args.broker, &client_id(&args.main_topic)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("--broker: {e}");
            return ExitCode::from(2);
        }
    };
    let camera = CameraSpec {
        main_topic: args.main_topic,
        dialect: args.dialect,
        sequences: args.sequences,
        interval: args.interval,
        retain: args.retain,
        discovery: !args.no_discovery,
        meter_type: args.meter_type,
        start_value: args.start_value,
        error_rate: args.errors,
        pattern: args.pattern,
        cluster_topics: args.cluster_topics,
        seed: args.seed,
    };
    super::run_until_signal(|cancel| {
        run(AiOnTheEdgeSimOptions { broker, camera, wait_for_bridge: Default::default() }, cancel)
    })
    .await
}
