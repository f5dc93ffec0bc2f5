//! The `hlbridge` binary: a thin CLI over the library (run, check-config, health, simulate).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use hlbridge::surface::config::{self, Config, LogFormat};

/// One bridge between home-lab devices and MQTT.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Configuration file (YAML).
    #[arg(long, short, env = "HLBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Reload the config when the file changes (it is always reloaded on SIGHUP).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    log: LogArgs,
}

/// Logging flags; they override `log:` in the config, and `RUST_LOG`, when set, overrides them.
#[derive(Args, Debug, Clone)]
struct LogArgs {
    /// More log detail: -v debug, -vv trace (from `log.level`, default info).
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "log_level")]
    verbose: u8,
    /// Less log output: -q warnings and errors only, -qq errors only, -qqq nothing.
    #[arg(short, long, action = ArgAction::Count, conflicts_with_all = ["verbose", "log_level"])]
    quiet: u8,
    /// Log filter: a level (error, warn, info, debug, trace, off) or RUST_LOG syntax
    /// (`info,hlbridge::surface::adapters=debug`).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line) for containers and journald.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
}

/// `--log-format` values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormatArg {
    /// Human-readable lines (the config calls it `pretty`).
    #[value(alias = "pretty")]
    Text,
    /// One JSON object per line.
    Json,
}

