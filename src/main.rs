use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = brizo::cli::Cli::parse();
    match brizo::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
