//! Read holding under load: while the connection is behind the broker, the socket wakes the
//! connection task only once [`HOLD_BYTES`] have gathered or [`MAX_HOLD`] has passed, instead of
//! once per packet or two the broker wrote. A network card does the same with interrupt moderation
//! (`ethtool -C rx-usecs / rx-frames`); here it is the kernel's receive low-water mark
//! (`SO_RCVLOWAT`), set on the connection's TCP socket (TLS or not).
//!
//! Why: Mosquitto writes every packet with a system call of its own. Under a flood the task woke
//! for every ~6 packets, and on the 2-core VMs this is measured on, a wake-up that finds a CPU idle
//! costs the woken task ~20–30 µs: most of the bridge's 5–9 µs per message at saturation (README,
//! *Performance*). At home-lab rates a read never finds rumqttc's whole quota of packets waiting,
//! holding never starts, and every message is handled the moment it arrives.
//!
//! The rule, as a state machine with no I/O ([`ReadHolding`]; the connection task applies the marks
//! it returns):
//! - a read that took its whole quota of packets (more may be waiting) starts holding: the mark
//!   goes to [`HOLD_BYTES`];
//! - while holding, every read pushes the release out to [`MAX_HOLD`] after it;
//! - when [`MAX_HOLD`] passes with no read (less than [`HOLD_BYTES`] came in), the mark goes back to
//!   one byte. Linux then signals what is waiting at once (`tcp_set_rcvlowat` calls
//!   `tcp_data_ready`), so a held message waits at most [`MAX_HOLD`] longer than it would have,
//!   plus the timer's rounding up to its next millisecond tick.
//!
//! A new connection's socket starts at the kernel's default (one byte), and its state machine
//! starts not holding.

use std::time::Duration;

use tokio::time::Instant;

/// Bytes the kernel gathers before it wakes the task while holding: ~20 go-e `nrg` readings or
/// ~100 small publishes. Far below any receive buffer (the kernel also wakes the reader under
/// memory pressure or a closing receive window, whatever the mark).
pub(super) const HOLD_BYTES: u32 = 4096;

/// The longest a held message waits for more to arrive.
pub(super) const MAX_HOLD: Duration = Duration::from_millis(1);

/// A receive low-water mark for the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mark {
    /// Wake the task once [`HOLD_BYTES`] are waiting.
    Hold,
    /// Wake it for every byte (the kernel's default).
    Release,
}

impl Mark {
    /// The mark in bytes, as `SO_RCVLOWAT` takes it.
    pub(super) fn bytes(self) -> u32 {
        match self {
            Mark::Hold => HOLD_BYTES,
            Mark::Release => 1,
        }
    }
}

/// Whether reads are held, and since when nothing was read (see the module docs).
#[derive(Debug, Default)]
pub(super) struct ReadHolding {
    /// While holding: when the last read ended. `None`: not holding (the socket's mark is 1).
    last_read: Option<Instant>,
}

impl ReadHolding {
    /// A read ended; `behind` says it took its whole quota of packets. Returns the mark to set,
    /// if it changes. `now` is only asked for while holding or starting to.
    pub(super) fn after_read(&mut self, behind: bool, now: impl FnOnce() -> Instant) -> Option<Mark> {
        match &mut self.last_read {
            Some(last) => {
                *last = now();
                None
            }
            None if behind => {
                self.last_read = Some(now());
                Some(Mark::Hold)
            }
            None => None,
        }
    }

    /// When to look again at whether to release, while holding.
    pub(super) fn release_at(&self) -> Option<Instant> {
        self.last_read.map(|last| last + MAX_HOLD)
    }

    /// The time from [`Self::release_at`] came (or later): releases when nothing was read for
    /// [`MAX_HOLD`]; otherwise keeps holding (look again at the new [`Self::release_at`]).
    pub(super) fn at_release_time(&mut self, now: Instant) -> Option<Mark> {
        match self.release_at() {
            Some(at) if now >= at => {
                self.last_read = None;
                Some(Mark::Release)
            }
            _ => None,
        }
    }

    /// Whether reads are held now.
    pub(super) fn holding(&self) -> bool {
        self.last_read.is_some()
    }

    /// The socket is gone or could not take the mark: a new one starts at one byte.
    pub(super) fn reset(&mut self) {
        self.last_read = None;
    }
}

/// Sets the receive low-water mark of the socket `fd`. The caller must own `fd` for the call (the
/// connection's live `Network` does).
#[cfg(target_os = "linux")]
pub(super) fn set_low_water(fd: std::os::fd::RawFd, mark: Mark) -> std::io::Result<()> {
    let bytes = libc::c_int::try_from(mark.bytes()).unwrap_or(libc::c_int::MAX);
    // No crate the project uses exposes SO_RCVLOWAT (socket2 0.6 and rustix 1.1 do not).
    // SAFETY: `fd` is an open socket for the call (see above); the option value is a `c_int` that
    // lives across the call, and its size is what is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Elsewhere the mark's effect on readiness differs by system: reads are never held.
#[cfg(all(unix, not(target_os = "linux")))]
pub(super) fn set_low_water(_fd: std::os::fd::RawFd, _mark: Mark) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests;
