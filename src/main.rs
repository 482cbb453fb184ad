fn main() {
    // A panic (a bug) still exits with one of the documented codes: 3, could not run.
    std::process::exit(std::panic::catch_unwind(cloudprep::cli::main).unwrap_or(3));
}