/// The levels `-v` and `-q` step through.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The filter after `-v`/`-q`: the first directive of `base`, when it is a plain level, moves
/// `verbose - quiet` steps; directives for single targets stay as they are.
fn shifted_level(base: &str, verbose: u8, quiet: u8) -> String {
    let (first, rest) = match base.split_once(',') {
        Some((f, r)) => (f.trim(), Some(r)),
        None => (base.trim(), None),
    };
    let Some(at) = LEVELS.iter().position(|l| l.eq_ignore_ascii_case(first)) else {
        return base.to_owned();
    };
    let at = (at as i32 + i32::from(verbose) - i32::from(quiet)).clamp(0, LEVELS.len() as i32 - 1);
    match rest {
        Some(r) => format!("{},{r}", LEVELS[at as usize]),
        None => LEVELS[at as usize].to_owned(),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the bridge (the default).
    Run(RunArgs),
    /// Validate a configuration file and print the effective config with secrets redacted.
    CheckConfig {
        /// The file to check (with --diff: the running config, OLD).
        file: PathBuf,
        /// Print what reloading FILE with NEW would do (each device added, removed, changed or
        /// unchanged; mqtt reconnect; http move), touching nothing.
        #[arg(long, value_name = "NEW")]
        diff: Option<PathBuf>,
    },
    /// Probe a running bridge's `/healthz`: exit 0 when it answers 200, 1 otherwise (a container
    /// health check without curl).
    Health(HealthArgs),
    /// Play a device, for tests and demos (cargo feature `simulators`).
    #[cfg(feature = "simulators")]
    #[command(subcommand)]
    Simulate(Simulate),
    /// List whatwatt Go gateways on the LAN (mDNS) with a config snippet each (cargo feature `mdns`).
    Discover {
        /// How long to listen for announcements.
        #[arg(long, default_value = "5s", value_parser = parse_dur)]
        timeout: Duration,
    },
}

#[derive(Args, Debug)]
struct HealthArgs {
    /// Base URL of the bridge's HTTP endpoint, e.g. http://127.0.0.1:9464 (default: from the config's
    /// `http.listen`).
    #[arg(long, conflicts_with = "config")]
    url: Option<String>,
    /// Configuration file whose `http.listen` to probe.
    #[arg(long, short, env = "HLBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_dur)]
    timeout: Duration,
}

#[cfg(feature = "simulators")]
#[derive(Subcommand, Debug)]
enum Simulate {
    /// A go-e Charger: MQTT API keys and the HTTP API v2.
    Goe(hlbridge::surface::simulate::goe::CliArgs),
    /// A whatwatt Go smart-meter gateway: REST, SSE and templated MQTT.
    Whatwatt(hlbridge::surface::simulate::whatwatt::CliArgs),
    /// An AI-on-the-edge-device camera meter (upstream or topic-cluster MQTT dialect).
    AiOnTheEdge(hlbridge::surface::simulate::ai_on_the_edge::CliArgs),
    /// An OctoPrint printer with the OctoPrint-MQTT plugin.
    Octoprint(hlbridge::surface::simulate::octoprint::CliArgs),
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    s.parse::<config::Dur>().map(|d| d.0)
}

/// The embedded broker's (rumqttd) noise, appended to every filter but `RUST_LOG`: it logs every
/// connection at info, our readiness probe as an error, and at each client's normal disconnect
/// `no-connection id N is already gone` as an error (its router cleaning up a connection twice).
const QUIET_BROKER: &str = "rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off";

fn init_logging(format: LogFormat, level: &str) {
    // An unusable RUST_LOG is said, not silently replaced: the user set it for a reason.
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => tracing_subscriber::EnvFilter::try_new(&env).unwrap_or_else(|e| {
            eprintln!("RUST_LOG={env:?} is not a log filter ({e}); using {level:?}");
            tracing_subscriber::EnvFilter::new(format!("{level},{QUIET_BROKER}"))
        }),
        _ => tracing_subscriber::EnvFilter::try_new(format!("{level},{QUIET_BROKER}")).unwrap_or_else(|e| {
            eprintln!("log level {level:?} is not a log filter ({e}); using info");
            tracing_subscriber::EnvFilter::new(format!("info,{QUIET_BROKER}"))
        }),
    };
    // Through the console's writer: while the live view owns the terminal, log lines go to its
    // events panel instead of over the screen.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(hlbridge::surface::console::LogWriter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    if let Err(e) = hlbridge::surface::adapters::check_tables() {
        eprintln!("this build's vendor tables are broken: {e}");
        return Err(ExitCode::from(2));
    }
    config::load_file(path).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    // One crypto provider everywhere (ring); installing it also guards against a dependency that
    // switches another provider on later.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::CheckConfig { file, diff: Some(new) }) => match (load(&file), load(&new)) {
            (Ok(old), Ok(new_config)) => {
                use std::io::Write as _;
                let plan = hlbridge::surface::reload::plan(&old, &new_config);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "# reloading {} with {}:", file.display(), new.display());
                let _ = write!(out, "{plan}");
                ExitCode::SUCCESS
            }
            (Err(code), _) | (_, Err(code)) => code,
        },
        Some(Command::CheckConfig { file, diff: None }) => match load(&file) {
            Ok(c) => {
                use std::io::Write as _;
                // A closed pipe (`check-config f | head`) is not an error worth a panic.
                let mut out = std::io::stdout().lock();
                if let Some(warning) = c.idle_warning() {
                    eprintln!("warning: {warning}");
                }
                let _ = writeln!(out, "# {}: OK ({} device(s))", file.display(), c.devices.len());
                let _ = out.write_all(c.to_redacted_yaml().as_bytes());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        #[cfg(feature = "simulators")]
        Some(Command::Simulate(sim)) => {
            init_logging(LogFormat::Pretty, "info");
            match sim {
                Simulate::Goe(args) => runtime.block_on(hlbridge::surface::simulate::goe::run_cli(args)),
                Simulate::Whatwatt(args) => runtime.block_on(hlbridge::surface::simulate::whatwatt::run_cli(args)),
                Simulate::AiOnTheEdge(args) => {
                    runtime.block_on(hlbridge::surface::simulate::ai_on_the_edge::run_cli(args))
                }
                Simulate::Octoprint(args) => runtime.block_on(hlbridge::surface::simulate::octoprint::run_cli(args)),
            }
        }
        Some(Command::Discover { timeout }) => discover(&runtime, timeout),
        Some(Command::Health(args)) => runtime.block_on(health(args)),
        Some(Command::Run(args)) => {
            drop(runtime);
            run(args)
        }
        None => {
            drop(runtime);
            run(cli.run)
        }
    }
}

