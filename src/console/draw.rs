//! Lays a [`View`] out on a ratatui frame: a status line, one compact panel per device in a
//! scrollable list (state, availability, power with a sparkline, age, then the key values that fit
//! whole), the recent events, and the key help line. Every line is built to the frame's width, so
//! nothing wraps and no value is cut: what does not fit whole is left for the expanded view.

use std::collections::HashSet;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Scrollbar, ScrollbarOrientation, ScrollbarState, Sparkline};

use super::view::{DevicePanel, View, age};

/// Separator between values on a panel's second line.
const SEP: &str = "  ";
/// Indent of a panel's value lines under its name.
const INDENT: u16 = 4;
/// Width of the state column (`waiting_for_car` is the longest word).
const STATE_W: u16 = 15;
/// Width of the power column (`-11.04 kW`).
const POWER_W: u16 = 9;
/// Width of the age column (`59m59s`).
const AGE_W: u16 = 6;

/// What the user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// `q`, Ctrl-C: stop the bridge.
    Quit,
    /// Arrow up: select the previous device.
    Up,
    /// Arrow down: select the next device.
    Down,
    /// Page up: a screenful back.
    PageUp,
    /// Page down: a screenful on.
    PageDown,
    /// Home: the first device.
    Home,
    /// End: the last device.
    End,
    /// Enter or space: expand or fold the selected device.
    Toggle,
    /// Escape: fold every device.
    FoldAll,
}

/// The user's place in the list, kept between frames.
#[derive(Debug, Default)]
pub struct UiState {
    /// Index of the selected device.
    pub selected: usize,
    /// Ids of expanded devices (by id, so a device keeps its state if the list changes).
    pub expanded: HashSet<String>,
    /// First device shown; kept so the list does not jump while scrolling.
    offset: usize,
    /// Devices that fit the list at the last draw, for page up/down.
    page: usize,
}

impl UiState {
    /// Applies a key; returns true when the user asked to quit.
    pub(crate) fn on_key(&mut self, key: Key, view: &View) -> bool {
        let last = view.devices.len().saturating_sub(1);
        let page = self.page.max(1);
        match key {
            Key::Quit => return true,
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => self.selected = (self.selected + 1).min(last),
            Key::PageUp => self.selected = self.selected.saturating_sub(page),
            Key::PageDown => self.selected = (self.selected + page).min(last),
            Key::Home => self.selected = 0,
            Key::End => self.selected = last,
            Key::Toggle => {
                if let Some(p) = view.devices.get(self.selected)
                    && !self.expanded.remove(&p.id)
                {
                    self.expanded.insert(p.id.clone());
                }
            }
            Key::FoldAll => self.expanded.clear(),
        }
        false
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, view: &View, ui: &mut UiState) {
    let area = frame.area();
    ui.selected = ui.selected.min(view.devices.len().saturating_sub(1));
    let [header, body, help] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(1)]).areas(area);
    frame.render_widget(Paragraph::new(header_line(view, area.width)), header);
    frame.render_widget(Paragraph::new(help_line(view, area.width)), help);

    let inner_w = body.width.saturating_sub(2);
    let name_w = name_width(view, inner_w);
    let panels: Vec<Vec<Line<'static>>> = view
        .devices
        .iter()
        .enumerate()
        .map(|(i, p)| panel_lines(p, i == ui.selected, ui.expanded.contains(&p.id), inner_w, name_w))
        .collect();
    let needed: u16 = panels.iter().map(|l| l.len() as u16).sum::<u16>() + 2;
    // The device list gets what it needs; events take the rest, and keep a few rows when the
    // list has to scroll (they say what just happened).
    // An expanded device is shown whole if the screen can hold it, at the events' expense.
    let selected_h = panels.get(ui.selected).map_or(0, |l| l.len() as u16) + 2;
    let events_h = if body.height >= needed + 5 {
        body.height - needed
    } else if body.height >= 14 && body.height >= selected_h + 5 {
        5
    } else if body.height >= selected_h + 3 {
        body.height - selected_h
    } else {
        0
    };
    let [list_area, events_area] = Layout::vertical([Constraint::Fill(1), Constraint::Length(events_h)]).areas(body);
    draw_devices(frame, view, ui, &panels, list_area, name_w);
    if events_h > 0 {
        draw_events(frame, view, events_area);
    }
}

/// The status line: broker and connection, devices online, uptime.
fn header_line(view: &View, width: u16) -> Line<'static> {
    let h = &view.header;
    let online = view.devices.iter().filter(|d| d.online).count();
    let (conn, conn_style) =
        if h.connected { ("connected", Style::new().fg(Color::Green)) } else { ("disconnected", red()) };
    let mut spans = vec![
        Span::styled(" hlbridge ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" "),
        Span::styled(
            format!("{online}/{} online", view.devices.len()),
            if online == view.devices.len() { Style::new().fg(Color::Green) } else { Style::new().fg(Color::Yellow) },
        ),
        Span::raw(format!("  up {}  ", age(h.uptime))),
        Span::styled(conn, conn_style),
    ];
    let broker = format!(" {}", h.broker);
    if Line::from(spans.clone()).width() + broker.len() <= usize::from(width) {
        spans.push(Span::styled(broker, dim()));
    }
    Line::from(spans)
}

