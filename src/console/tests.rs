//! The console drawn into ratatui's `TestBackend`: the demo's six devices at 80×24 and 160×50,
//! the keys, and the log capture. (tests/it/console.rs draws the real demo the same way.)

use std::time::{Duration, SystemTime};

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::draw::{self, Key, UiState};
use super::view::tests::{snapshot, text};
use super::view::{Header, Model, View};
use crate::config::types::AdapterKind;
use crate::model::Value;
use crate::router::DeviceSnapshot;

/// The demo's devices as the router shows them mid-run (values as the simulators send them).
fn demo(now: SystemTime) -> Vec<DeviceSnapshot> {
    let n = Value::Number;
    let charger = [
        ("charger_state", text("charging")),
        ("power", n(11040.0)),
        ("session_energy", n(2.1234)),
        ("current_limit", n(16.0)),
        ("car_connected", Value::Bool(true)),
        ("energy_import", n(1234.5678)),
        ("charger_error", text("")),
        ("voltage_l1", n(230.12)),
        ("voltage_l2", n(231.0)),
        ("voltage_l3", n(229.5)),
        ("current_l1", n(16.0)),
        ("phase_mode", text("auto")),
        ("temperature", n(31.5)),
    ];
    vec![
        snapshot("garage_charger", AdapterKind::Goe, true, &charger, now),
        snapshot("garage_charger_http", AdapterKind::Goe, true, &charger, now),
        snapshot(
            "printer",
            AdapterKind::Octoprint,
            true,
            &[
                ("printer_state", text("printing")),
                ("print_progress", n(42.0)),
                ("print_file", text("folder/benchy.gcode")),
                ("print_time_left", n(1250.0)),
                ("temperature_tool0", n(210.1)),
                ("temperature_bed", n(60.0)),
                ("reading_error", text("")),
            ],
            now,
        ),
        snapshot(
            "house_meter",
            AdapterKind::Whatwatt,
            true,
            &[
                ("power_import", n(1830.0)),
                ("power_export", n(0.0)),
                ("energy_import", n(20345.123)),
                ("energy_export", n(12.5)),
                ("tariff", n(1.0)),
            ],
            now,
        ),
        snapshot("house_meter_mqtt", AdapterKind::Whatwatt, false, &[], now),
        snapshot(
            "water_meter",
            AdapterKind::AiOnTheEdge,
            true,
            &[
                ("volume", n(123.4567)),
                ("flow_rate", n(0.012)),
                ("reading_raw", text("00123.4567")),
                ("reading_error", text("")),
            ],
            now,
        ),
    ]
}

fn view_of(snapshots: &[DeviceSnapshot], now: SystemTime) -> View {
    let mut model = Model::default();
    for _ in 0..30 {
        model.sample(snapshots);
    }
    model.push_event("12:00:01Z  garage_charger  charging_started".into());
    let header = Header {
        broker: "mqtt://127.0.0.1:1884".into(),
        connected: true,
        uptime: Duration::from_secs(62),
        http: Some("127.0.0.1:9464".parse().expect("addr")),
    };
    model.view(snapshots, header, now)
}

/// Draws `view` at `w`×`h` and returns the screen's rows as text.
fn render(view: &View, ui: &mut UiState, w: u16, h: u16) -> Vec<String> {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    term.draw(|f| draw::draw(f, view, ui)).expect("draw");
    let buf = term.backend().buffer().clone();
    (0..h).map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>()).collect()
}

fn row_of<'a>(rows: &'a [String], id: &str) -> (usize, &'a String) {
    let needle = format!(" {id} ");
    rows.iter()
        .enumerate()
        .find(|(_, r)| r.contains(&needle))
        .unwrap_or_else(|| panic!("{id} on screen:\n{}", rows.join("\n")))
}

