//! `cairnctl`: cairn's command-line client, a drop-in for `ETCDCTL_API=3 etcdctl` 3.4.
//! Everything lives in [`cairn::ctl`]; this only hands it the arguments and exits with its status.

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let code = cairn::ctl::run(args).await;
    std::process::exit(code);
}