/// The key help line, with the metrics address when there is room.
fn help_line(view: &View, width: u16) -> Line<'static> {
    let key = Style::new().add_modifier(Modifier::BOLD).fg(Color::Cyan);
    let mut spans = vec![
        Span::styled(" q", key),
        Span::raw(" quit  "),
        Span::styled("↑↓", key),
        Span::raw(" select  "),
        Span::styled("PgUp/PgDn", key),
        Span::raw(" scroll  "),
        Span::styled("enter", key),
        Span::raw(" expand  "),
        Span::styled("esc", key),
        Span::raw(" fold"),
    ];
    if let Some(addr) = view.header.http {
        let metrics = format!("   http://{addr}/metrics");
        if Line::from(spans.clone()).width() + metrics.len() <= usize::from(width) {
            spans.push(Span::styled(metrics, dim()));
        }
    }
    Line::from(spans)
}

/// Width of the name column: the longest id, within a quarter of the screen.
fn name_width(view: &View, inner_w: u16) -> u16 {
    let longest = view.devices.iter().map(|d| Span::raw(d.id.as_str()).width()).max().unwrap_or(0) as u16;
    longest.clamp(8, (inner_w / 4).max(8))
}

/// Text cut to `width` columns, with `…` when cut (only names and event lines, never values).
fn fit(s: &str, width: u16) -> String {
    let width = usize::from(width);
    if Span::raw(s).width() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A panel's lines: the headline (sparkline cell left blank, drawn as a widget on top), then
/// the values that fit whole, then, expanded, every value in columns.
fn panel_lines(p: &DevicePanel, selected: bool, expanded: bool, width: u16, name_w: u16) -> Vec<Line<'static>> {
    let marker = if selected { "▸ " } else { "  " };
    let name_style =
        if selected { Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED) } else { Style::new().bold() };
    let (avail, avail_style) = if p.online { ("online ", Style::new().fg(Color::Green)) } else { ("offline", red()) };
    let mut head = vec![
        Span::raw(marker),
        Span::styled(format!("{:<w$}", fit(&p.id, name_w), w = usize::from(name_w)), name_style),
        Span::raw(" "),
        Span::styled(avail, avail_style),
    ];
    if width >= 2 + name_w + 8 + 1 + STATE_W {
        let state = p.state.as_deref().unwrap_or("");
        head.push(Span::raw(" "));
        head.push(Span::styled(format!("{:<w$}", fit(state, STATE_W), w = usize::from(STATE_W)), state_style(state)));
    }
    if width >= 2 + name_w + 8 + 1 + STATE_W + 1 + POWER_W + 1 + AGE_W {
        let power = p.power.as_deref().unwrap_or("");
        head.push(Span::raw(" "));
        head.push(Span::styled(format!("{power:>w$}", w = usize::from(POWER_W)), Style::new().fg(Color::Yellow)));
        // The sparkline cell: filled by draw_devices.
        let used = Line::from(head.clone()).width() as u16;
        let spark = width.saturating_sub(used + 2 + AGE_W);
        head.push(Span::raw(" ".repeat(usize::from(spark) + 1)));
        head.push(Span::styled(format!(" {:>w$}", p.age, w = usize::from(AGE_W)), dim()));
    }
    let mut lines = vec![Line::from(head)];

    let avail_w = usize::from(width.saturating_sub(INDENT));
    let mut second: Vec<Span<'static>> = vec![Span::raw(" ".repeat(usize::from(INDENT)))];
    let mut used = 0;
    if let Some(reason) = &p.reason {
        second.push(Span::styled(fit(reason, avail_w as u16), red()));
    } else {
        for (name, value) in &p.values[..p.key_count] {
            let cell = Span::raw(format!("{name} {value}")).width() + if used > 0 { SEP.len() } else { 0 };
            if used + cell > avail_w {
                continue; // a shorter one further on may still fit whole
            }
            if used > 0 {
                second.push(Span::raw(SEP));
            }
            second.push(Span::styled(format!("{name} "), dim()));
            second.push(Span::raw(value.clone()));
            used += cell;
        }
    }
    if !expanded || p.reason.is_some() {
        lines.push(Line::from(second));
    }
    if expanded {
        lines.extend(value_grid(p, width));
    }
    lines
}

