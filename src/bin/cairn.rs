//! `cairn`: the server binary. Parses etcd's flags, sets up tracing and the production I/O (real
//! files, the runtime clock, TCP), starts the member and serves the client API until SIGINT or
//! SIGTERM.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("gateway") {
        return gateway(&args[2..]);
    }
    let cfg = match cairn::config::Config::from_args(&args) {
        Ok(cfg) => cfg,
        Err(cairn::config::ConfigError::Exit { code, message }) => {
            print!("{message}");
            return ExitCode::from(code);
        }
        // A malformed flag is said in Go's flag package's words, unprefixed, as etcd says it.
        Err(e @ cairn::config::ConfigError::Usage(_)) => {
            eprintln!("{e}");
            return ExitCode::from(e.exit_code());
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if let Err(e) = cairn::config::init_tracing(&cfg) {
        eprintln!("cairn: {e}");
        return ExitCode::from(1);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(cairn::run::run(cfg, cairn::run::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(1)
        }
    }
}

/// `cairn gateway start ...`: etcd's TCP gateway (see `cairn::tcp_proxy`).
fn gateway(args: &[String]) -> ExitCode {
    let opts = match cairn::tcp_proxy::parse(args) {
        Ok(o) => o,
        Err((text, code)) => {
            if code == 0 {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            return ExitCode::from(code);
        }
    };
    let cfg = cairn::config::Config::from_args_and_env(&["cairn".to_string()], &[]);
    if let Ok(cfg) = cfg {
        if let Err(e) = cairn::config::init_tracing(&cfg) {
            eprintln!("cairn: {e}");
            return ExitCode::from(1);
        }
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(cairn::tcp_proxy::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn gateway: {e}");
            ExitCode::from(1)
        }
    }
}

/// The multi-threaded runtime both the server and the gateway run on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cairn: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}
