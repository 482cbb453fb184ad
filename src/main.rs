fn main() {
    std::process::exit(cloudprep::cli::main());
}
