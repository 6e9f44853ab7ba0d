use clap::Parser;

fn main() -> std::process::ExitCode {
    brizo::memory::share_arenas();
    brizo::tls::install();
    // Reads FAILPOINTS (crash tests only; compiled out of every other build).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = brizo::cli::Cli::parse();
    match brizo::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
