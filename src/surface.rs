//! The crate's one public surface: what the `hlbridge` and `hlbridge-bench` binaries and the
//! integration tests (`tests/it`) may reach. Everything else is `pub(crate)` (the crate denies
//! `unreachable_pub`), so an item added here is a deliberate promise and dead code cannot hide
//! behind `pub`. The layout mirrors the internal modules, so `surface::router::Router` is
//! `crate::router::Router`.

pub mod adapters {
    pub use crate::adapters::table::TableError;
    pub use crate::adapters::{accepts_commands, cadence, check_tables, declares, spawn};
    pub mod ai_on_the_edge {
        pub use crate::adapters::ai_on_the_edge::{AiOnTheEdgeConfig, Ingest};
    }
    pub mod goe {
        pub use crate::adapters::goe::{GoeConfig, Ingest, nrg_names};
    }
    pub mod octoprint {
        pub use crate::adapters::octoprint::{Ingest, OctoprintConfig};
    }
    pub mod whatwatt {
        pub use crate::adapters::whatwatt::{
            Ingest, ReportError, ReportOutcome, WhatwattConfig, WhatwattError, WhatwattFallback, WhatwattTransport,
        };
        pub mod mapping {
            pub use crate::adapters::whatwatt::mapping::{BRIDGE_TEMPLATE, SystemInfo};
        }
    }
}
pub mod app {
    pub use crate::app::{ReloadError, ReloadSource, Running, mqtt_settings, run, run_reloading, runtime, start};
    /// Kept under `app`, where the binaries look for it; it lives in the leaf `crate::shutdown`.
    pub use crate::shutdown::signal as shutdown_signal;
}
#[cfg(feature = "embedded-broker")]
pub mod broker {
    pub use crate::broker::start;
}
pub mod cluster {
    pub use crate::cluster::owner;
}
pub mod config {
    pub use crate::config::{
        AdapterConfig, AdapterKind, Config, ConfigError, DeviceCommon, DeviceConfig, Dur, HttpConfig, LogConfig,
        LogFormat, OutputConfig, RuntimeConfig, SimulatorConfig, load_file, load_str,
    };
}
pub mod console {
    pub use crate::console::{LogWriter, restore_terminal};
    pub mod draw {
        pub use crate::console::draw::{UiState, draw};
    }
    pub mod view {
        pub use crate::console::view::{DevicePanel, Header, Model, View};
    }
}
#[cfg(feature = "mdns")]
pub mod discover {
    pub use crate::discover::{browse, report};
}
pub mod guard {
    pub use crate::guard::GuardConfig;
}
pub mod metrics {
    pub use crate::metrics::{Metrics, render};
}
pub mod model {
    pub use crate::model::{
        CHARGER_STATES, FAMILIES, Identity, Quantity, QuantityDef, QuantityFamily, Value, ValueKind,
    };
}
pub mod mqtt {
    pub use crate::mqtt::{
        CaptureRx, Captured, ConnectionState, Message, MqttError, MqttHandle, MqttSettings, Outgoing, QoS, detached,
        spawn,
    };
    pub mod tls {
        pub use crate::mqtt::tls::{TlsError, TlsSettings};
    }
    pub mod topic {
        pub use crate::mqtt::topic::matches;
    }
}
pub mod reload {
    pub use crate::reload::{DeviceChange, Plan, plan};
}
pub mod router {
    pub use crate::router::{DeviceHandle, DeviceSnapshot, DeviceSpec, Router, RouterSettings};
}
#[cfg(feature = "simulators")]
pub mod simulate {
    pub use crate::simulate::run_until_signal;
    pub mod ai_on_the_edge {
        pub use crate::simulate::ai_on_the_edge::{
            AiOnTheEdgeSimConfig, AiOnTheEdgeSimOptions, CameraSpec, CliArgs, RoundKind, SimDialect, SimMeterType, run,
            run_cli,
        };
    }
    pub mod goe {
        pub use crate::simulate::goe::{CliArgs, GoeSimOptions, GoeSimulatorConfig, PhaseTicks, run, run_cli};
    }
    pub mod octoprint {
        pub use crate::simulate::octoprint::{
            CliArgs, OctoprintSimConfig, OctoprintSimOptions, PhaseTicks, RestSim, SimOutcome, run, run_cli,
            run_with_rest,
        };
    }
    pub mod whatwatt {
        pub use crate::simulate::whatwatt::{
            CliArgs, Fault, SimAuth, SimControl, SimLicence, SimMeter, WhatwattSimConfig, WhatwattSimOptions, run,
            run_cli,
        };
    }
}
pub mod untrusted {
    pub use crate::untrusted::{MAX_TEXT_BYTES, TRUNCATED_MARKER};
}
