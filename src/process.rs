//! What the kernel says of the process behind a request, from /proc: its
//! thread group, its command name, and whether it is dying of a signal.

/// The thread-group id of a request's pid (FUSE passes the thread's id).
pub fn tgid(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(pid)
}

pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The kernel's PF_SIGNALED: the task is exiting because of a fatal signal.
const PF_SIGNALED: u64 = 0x400;

/// Whether the task `pid` is dying of a signal (SIGKILL, SIGSEGV, an OOM
/// kill): the close its exit makes is not one the program asked for.
/// Read while the task makes its FLUSH, so /proc still has it.
pub fn killed_by_signal(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_flags(&stat))
        .is_some_and(|flags| flags & PF_SIGNALED != 0)
}

/// Field 9 (flags) of /proc/PID/stat. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the last ')'.
fn stat_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(6)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_after_the_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4195328 100 0 0";
        let flags = stat_flags(stat).unwrap();
        assert_eq!(flags, 4195328);
        assert_ne!(flags & PF_SIGNALED, 0);
    }

    #[test]
    fn a_live_process_is_not_dying_of_a_signal() {
        assert!(!killed_by_signal(std::process::id()));
        assert_eq!(tgid(std::process::id()), std::process::id());
    }
}
