//! `rabbitmq-diagnostics` for warren: the health checks dev tooling runs, over the management
//! HTTP API.

fn main() {
    std::process::exit(warren_cli::run("rabbitmq-diagnostics", std::env::args().skip(1).collect()));
}
