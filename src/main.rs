//! The `fastk` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    fastk::cli::main()
}