/// Every value of an expanded device in as many columns as fit (column-major, so names read down
/// like a table); empty texts were never listed.
fn value_grid(p: &DevicePanel, width: u16) -> Vec<Line<'static>> {
    let avail = usize::from(width.saturating_sub(INDENT));
    let cells: Vec<(usize, usize)> = p.values.iter().map(|(n, v)| (n.len(), Span::raw(v.as_str()).width())).collect();
    // Per column: the widest name and the widest value; columns are 3 apart.
    let layout = |cols: usize| -> Option<(usize, Vec<(usize, usize)>)> {
        let rows = cells.len().div_ceil(cols);
        let widths: Vec<(usize, usize)> = cells
            .chunks(rows.max(1))
            .map(|col| (col.iter().map(|c| c.0).max().unwrap_or(0), col.iter().map(|c| c.1).max().unwrap_or(0)))
            .collect();
        let total = widths.iter().map(|(n, v)| n + 1 + v).sum::<usize>() + 3 * widths.len().saturating_sub(1);
        (total <= avail).then_some((rows, widths))
    };
    let (rows, widths) = (1..=cells.len().max(1))
        .rev()
        .find_map(layout)
        .unwrap_or_else(|| (cells.len(), vec![(cells.iter().map(|c| c.0).max().unwrap_or(0), avail)]));
    (0..rows)
        .map(|r| {
            let mut spans = vec![Span::raw(" ".repeat(usize::from(INDENT)))];
            for (c, (name_w, value_w)) in widths.iter().enumerate() {
                let Some((name, value)) = p.values.get(c * rows + r) else { break };
                spans.push(Span::styled(format!("{name:<name_w$} "), dim()));
                // One column that still does not fit: the value is cut (only then).
                let value =
                    if widths.len() == 1 { fit(value, avail.saturating_sub(name_w + 1) as u16) } else { value.clone() };
                let pad = if c + 1 < widths.len() { value_w + 3 } else { 0 };
                spans.push(Span::raw(format!("{value:<pad$}")));
            }
            Line::from(spans)
        })
        .collect()
}

/// The device list with its sparklines and, when it does not all fit, a scrollbar.
fn draw_devices(
    frame: &mut Frame,
    view: &View,
    ui: &mut UiState,
    panels: &[Vec<Line<'static>>],
    area: Rect,
    name_w: u16,
) {
    let online = view.devices.iter().filter(|d| d.online).count();
    let block =
        Block::bordered().title(format!(" devices {online}/{} online ", view.devices.len())).border_style(dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if panels.is_empty() {
        frame.render_widget(Paragraph::new(Span::styled(" no devices configured", dim())), inner);
        return;
    }
    let heights: Vec<u16> = panels.iter().map(|l| l.len() as u16).collect();
    // Keep the selection in view, moving the window as little as possible.
    ui.offset = ui.offset.min(ui.selected);
    while ui.offset < ui.selected && heights[ui.offset..=ui.selected].iter().sum::<u16>() > inner.height {
        ui.offset += 1;
    }
    let mut y = inner.y;
    let mut shown = 0;
    for (i, lines) in panels.iter().enumerate().skip(ui.offset) {
        let h = heights[i];
        let room = inner.y + inner.height - y;
        // Whole panels only, except the selected one when it alone is taller than the list.
        if h > room && !(i == ui.selected && shown == 0) {
            break;
        }
        let panel_area = Rect { x: inner.x, y, width: inner.width, height: h.min(room) };
        frame.render_widget(Paragraph::new(lines.clone()), panel_area);
        draw_sparkline(frame, &view.devices[i], panel_area, name_w);
        y += h.min(room);
        shown += 1;
    }
    ui.page = shown;
    if shown < panels.len() {
        let mut state = ScrollbarState::new(panels.len()).position(ui.selected).viewport_content_length(shown);
        frame.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight).begin_symbol(None).end_symbol(None),
            area.inner(ratatui::layout::Margin { vertical: 1, horizontal: 0 }),
            &mut state,
        );
    }
}

/// The power sparkline in the blank cell of a panel's headline (only on screens wide enough).
fn draw_sparkline(frame: &mut Frame, p: &DevicePanel, panel: Rect, name_w: u16) {
    let start = 2 + name_w + 8 + 1 + STATE_W + 1 + POWER_W + 1;
    let end = panel.width.saturating_sub(AGE_W + 2);
    if end <= start + 1 || p.power_history.is_empty() {
        return;
    }
    let width = end - start;
    let data = &p.power_history[p.power_history.len().saturating_sub(usize::from(width))..];
    let max = data.iter().copied().max().unwrap_or(0).max(1);
    frame.render_widget(
        Sparkline::default().data(data).max(max).style(Style::new().fg(Color::Yellow)),
        Rect { x: panel.x + start, y: panel.y, width, height: 1 },
    );
}

/// Recent events, newest first, each cut to one line.
fn draw_events(frame: &mut Frame, view: &View, area: Rect) {
    let block = Block::bordered().title(" events ").border_style(dim());
    let inner = block.inner(area);
    let lines: Vec<Line> = if view.events.is_empty() {
        vec![Line::styled("(none yet)", dim())]
    } else {
        view.events.iter().take(usize::from(inner.height)).map(|e| Line::raw(fit(e, inner.width))).collect()
    };
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(lines), inner);
}

fn state_style(state: &str) -> Style {
    match state {
        "charging" | "printing" => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        "error" | "offline" => red(),
        _ => Style::new().fg(Color::Cyan),
    }
}

fn red() -> Style {
    Style::new().fg(Color::Red)
}

fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}
