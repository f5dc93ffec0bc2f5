//! The live view (`output.console: true`, on in the demo). On a terminal it takes the screen
//! (ratatui on crossterm, alternate screen, raw mode): one compact panel per device, the recent
//! events, a key help line; `q` or Ctrl-C stops the bridge through the same path as SIGINT. When
//! stdout is not a terminal it prints plain lines instead: each event as it comes, a line per
//! device when its availability changes and for every device every [`PLAIN_SUMMARY_EVERY`].
//!
//! The pieces: [`view`] decides what to show from the router snapshot and the event messages,
//! [`draw`] lays it out; this module owns the terminal, the keys and the loop. While the console
//! owns the terminal, log lines written through [`LogWriter`] are shown in its events panel
//! instead of scribbling over the screen, and printed to stderr once the terminal is restored.

pub(crate) mod draw;
pub(crate) mod view;

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mqtt::{Message, MqttHandle};
use crate::router::Router;
use draw::{Key, UiState};
use view::{Header, Model};

/// Redraw period on a terminal (and power sample period for the sparklines).
pub(crate) const REDRAW_EVERY: Duration = Duration::from_millis(500);

/// Without a terminal: one summary line per device this often.
pub(crate) const PLAIN_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Log lines kept while the console owns the terminal (shown, then printed on exit).
const LOG_LINES_KEPT: usize = 200;

/// What the console needs from the running bridge.
pub(crate) struct ConsoleContext {
    /// Device state: the console reads snapshots of it.
    pub router: Arc<Router>,
    /// For the connection state and the event subscription.
    pub mqtt: MqttHandle,
    /// Broker URL, for the status line.
    pub broker: String,
    /// The HTTP endpoint, for the help line.
    pub http: Option<SocketAddr>,
    /// Cancelled when the user presses `q`: the bridge then stops as on SIGINT.
    pub stop_requested: CancellationToken,
}

/// Runs until `cancel` (the bridge's shutdown), restoring the terminal on the way out.
pub(crate) async fn run(ctx: ConsoleContext, cancel: CancellationToken) {
    let mut bases: Vec<String> = ctx.router.snapshot().into_iter().map(|s| format!("{}/event", s.base)).collect();
    bases.sort();
    bases.dedup();
    let filters: Vec<&str> = bases.iter().map(String::as_str).collect();
    let events = ctx.mqtt.subscribe_many(&filters, 256).await;
    if std::io::stdout().is_terminal() {
        match enter_terminal() {
            Ok(term) => return run_terminal(ctx, term, events, cancel).await,
            Err(e) => tracing::warn!(error = %e, "the console cannot take over the terminal; printing plain lines"),
        }
    }
    run_plain(ctx, events, cancel).await
}

/// One input from the key reader thread.
enum Input {
    /// A key the console acts on.
    Key(Key),
    /// The terminal was resized: redraw now.
    Resize,
}

/// The screen loop: redraw every [`REDRAW_EVERY`] and on every key.
async fn run_terminal(
    ctx: ConsoleContext,
    mut term: Terminal<CrosstermBackend<std::io::Stdout>>,
    events: mpsc::Receiver<Message>,
    cancel: CancellationToken,
) {
    let keys_stop = Arc::new(AtomicBool::new(false));
    // Restores the terminal and stops the key reader however this function ends.
    let _restore = RestoreOnDrop(keys_stop.clone());
    let mut keys = Some(spawn_key_reader(keys_stop));
    let mut events = Some(events);
    let mut model = Model::default();
    let mut ui = UiState::default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(REDRAW_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let snapshot = ctx.router.snapshot();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => model.sample(&snapshot),
            msg = recv(&mut events) => {
                match msg {
                    Some(m) => model.push_event(view::event_line(time::OffsetDateTime::now_utc(), &m.topic, &m.payload)),
                    None => events = None,
                }
                continue; // shown on the next tick
            }
            input = recv(&mut keys) => match input {
                Some(Input::Key(key)) => {
                    let view = model.view(&snapshot, header(&ctx, started), SystemTime::now());
                    if ui.on_key(key, &view) {
                        ctx.stop_requested.cancel();
                    }
                }
                Some(Input::Resize) => {}
                None => keys = None,
            },
        }
        for line in take_captured_logs() {
            model.push_event(line);
        }
        if !TERMINAL_ACTIVE.load(Ordering::SeqCst) {
            break; // a panic elsewhere restored the terminal: stop drawing over the shell
        }
        let view = model.view(&snapshot, header(&ctx, started), SystemTime::now());
        if let Err(e) = term.draw(|frame| draw::draw(frame, &view, &mut ui)) {
            drop(_restore);
            tracing::warn!(error = %e, "the console cannot draw; stopping the live view");
            return;
        }
    }
}

/// The next message of an optional channel; never, once it is gone.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn header(ctx: &ConsoleContext, started: Instant) -> Header {
    Header {
        broker: ctx.broker.clone(),
        connected: ctx.mqtt.state().connected,
        uptime: started.elapsed(),
        http: ctx.http,
    }
}