#[test]
fn at_160x50_every_device_shows_its_name_availability_state_power_and_sparkline() {
    let now = SystemTime::now();
    let view = view_of(&demo(now), now);
    let rows = render(&view, &mut UiState::default(), 160, 50);
    let screen = rows.join("\n");
    for d in &view.devices {
        let (_, row) = row_of(&rows, &d.id);
        let avail = if d.online { " online " } else { " offline" };
        assert!(row.contains(avail), "{} shows its availability:\n{screen}", d.id);
    }
    let (i, charger) = row_of(&rows, "garage_charger");
    assert!(charger.contains("charging") && charger.contains("11.04 kW") && charger.contains("3s"), "{charger}");
    assert!(charger.chars().any(|c| ('▁'..='█').contains(&c)), "a power sparkline: {charger}");
    assert!(rows[i + 1].contains("session_energy 2.1234 kWh") && rows[i + 1].contains("current_limit 16 A"));
    let (p, _) = row_of(&rows, "printer");
    assert!(rows[p + 1].contains("print_file folder/benchy.gcode"), "text values are whole: {}", rows[p + 1]);
    let (m, _) = row_of(&rows, "house_meter_mqtt");
    assert!(rows[m + 1].contains("no reading yet"), "an offline device says why");
    assert!(screen.contains("charging_started"), "the events panel:\n{screen}");
    assert!(
        rows[0].contains("5/6 online") && rows[0].contains("connected") && rows[0].contains("mqtt://127.0.0.1:1884")
    );
    let help = &rows[49];
    assert!(help.contains("q quit") && help.contains("enter expand") && help.contains("http://127.0.0.1:9464/metrics"));
}

#[test]
fn at_80x24_every_device_fits_and_no_value_is_cut() {
    let now = SystemTime::now();
    let view = view_of(&demo(now), now);
    let rows = render(&view, &mut UiState::default(), 80, 24);
    let screen = rows.join("\n");
    for d in &view.devices {
        let (i, row) = row_of(&rows, &d.id);
        assert!(row.contains(if d.online { " online " } else { " offline" }), "{}:\n{screen}", d.id);
        if !d.online {
            continue;
        }
        // The value line is whole `name value` cells, each one of the device's values.
        let cells: Vec<&str> =
            rows[i + 1].trim_matches('│').trim().split("  ").filter(|c| !c.trim().is_empty()).collect();
        assert!(!cells.is_empty(), "{} shows values:\n{screen}", d.id);
        for cell in cells {
            assert!(
                d.values.iter().any(|(n, v)| cell.trim() == format!("{n} {v}")),
                "`{cell}` is a whole value of {}:\n{screen}",
                d.id
            );
        }
    }
    assert!(!screen.contains('…'), "nothing is cut at 80 columns:\n{screen}");
    assert!(rows[23].contains("q quit") && rows[23].contains("↑↓ select") && rows[23].contains("enter expand"));
    assert!(rows[0].contains("hlbridge") && rows[0].contains("5/6 online"));
}

#[test]
fn enter_expands_the_selected_device_into_all_its_values() {
    let now = SystemTime::now();
    let view = view_of(&demo(now), now);
    let mut ui = UiState::default();
    assert!(!ui.on_key(Key::Down, &view));
    assert!(!ui.on_key(Key::Down, &view));
    assert!(!ui.on_key(Key::Toggle, &view));
    assert!(ui.expanded.contains("printer"));
    for (w, h) in [(80, 24), (160, 50)] {
        let rows = render(&view, &mut ui, w, h);
        let (p, row) = row_of(&rows, "printer");
        assert!(row.contains('▸'), "the selected device is marked");
        let panel = rows[p + 1..p + 4].join("\n");
        for (name, value) in &view.devices[2].values {
            assert!(
                panel.contains(name.as_str()) && panel.contains(value.as_str()),
                "{name} {value} at {w}x{h}:\n{panel}"
            );
        }
    }
    assert!(!ui.on_key(Key::Toggle, &view));
    assert!(ui.expanded.is_empty(), "enter again folds it");
    assert!(ui.on_key(Key::Quit, &view), "q quits");
}

#[test]
fn empty_text_quantities_take_no_row_when_expanded() {
    let now = SystemTime::now();
    let with_empty = demo(now);
    let mut without = with_empty.clone();
    for s in &mut without {
        s.values.retain(|(_, v)| !matches!(v, Value::Text(t) if t.is_empty()));
    }
    let mut heights = Vec::new();
    for snaps in [&with_empty, &without] {
        let view = view_of(snaps, now);
        let mut ui = UiState::default();
        ui.expanded.extend(view.devices.iter().map(|d| d.id.clone()));
        let rows = render(&view, &mut ui, 160, 50);
        let screen = rows.join("\n");
        assert!(!screen.contains("charger_error") && !screen.contains("reading_error"), "{screen}");
        let (first, _) = row_of(&rows, "garage_charger");
        let (last, _) = row_of(&rows, "water_meter");
        heights.push(last - first);
    }
    assert_eq!(heights[0], heights[1], "empty texts add no rows");
}

