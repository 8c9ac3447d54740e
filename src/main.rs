//! The `sandbox-harness` command line.

fn main() {
    eprintln!("sandbox-harness: the command line is being built; see README.md");
    std::process::exit(2);
}
