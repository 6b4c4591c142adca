//! `rabbitmqctl` for warren: RabbitMQ's commands over the management HTTP API.

fn main() {
    std::process::exit(warren_cli::run("rabbitmqctl", std::env::args().skip(1).collect()));
}