#[test]
fn the_list_scrolls_to_keep_the_selection_on_screen() {
    let now = SystemTime::now();
    let snaps: Vec<DeviceSnapshot> = (0..20)
        .map(|i| snapshot(&format!("charger_{i:02}"), AdapterKind::Goe, true, &[("power", Value::Number(100.0))], now))
        .collect();
    let view = view_of(&snaps, now);
    let mut ui = UiState::default();
    let rows = render(&view, &mut ui, 80, 24);
    assert!(rows.iter().any(|r| r.contains("charger_00")) && !rows.iter().any(|r| r.contains("charger_19")));
    for _ in 0..19 {
        ui.on_key(Key::Down, &view);
    }
    let rows = render(&view, &mut ui, 80, 24);
    let (_, last) = row_of(&rows, "charger_19");
    assert!(last.contains('▸'), "the selected last device is shown:\n{}", rows.join("\n"));
    assert!(!rows.iter().any(|r| r.contains("charger_00")));
    ui.on_key(Key::Home, &view);
    let rows = render(&view, &mut ui, 80, 24);
    assert!(row_of(&rows, "charger_00").1.contains('▸'));
}

#[test]
fn a_tiny_terminal_draws_without_panicking() {
    let now = SystemTime::now();
    let view = view_of(&demo(now), now);
    for (w, h) in [(1, 1), (10, 3), (30, 8), (80, 5)] {
        let rows = render(&view, &mut UiState::default(), w, h);
        assert_eq!(rows.len(), usize::from(h));
    }
}

#[test]
fn log_lines_lose_their_colour_codes_when_captured() {
    assert_eq!(super::strip_ansi("\x1b[33m WARN\x1b[0m \x1b[2mhlbridge\x1b[0m: x"), " WARN hlbridge: x");
}

#[test]
fn q_and_ctrl_c_quit_and_arrows_enter_and_escape_navigate() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
    let press = |code, modifiers| super::map_key(KeyEvent::new(code, modifiers));
    assert_eq!(press(KeyCode::Char('q'), KeyModifiers::NONE), Some(Key::Quit));
    assert_eq!(press(KeyCode::Char('c'), KeyModifiers::CONTROL), Some(Key::Quit), "raw mode turns Ctrl-C into a key");
    assert_eq!(press(KeyCode::Char('c'), KeyModifiers::NONE), None);
    assert_eq!(press(KeyCode::Down, KeyModifiers::NONE), Some(Key::Down));
    assert_eq!(press(KeyCode::Enter, KeyModifiers::NONE), Some(Key::Toggle));
    assert_eq!(press(KeyCode::Esc, KeyModifiers::NONE), Some(Key::FoldAll));
    let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
    release.kind = KeyEventKind::Release;
    assert_eq!(super::map_key(release), None, "a key counts once, when pressed");
}

#[test]
fn an_expanded_device_with_many_values_is_shown_whole_at_80x24() {
    let now = SystemTime::now();
    let names = [
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "voltage_n",
        "current_l1",
        "current_l2",
        "current_l3",
        "power_l1",
        "power_l2",
        "power_l3",
        "power_n",
        "power_factor_l1",
        "power_factor_l2",
        "power_factor_l3",
        "power_factor_n",
        "frequency",
        "temperature",
        "temperature_pcb",
        "rssi",
        "uptime",
        "current_allowed",
        "energy_import",
        "session_energy",
        "current_limit",
        "charger_error",
        "temperature_a",
        "temperature_b",
        "temperature_c",
        "temperature_d",
        "temperature_e",
        "temperature_f",
        "temperature_g",
    ];
    // Wide values: two columns, so the panel is taller than the list's share of the screen.
    let values: Vec<(&str, Value)> = names.iter().map(|n| (*n, Value::Number(12345.678))).collect();
    let mut snaps = demo(now);
    snaps[0] = snapshot("garage_charger", AdapterKind::Goe, true, &values, now);
    let view = view_of(&snaps, now);
    let mut ui = UiState::default();
    ui.on_key(Key::Toggle, &view);
    let rows = render(&view, &mut ui, 80, 24);
    let screen = rows.join("\n");
    for name in names {
        assert!(screen.contains(&format!("{name} ")), "{name} on screen:\n{screen}");
    }
}
