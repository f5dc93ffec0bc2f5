//! The `hlbridge` binary: a thin CLI over the library (run, check-config, health, simulate).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use hlbridge::config::{self, Config, LogFormat};

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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the bridge (the default).
    Run(RunArgs),
    /// Validate a configuration file and print the effective config with secrets redacted.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Probe a running bridge's `/healthz`: exit 0 when it answers 200, 1 otherwise (a container
    /// health check without curl).
    Health(HealthArgs),
    /// Play a device, for tests and demos.
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

#[derive(Subcommand, Debug)]
enum Simulate {
    /// A go-e Charger: MQTT API keys and the HTTP API v2.
    Goe(GoeSimArgs),
    /// A whatwatt Go smart-meter gateway: REST, SSE and templated MQTT.
    Whatwatt(hlbridge::simulate::whatwatt::CliArgs),
    /// An AI-on-the-edge-device camera meter (upstream or topic-cluster MQTT dialect).
    AiOnTheEdge(hlbridge::simulate::ai_on_the_edge::CliArgs),
    /// An OctoPrint printer with the OctoPrint-MQTT plugin.
    Octoprint(hlbridge::simulate::octoprint::CliArgs),
}

#[derive(Args, Debug)]
struct GoeSimArgs {
    /// Broker to publish to (omit for HTTP only).
    #[arg(long)]
    broker: Option<String>,
    /// Charger serial.
    #[arg(long, default_value = "012345")]
    serial: String,
    /// Full topic prefix (`mtp`), with trailing slash.
    #[arg(long, conflicts_with = "legacy_prefix")]
    topic_prefix: Option<String>,
    /// Use the pre-054.6 prefix `/go-eCharger/<serial>/`.
    #[arg(long)]
    legacy_prefix: bool,
    /// Serve the HTTP API v2 on this address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// MQTT read-only (`mcr=true`): ignore `<key>/set`.
    #[arg(long)]
    read_only: bool,
    /// Answer HTTP 400 when the filter names a missing key, like firmware 60.x.
    #[arg(long)]
    http_400: bool,
    /// Tick length (real chargers: 1s).
    #[arg(long, default_value = "1s", value_parser = parse_dur)]
    tick: Duration,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    config::types::parse_duration(s)
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rumqttd (embedded broker) logs every connection at info and our readiness probe as an error.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{level},rumqttd=warn,rumqttd::server::broker=off"))
        });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
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
        Some(Command::CheckConfig { file }) => match load(&file) {
            Ok(c) => {
                use std::io::Write as _;
                // A closed pipe (`check-config f | head`) is not an error worth a panic.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "# {}: OK ({} device(s))", file.display(), c.devices.len());
                let _ = out.write_all(c.to_redacted_yaml().as_bytes());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Simulate(sim)) => {
            init_logging(LogFormat::Pretty, "info");
            match sim {
                Simulate::Goe(args) => runtime.block_on(simulate_goe(args)),
                Simulate::Whatwatt(args) => runtime.block_on(hlbridge::simulate::whatwatt::run_cli(args)),
                Simulate::AiOnTheEdge(args) => runtime.block_on(hlbridge::simulate::ai_on_the_edge::run_cli(args)),
                Simulate::Octoprint(args) => runtime.block_on(hlbridge::simulate::octoprint::run_cli(args)),
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
    match runtime.block_on(hlbridge::discover::browse(timeout)) {
        Ok(found) => {
            print!("{}", hlbridge::discover::report(&found, timeout));
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
    // The live console owns the terminal; keep log lines to warnings there unless asked.
    let level = if config.output.console && std::io::stdout().is_terminal() && std::env::var_os("RUST_LOG").is_none() {
        "warn".to_owned()
    } else {
        config.log.level.clone()
    };
    init_logging(config.log.format, &level);
    tracing::info!(config = %path.display(), devices = config.devices.len(), "hlbridge starting");
    // The runtime is built from the config (`runtime.worker_threads`).
    let runtime = match hlbridge::app::runtime(config.runtime.worker_threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hlbridge::app::run(config, hlbridge::app::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hlbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn simulate_goe(args: GoeSimArgs) -> ExitCode {
    let broker = match &args.broker {
        Some(url) => match hlbridge::mqtt::MqttSettings::from_url(url, &format!("go-echarger_{}", args.serial)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("--broker: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let http = match args.http {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("--http {addr}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if broker.is_none() && http.is_none() {
        eprintln!("give --broker and/or --http");
        return ExitCode::from(2);
    }
    let topic_prefix =
        if args.legacy_prefix { Some(format!("/go-eCharger/{}/", args.serial)) } else { args.topic_prefix };
    let opts = hlbridge::simulate::goe::GoeSimOptions {
        broker,
        serial: args.serial,
        topic_prefix,
        read_only: args.read_only,
        http,
        http_400_on_unknown_filter: args.http_400,
        tick: args.tick,
        ..Default::default()
    };
    hlbridge::simulate::run_until_signal(|cancel| hlbridge::simulate::goe::run(opts, cancel)).await
}
