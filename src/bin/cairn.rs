//! `cairn`: the server binary. Parses etcd's flags, sets up tracing and the production I/O (real
//! files, the runtime clock, TCP), starts the member and serves the client API until SIGINT or
//! SIGTERM.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cairn::run::run(cfg, cairn::run::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(1)
        }
    }
}