/// Without a terminal: events as they come; a line per device when its availability changes
/// and for every device every [`PLAIN_SUMMARY_EVERY`].
async fn run_plain(ctx: ConsoleContext, events: mpsc::Receiver<Message>, cancel: CancellationToken) {
    let mut events = Some(events);
    let mut ticker = tokio::time::interval(REDRAW_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_summary: Option<Instant> = None;
    let mut last_online: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let model = Model::default();
    loop {
        let mut lines = Vec::new();
        let now = time::OffsetDateTime::now_utc();
        tokio::select! {
            _ = cancel.cancelled() => break,
            msg = recv(&mut events) => match msg {
                Some(m) => lines.push(view::event_line(now, &m.topic, &m.payload)),
                None => events = None,
            },
            _ = ticker.tick() => {
                let all = last_summary.is_none_or(|t| t.elapsed() >= PLAIN_SUMMARY_EVERY);
                if all {
                    last_summary = Some(Instant::now());
                }
                let view = model.view(&ctx.router.snapshot(), header(&ctx, Instant::now()), SystemTime::now());
                for p in &view.devices {
                    let changed = last_online.insert(p.id.clone(), p.online) != Some(p.online);
                    if all || changed {
                        lines.push(format!(
                            "{:02}:{:02}:{:02}Z  {}",
                            now.hour(),
                            now.minute(),
                            now.second(),
                            view::plain_line(p)
                        ));
                    }
                }
            }
        }
        // A closed pipe (`| head`) ends the output, not the bridge.
        let mut out = std::io::stdout().lock();
        for line in lines {
            if writeln!(out, "{line}").is_err() {
                return;
            }
        }
        let _ = out.flush();
    }
}

fn map_key(k: KeyEvent) -> Option<Key> {
    if k.kind != KeyEventKind::Press {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('q' | 'Q') => Key::Quit,
        KeyCode::Up | KeyCode::Char('k') => Key::Up,
        KeyCode::Down | KeyCode::Char('j') => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Enter | KeyCode::Char(' ') => Key::Toggle,
        KeyCode::Esc => Key::FoldAll,
        _ => return None,
    })
}

/// Reads keys on a thread of its own (crossterm's reads block; the runtime may have one thread),
/// polling `stop` between reads.
fn spawn_key_reader(stop: Arc<AtomicBool>) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(32);
    let spawned = std::thread::Builder::new().name("console-keys".into()).spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match event::poll(Duration::from_millis(200)) {
                Ok(false) => {}
                Ok(true) => {
                    let input = match event::read() {
                        Ok(Event::Key(k)) => map_key(k).map(Input::Key),
                        Ok(Event::Resize(..)) => Some(Input::Resize),
                        Ok(_) => None,
                        Err(_) => break,
                    };
                    if let Some(input) = input
                        && tx.blocking_send(input).is_err()
                    {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the console's key reader; stop with SIGINT");
    }
    rx
}

/// True while the console has the terminal in raw mode on the alternate screen.
static TERMINAL_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Log lines captured while the console owns the terminal (`None`: not capturing).
static CAPTURED: Mutex<Option<Captured>> = Mutex::new(None);

/// Captured log lines: the ones not yet shown, and the last ones for stderr on exit.
#[derive(Default)]
struct Captured {
    /// Not yet moved into the events panel.
    unseen: Vec<String>,
    /// The most recent lines, printed to stderr once the terminal is restored.
    replay: VecDeque<String>,
}

fn captured() -> std::sync::MutexGuard<'static, Option<Captured>> {
    CAPTURED.lock().unwrap_or_else(|e| e.into_inner())
}

fn take_captured_logs() -> Vec<String> {
    captured().as_mut().map(|c| std::mem::take(&mut c.unseen)).unwrap_or_default()
}

/// Takes the terminal: raw mode, alternate screen, hidden cursor, log capture on; installs (once)
/// a panic hook that gives the terminal back before the panic message prints.
fn enter_terminal() -> std::io::Result<Terminal<CrosstermBackend<std::io::Stdout>>> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    terminal::enable_raw_mode()?;
    TERMINAL_ACTIVE.store(true, Ordering::SeqCst);
    *captured() = Some(Captured::default());
    if let Err(e) = execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide) {
        restore_terminal();
        return Err(e);
    }
    Terminal::new(CrosstermBackend::new(std::io::stdout())).inspect_err(|_| restore_terminal())
}

/// Gives the terminal back (cooked mode, main screen, cursor) and prints the log lines captured
/// meanwhile to stderr. Idempotent; the binary also calls it on its way out.
pub fn restore_terminal() {
    if !TERMINAL_ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = terminal::disable_raw_mode();
    let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
    let replay = captured().take().map(|c| c.replay).unwrap_or_default();
    let mut err = std::io::stderr().lock();
    for line in replay {
        let _ = writeln!(err, "{line}");
    }
}

/// Restores the terminal and stops the key reader when the screen loop ends (also by unwinding).
struct RestoreOnDrop(Arc<AtomicBool>);

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        restore_terminal();
    }
}

/// The log writer for `tracing_subscriber`: stderr, except while the console owns the terminal,
/// when lines go to the console's events panel (and to stderr after the terminal is restored).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}

/// One formatted log event, routed when dropped (the formatter writes an event, then drops it).
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut guard = captured();
        match guard.as_mut() {
            Some(c) => {
                let text = strip_ansi(&String::from_utf8_lossy(&self.0));
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    c.unseen.push(line.to_owned());
                    if c.unseen.len() > LOG_LINES_KEPT {
                        c.unseen.remove(0);
                    }
                    if c.replay.len() == LOG_LINES_KEPT {
                        c.replay.pop_front();
                    }
                    c.replay.push_back(line.to_owned());
                }
            }
            None => {
                drop(guard);
                let _ = std::io::stderr().lock().write_all(&self.0);
            }
        }
    }
}

/// Removes terminal colour sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
