//! A watchdog for the bench's steps that wait on the kernel without a bound
//! of their own (a bind or unbind of the kernel's nvme driver, a read it is
//! slow to answer). Nothing here stops a step: a step that runs too long is
//! named on stderr with the tail of the kernel's log, the bench's threads'
//! kernel stacks and the nvme interrupt counts, again after each further
//! period (a few times), so a run that the board's timeout kills says where
//! it stood and what the kernel said. The boards boot `quiet`: the nvme
//! driver's warnings reach the console only this way.

use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reports per step, at most.
const REPORTS: u32 = 4;

/// The step being watched (none once the watch ended), and how many times
/// it was reported.
struct Watched {
    step: Option<(String, Instant)>,
    reports: u32,
}

/// Watches one section's steps from a thread of its own, until dropped.
pub struct Watchdog {
    state: Arc<(Mutex<Watched>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching; a step is reported each `period` it runs, up to
    /// [`REPORTS`] times.
    pub fn start(section: &'static str, period: Duration) -> Self {
        let watched = Watched { step: Some(("starting".into(), Instant::now())), reports: 0 };
        let state = Arc::new((Mutex::new(watched), Condvar::new()));
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || watch(section, period, &shared));
        Self { state, thread: Some(thread) }
    }

    /// The section starts `what` now.
    pub fn step(&self, what: impl Into<String>) {
        let mut w = self.state.0.lock().unwrap();
        *w = Watched { step: Some((what.into(), Instant::now())), reports: 0 };
        self.state.1.notify_all();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.0.lock().unwrap().step = None;
        self.state.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(section: &str, period: Duration, state: &(Mutex<Watched>, Condvar)) {
    let mut w = state.0.lock().unwrap();
    loop {
        let Some((step, since)) = &w.step else { return };
        let ran = since.elapsed();
        let due = period * (w.reports + 1);
        if w.reports >= REPORTS {
            w = state.1.wait(w).unwrap(); // until the next step, or the end
        } else if ran >= due {
            eprintln!("bench: {section}: \"{step}\" has run {} s without finishing", ran.as_secs());
            eprintln!("{}", diagnosis());
            w.reports += 1;
        } else {
            w = state.1.wait_timeout(w, due - ran).unwrap().0;
        }
    }
}

/// What the kernel says: its log's tail, where each of this process's
/// threads waits, the nvme interrupt counts.
fn diagnosis() -> String {
    let mut out = format!("the kernel's log (last 30 lines):\n{}\n", kernel_log_tail(30));
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_else(|e| format!("({e})\n"));
        out += &format!("thread {:?} waits in {}:\n{}", task.file_name(), read("wchan"), read("stack"));
    }
    let irqs = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    for l in irqs.lines().filter(|l| l.contains("nvme")) {
        out += &format!("interrupts: {}\n", l.trim());
    }
    out
}

/// The last `lines` lines of the kernel's log (busybox `dmesg` on the board).
pub fn kernel_log_tail(lines: usize) -> String {
    match Command::new("dmesg").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(dmesg did not run: {e})"),
    }
}
