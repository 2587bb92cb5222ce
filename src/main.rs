//! `quern`: one binary for every role of a Quern cluster and every user command.

fn main() -> std::process::ExitCode {
    quern::main_with(quern::builtin_registry())
}
