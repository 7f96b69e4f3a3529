//! The `patina` binary: parse arguments, run the command, print errors with their whole cause
//! chain and exit with 0 (ok), 1 (runtime failure) or 2 (bad usage or invalid config).

fn main() -> std::process::ExitCode {
    patina::cli::main()
}
