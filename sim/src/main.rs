//! `cairn-sim`: runs cairn clusters inside madsim under a nemesis and checks what clients saw.
fn main() {
    println!("cairn-sim: not yet implemented");
}