#[cfg(feature = "mdns")]
fn discover(runtime: &tokio::runtime::Runtime, timeout: Duration) -> ExitCode {
    init_logging(LogFormat::Pretty, "warn");
    eprintln!("listening {}s for whatwatt Go gateways (_http._tcp, TXT type=100)...", timeout.as_secs());
    match runtime.block_on(hlbridge::surface::discover::browse(timeout)) {
        Ok(found) => {
            print!("{}", hlbridge::surface::discover::report(&found, timeout));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("discover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "mdns"))]
fn discover(_runtime: &tokio::runtime::Runtime, _timeout: Duration) -> ExitCode {
    eprintln!("this hlbridge was built without mDNS discovery; rebuild with `cargo build --features mdns`");
    ExitCode::from(2)
}

/// The `/healthz` URL to probe: `--url`, else the config's `http.listen` (a wildcard listen address
/// is probed on loopback, where the bridge also answers).
fn health_url(args: &HealthArgs) -> Result<String, String> {
    if let Some(url) = &args.url {
        return Ok(format!("{}/healthz", url.trim_end_matches('/')));
    }
    let config = match &args.config {
        Some(path) => config::load_file(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => Config::default(),
    };
    let Some(mut listen) = config.http.listen else {
        return Err("the config turns the HTTP endpoint off (`http.listen: null`); nothing to probe".into());
    };
    if listen.ip().is_unspecified() {
        listen.set_ip(if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{listen}/healthz"))
}

async fn health(args: HealthArgs) -> ExitCode {
    let url = match health_url(&args) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("hlbridge health: {e}");
            // Only 0 and 1: Docker reserves health-check status 2.
            return ExitCode::FAILURE;
        }
    };
    let client = match reqwest::Client::builder().no_proxy().timeout(args.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hlbridge health: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => {
            println!("{url}: {}", resp.status());
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!("{url}: {}", resp.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let Some(path) = args.config else {
        eprintln!("no configuration given: hlbridge --config FILE (try config/demo.yaml)");
        return ExitCode::from(2);
    };
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log = &args.log;
    let format = match log.log_format {
        Some(LogFormatArg::Text) => LogFormat::Pretty,
        Some(LogFormatArg::Json) => LogFormat::Json,
        None => config.log.format,
    };
    // The live console shows log lines in its events panel: keep them to warnings there unless
    // asked (`-v` then means info).
    let console_owns_terminal = config.output.console && std::io::stdout().is_terminal();
    let level = match &log.log_level {
        Some(level) => level.clone(),
        None if console_owns_terminal => shifted_level("warn", log.verbose, log.quiet),
        None => shifted_level(&config.log.level, log.verbose, log.quiet),
    };
    init_logging(format, &level);
    tracing::info!(config = %path.display(), devices = config.devices.len(), "hlbridge starting");
    // The runtime is built from the config (`runtime.worker_threads`).
    let runtime = match hlbridge::surface::app::runtime(config.runtime.worker_threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reload = Some(hlbridge::surface::app::ReloadSource { path: path.clone(), watch: args.watch });
    let outcome = runtime.block_on(hlbridge::surface::app::run_reloading(
        config,
        reload,
        hlbridge::surface::app::shutdown_signal(),
    ));
    // The console gives the terminal back when it stops; this covers every other way out.
    hlbridge::surface::console::restore_terminal();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // Said once: as a JSON line for log shippers, as plain text for people.
        Err(e) if format == LogFormat::Json => {
            tracing::error!(error = format!("{e:#}"), "hlbridge cannot run");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hlbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shifted_level;

    #[test]
    fn verbose_and_quiet_step_through_the_levels_and_keep_target_directives() {
        assert_eq!(shifted_level("info", 1, 0), "debug");
        assert_eq!(shifted_level("info", 5, 0), "trace");
        assert_eq!(shifted_level("info", 0, 1), "warn");
        assert_eq!(shifted_level("INFO", 0, 9), "off");
        assert_eq!(
            shifted_level("warn,hlbridge::surface::adapters=debug", 1, 0),
            "info,hlbridge::surface::adapters=debug"
        );
        assert_eq!(shifted_level("hlbridge=debug", 1, 0), "hlbridge=debug", "no global level to move");
    }
}
