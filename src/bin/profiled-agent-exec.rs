//! `profiled-agent-exec`: the small root helper the daemon execs for every
//! external agent run; it drops to the account in its own address space.
//! Installed beside `profiled` and started only by it (see
//! src/agents/helper.rs).

fn main() -> std::process::ExitCode {
    profiled::agents::helper::main()
}
