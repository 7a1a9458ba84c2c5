//! fsck.atomfs — being written (issue 3).
fn main() {
    eprintln!("fsck.atomfs: not implemented yet");
    std::process::exit(8);
}
