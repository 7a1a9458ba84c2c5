//! atomfs — the mount daemon; being written (issue 3).
fn main() {
    eprintln!("atomfs: not implemented yet");
    std::process::exit(1);
}
