//! Commands to the camera: `read_now` and `previous_value` are published on its control topics
//! (never retained) and answered by its next round, or with a timeout; refused at once while the
//! camera is offline or a command of the same name already waits.

use std::time::Duration;

use tokio::time::Instant;

use super::Ingest;
use crate::adapters::ai_on_the_edge::mapping::Dialect;
use crate::model::Value;
use crate::mqtt::QoS;
use crate::router::{Command, DeviceHandle};
use crate::untrusted::clip;

/// A command sent to the camera, waiting for the round that confirms it.
pub(super) struct PendingCommand {
    /// The command (name, `id`) to answer.
    cmd: Command,
    /// The device (target index) it was sent for.
    target: usize,
    /// What confirms it.
    kind: PendingKind,
    /// When it is answered with a timeout.
    deadline: Instant,
}

/// What a pending command waits for.
#[derive(Debug, Clone, Copy)]
enum PendingKind {
    /// Any next round of the target's sequence.
    ReadNow,
    /// A next round that does not read less than this (canonical unit).
    PreviousValue(f64),
}
impl Ingest {
    /// The camera device and the devices it feeds (target index → handle), to take their commands.
    pub(crate) fn command_targets(&self) -> Vec<(usize, DeviceHandle)> {
        self.targets.iter().enumerate().map(|(i, t)| (i, t.handle.clone())).collect()
    }

    /// Whether the camera publishes the fork's topic clusters (else the flat upstream layout).
    fn speaks_clusters(&self) -> bool {
        match self.dialect {
            Dialect::Clusters => true,
            Dialect::Upstream => false,
            Dialect::Auto => self.seen_clusters && !self.seen_upstream,
        }
    }

    /// The number sequence whose values go to target `t`, once known.
    fn sequence_of_target(&self, t: usize) -> Option<String> {
        if let Some((name, _)) = self.configured.iter().find(|(_, i)| *i == Some(t)) {
            return Some(name.clone());
        }
        if t != 0 {
            return None;
        }
        let claimed = self.claimed.as_deref()?;
        let s = self.sequences.iter().find(|s| s.key == claimed)?;
        // A fork sequence is addressed by name; its topic level is only an id.
        if s.cluster { s.name.clone() } else { Some(s.key.clone()) }
    }

    /// Takes command `cmd` for target `t`: publishes the camera's control topic and waits for the
    /// next round, or answers at once when it cannot be sent.
    pub(crate) fn command(&mut self, t: usize, cmd: Command, timeout: Duration, interval: Duration) {
        let Some(handle) = self.targets.get(t).map(|x| x.handle.clone()) else { return };
        if !self.device.is_online() {
            let why = if self.will_down { "its last will says `connection lost`" } else { "no fresh round" };
            return handle.command_result(
                &cmd,
                Err(format!(
                    "the camera is offline ({why}): it keeps no messages while away, so `{}` would be lost",
                    cmd.name
                )),
            );
        }
        if self.pending.iter().any(|p| p.target == t && p.cmd.name == cmd.name) {
            return handle.command_result(
                &cmd,
                Err(format!("busy: a `{}` already waits for the camera's next round", cmd.name)),
            );
        }
        let clusters = self.speaks_clusters();
        let now = Instant::now();
        let (topic, body, kind, deadline) = match cmd.name {
            "read_now" => {
                let topic = if clusters { "process/ctrl/cycle_start" } else { "ctrl/flow_start" };
                // The fork wants a payload of length > 0; upstream takes anything.
                (topic, "1".to_owned(), PendingKind::ReadNow, now + timeout)
            }
            "previous_value" => {
                let value = match cmd.value.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => v,
                    _ => {
                        return handle.command_result(
                            &cmd,
                            Err(format!(
                                "previous_value must be a number ≥ 0 (the meter reading in the unit of the device's total, m³ or kWh), got `{}`",
                                clip(&cmd.value)
                            )),
                        );
                    }
                };
                let Some(sequence) = self.sequence_of_target(t) else {
                    return handle.command_result(
                        &cmd,
                        Err("the camera's number sequence for this device is not known yet; wait for its first round"
                            .into()),
                    );
                };
                let meter = self.meter_for(t);
                let device_value = value / meter.factor;
                let (topic, key) = if clusters {
                    ("process/ctrl/set_fallbackvalue", "sequence")
                } else {
                    ("ctrl/set_prevalue", "numbersname")
                };
                let body = serde_json::json!({ key: sequence, "value": device_value }).to_string();
                (topic, body, PendingKind::PreviousValue(value), now + timeout + interval)
            }
            other => return handle.command_result(&cmd, Err(format!("`{other}` is not a camera command"))),
        };
        // Never retained: see the module docs.
        self.device.mqtt().publish(format!("{}/{topic}", self.main_topic), body, QoS::AtLeastOnce, false);
        self.pending.push(PendingCommand { cmd, target: t, kind, deadline });
    }

    /// Answers the commands of target `t` that a live round confirms (`reading`: its total, if any).
    pub(super) fn confirm(&mut self, t: usize, reading: Option<Value>) {
        let Some(handle) = self.targets.get(t).map(|x| x.handle.clone()) else { return };
        let (done, rest): (Vec<PendingCommand>, Vec<PendingCommand>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.target == t);
        self.pending = rest;
        let number = |v: &Option<Value>| match v {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        };
        for p in done {
            let result = match p.kind {
                PendingKind::ReadNow => Ok(number(&reading).map_or(serde_json::Value::Null, serde_json::Value::from)),
                PendingKind::PreviousValue(set) => match number(&reading) {
                    // Float noise of the camera's 6-decimal round trip, relative to the value.
                    Some(read) if read < set - 1e-6 * set.abs().max(1.0) => Err(format!(
                        "the camera's next round read {read}, less than the previous value {set} that was set: it did not take it"
                    )),
                    _ => Ok(serde_json::Value::from(set)),
                },
            };
            handle.command_result(&p.cmd, result);
        }
    }

    /// When the first waiting command times out.
    pub(crate) fn next_command_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Answers every waiting command whose deadline passed with a timeout.
    pub(crate) fn expire_commands(&mut self, now: Instant) {
        let (expired, rest): (Vec<PendingCommand>, Vec<PendingCommand>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.deadline <= now);
        self.pending = rest;
        for p in expired {
            if let Some(t) = self.targets.get(p.target) {
                t.handle.command_result(
                    &p.cmd,
                    Err(format!(
                        "timeout: the camera published no round for this device in time after `{}` (it never acknowledges commands; is its automatic flow on?)",
                        p.cmd.name
                    )),
                );
            }
        }
    }
}
