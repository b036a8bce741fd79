//! The `volli` binary: a node (`volli serve`) and a client of a running node.

fn main() -> std::process::ExitCode {
    volli_node::cli::main()
}
