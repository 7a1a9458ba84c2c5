//! mkfs.atomfs — being written (issue 3).
fn main() {
    eprintln!("mkfs.atomfs: not implemented yet");
    std::process::exit(8);
}
